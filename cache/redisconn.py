"""Redis clients for one Redis or a Redis Cluster (REDIS_CLUSTER), and the few commands
whose keys may live on different nodes.

Every multi-key script and transaction of Flock touches the names of one exact key (one
hash tag: cache.keyspace), so a cluster client runs them unchanged. What reads or writes
keys of different ids is done id by id: reads of many keys through `get_many` (a pipeline
of GETs, which redis-py sends node by node on a cluster; one MGET otherwise), scripts one
call per key (a cluster pipeline takes no scripts).

A cluster client is typed as `redis.Redis`: RedisCluster offers the same command methods
(it is not a subclass), and nothing here relies on more.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.cluster import ClusterNode, RedisCluster, key_slot


def connect(url: str, cluster: bool = False, **kwargs: Any) -> redis.Redis:
    """A client of the Redis (or, with `cluster`, the Redis Cluster one node of) at `url`."""
    if cluster:
        return cast(redis.Redis, _cluster(url, **kwargs))
    return redis.Redis.from_url(url, **kwargs)


def url_nodes(url: str) -> list[tuple[str, int]]:
    """(host, port) of each node a redis:// URL names, comma-separated; IPv6 hosts in
    brackets (`[::1]:7000`); port 6379 when none is given. scripts/services.py loads this
    module by its path to probe the same nodes."""
    nodes = []
    for node in urlsplit(url).netloc.rpartition("@")[2].split(","):
        if node.startswith("["):
            host, _, rest = node[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, colon, port = node.rpartition(":")
            host, port = (host, port) if colon else (node, "")
        nodes.append((host or "127.0.0.1", int(port) if port else 6379))
    return nodes


def _cluster(url: str, **kwargs: Any) -> RedisCluster:
    """A cluster client. The URL may name several nodes, comma-separated
    (`redis://10.0.0.1:7000,10.0.0.2:7000/0`): a process starts as long as one of them
    answers, and learns the others from it."""
    parts = urlsplit(url)
    user, at, hosts = parts.netloc.rpartition("@")
    seeds = [ClusterNode(host, port) for host, port in url_nodes(url)[1:]]
    first_url = urlunsplit(parts._replace(netloc=f"{user}{at}{hosts.split(',')[0]}"))
    return RedisCluster.from_url(first_url, startup_nodes=seeds, **kwargs)


def pooled(
    url: str, cluster: bool, max_connections: int, wait_s: float, **kwargs: Any
) -> redis.Redis:
    """A client whose callers wait up to `wait_s` for a free connection (at most
    `max_connections`, per node on a cluster) instead of failing."""
    if cluster:
        return cast(redis.Redis, _cluster(
            url, connection_pool_class=redis.BlockingConnectionPool,
            max_connections=max_connections, timeout=wait_s, **kwargs,
        ))  # fmt: skip
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=wait_s, **kwargs
    )
    return redis.Redis(connection_pool=pool)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def get_many(client: redis.Redis, names: Sequence[str]) -> list[Any]:
    """GET of each name, in order; names may hash to different slots."""
    if not names:
        return []
    if not is_cluster(client):
        return cast(list[Any], client.mget(names))
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.get(name)
        return pipe.execute()


def by_slot(names: Sequence[str]) -> list[list[str]]:
    """The names grouped by their cluster slot (one group per slot, in first-seen order)."""
    groups: dict[int, list[str]] = {}
    for name in names:
        groups.setdefault(key_slot(name.encode()), []).append(name)
    return list(groups.values())


def pubsub(client: redis.Redis) -> Any:
    """A pub/sub connection. On a cluster, to a random primary: PUBLISH reaches every node,
    so any one hears every channel, and a reconnect after a node is lost tries another."""
    if not is_cluster(client):
        return client.pubsub(ignore_subscribe_messages=False)
    cluster = cast(RedisCluster, client)
    node = random.choice(cluster.get_primaries())
    return cluster.pubsub(node=node, ignore_subscribe_messages=False)
