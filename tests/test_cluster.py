"""Flock on a Redis Cluster: a real cluster of three primaries started from the local
redis-server binaries (tests/redis_servers.py), the Celery broker on a Redis of its own.

First the Redis-level tests of tests/test_cache_redis.py run again with a cluster client
(leases, followers whose lock lives on another node than their leader's, aliases, wake-ups,
the semantic change log), then a full stack (web, embedder, llm worker) answers on it: a
burst is one LLM call, a paraphrase is a semantic hit, similar prompts in flight follow
one generation, tokens stream, readiness and gauges read the cluster, and a node killed
and started again empty costs no answer: what it held comes back from PostgreSQL.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from cache import Keyspace
from cache.keys import CacheKey
from cache.redisconn import connect, url_nodes
from tests.conftest import LEASE_MS, auth, nonsense_word, ops, post_chat, small_stack
from tests.redis_servers import RedisCluster3, RedisServer, own_redis
from tests.sse import stream_chat, text_of
from tests.stack import Stack, free_port, load_services

# The Redis-level tests, run here with `redis_client` a cluster client (this module's).
from tests.test_cache_redis import (  # noqa: F401
    keys,
    test_a_follower_joins_a_running_leader_and_gets_its_answer,
    test_a_new_process_rebuilds_from_the_source_then_follows_the_log,
    test_a_raised_threshold_drops_the_aliases_below_it,
    test_a_running_claim_belongs_to_its_attempt,
    test_an_alias_keeps_its_similarity_and_never_outlives_its_entry,
    test_an_entry_added_by_one_process_is_found_by_the_other,
    test_embedding_cache_computes_each_text_once,
    test_followers_of_followers_and_errors_are_answered,
    test_forgetting_an_entry_spares_a_key_answered_again_since,
    test_heartbeat_keeps_followers_alive,
    test_inflight_lists_earlier_announcements_in_order,
    test_leases_in_flight_are_counted_without_scanning,
    test_nobody_follows_a_leader_that_has_finished,
    test_wake_ups_reach_every_waiter_of_their_key_in_the_process,
)

pytestmark = pytest.mark.slow

MODEL = "llama3.2:1b"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[RedisCluster3]:
    servers = RedisCluster3(tmp_path_factory.mktemp("cluster"))
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def redis_client(cluster) -> Iterator[redis.Redis]:
    client = RedisCluster.from_url(cluster.url)
    yield client  # type: ignore[misc]
    client.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> Iterator[RedisServer]:
    with own_redis(tmp_path_factory.mktemp("broker")) as server:
        yield server


@pytest.fixture(scope="module")
def cluster_stack(stack_env, cluster, broker, tmp_path_factory) -> Iterator[tuple[Stack, str]]:
    # REDIS_URL names a node that does not hold the `leases` gauge's key: a process that
    # talked to that one node only, as a plain client, would miss it (MOVED).
    gauge = cluster.node_of(Keyspace("flock:v1:").leases)
    entry = next(n for n in cluster.nodes if n is not gauge)
    env = {
        **stack_env,
        "REDIS_URL": entry.url,
        "REDIS_CLUSTER": "1",
        "CELERY_BROKER_URL": f"{broker.url}/0",
    }
    with small_stack(env, tmp_path_factory.mktemp("cluster-logs"), "cluster") as stack_and_key:
        yield stack_and_key


def question() -> str:
    return f"Who invented the {nonsense_word()} and why is it {nonsense_word()}?"


def test_a_cluster_url_may_name_several_seeds(cluster):
    """A process starts while the first node its REDIS_URL names is down, from the next."""
    dead = free_port()
    seeds = ",".join(f"127.0.0.1:{n.port}" for n in cluster.nodes[1:])
    client = connect(f"redis://127.0.0.1:{dead},{seeds}/0", cluster=True, socket_connect_timeout=1)
    assert client.set("seeded", "1") and client.get("seeded") == b"1"
    assert len(client.get_nodes()) == 3  # it learned the whole cluster
    with pytest.raises(RedisClusterException):
        connect(f"redis://127.0.0.1:{dead}/0", cluster=True, socket_connect_timeout=1)


@pytest.mark.parametrize(
    "url, nodes",
    [
        ("redis://10.0.0.1:7000/0", [("10.0.0.1", 7000)]),
        ("redis://u:p@a:7000,b,c:7002/0", [("a", 7000), ("b", 6379), ("c", 7002)]),
        ("redis://[::1]:7000,[fe80::2]/0", [("::1", 7000), ("fe80::2", 6379)]),
        ("redis://:secret@[::1]/1", [("::1", 6379)]),
        ("redis:///0", [("127.0.0.1", 6379)]),
    ],
)
def test_the_nodes_a_url_names_read_the_same_for_the_client_and_the_probe(url, nodes):
    """The cluster client's seeds and scripts/services.py's probe parse one URL alike, IPv6
    brackets included."""
    assert url_nodes(url) == nodes
    assert load_services().redis_nodes(url) == nodes


def test_a_burst_on_a_cluster_is_one_llm_call(cluster_stack, standin, ns):
    stack, key = cluster_stack
    standin.configure(latency_s=1.0)
    prompt = question()
    with ThreadPoolExecutor(30) as pool:
        responses = list(pool.map(
            lambda _: post_chat(stack.url, {"prompt": prompt, **ns}, key=key), range(30)
        ))  # fmt: skip
    assert [r.status_code for r in responses] == [200] * 30, stack.procs["web"].tail()
    statuses = Counter(r.json()["cache"]["status"] for r in responses)
    assert statuses["miss"] == 1 and set(statuses) <= {"miss", "coalesced", "exact"}, statuses
    assert len({r.json()["cache"]["entry_id"] for r in responses}) == 1
    assert standin.calls()["chat"] == 1
    again = post_chat(stack.url, {"prompt": prompt, **ns}, key=key).json()
    assert again["cache"]["status"] == "exact"


def test_a_paraphrase_is_a_semantic_hit_on_a_cluster(cluster_stack, standin, ns):
    stack, key = cluster_stack
    t = nonsense_word()
    first = post_chat(stack.url, {"prompt": f"How long should I boil a {t} egg?", **ns}, key=key)
    assert first.status_code == 200 and first.json()["cache"]["status"] == "miss", first.text
    hit = post_chat(stack.url, {"prompt": f"How long do I need to boil a {t} egg?", **ns}, key=key)
    assert hit.status_code == 200, hit.text
    assert hit.json()["cache"]["status"] == "semantic", hit.json()["cache"]
    assert hit.json()["cache"]["entry_id"] == first.json()["cache"]["entry_id"]
    assert standin.calls()["chat"] == 1


def _lock_port(cluster: RedisCluster3, prompt: str, ns: dict) -> int:
    key = CacheKey.build(MODEL, [{"role": "user", "content": prompt}], ns["options"]).exact
    return cluster.node_of(Keyspace("flock:v1:").lock(key)).port


def test_similar_prompts_in_flight_follow_one_generation_across_nodes(
    cluster_stack, cluster, standin, ns
):
    """The followers' locks live on other nodes than their leader's, yet the three prompts
    cost one LLM call."""
    stack, key = cluster_stack
    standin.configure(latency_s=2.0)
    while True:
        t = nonsense_word()
        wordings = [
            f"How long should I boil a {t} egg?",
            f"How long do I need to boil a {t} egg?",
            f"How long must I boil a {t} egg?",
        ]
        ports = [_lock_port(cluster, w, ns) for w in wordings]
        if ports[0] not in ports[1:]:
            break
    with ThreadPoolExecutor(len(wordings)) as pool:
        leader = pool.submit(post_chat, stack.url, {"prompt": wordings[0], **ns}, key=key)
        time.sleep(0.8)  # the leader is generating
        others = list(pool.map(
            lambda w: post_chat(stack.url, {"prompt": w, **ns}, key=key), wordings[1:]
        ))  # fmt: skip
        first = leader.result()
    bodies = [first.json(), *(r.json() for r in others)]
    assert [b["cache"]["status"] for b in bodies] == ["miss", "coalesced", "coalesced"], bodies
    assert {b["cache"]["entry_id"] for b in bodies} == {first.json()["cache"]["entry_id"]}
    assert standin.calls()["chat"] == 1


def test_tokens_stream_on_a_cluster(cluster_stack, standin, ns):
    stack, key = cluster_stack
    standin.configure(latency_s=0.5)
    prompt = question()
    events = stream_chat(stack.url, {"prompt": prompt, **ns}, auth(key))
    assert [e for e, _, _ in events][-1] == "done", events
    assert prompt in text_of(events)
    assert standin.calls()["chat"] == 1


def test_readiness_and_gauges_read_the_cluster(cluster_stack, standin, ns):
    stack, key = cluster_stack
    ready = requests.get(f"{stack.url}/readyz", headers=ops(), timeout=10).json()
    assert ready["status"] == "ready" and ready["checks"]["redis"]["ok"], ready
    standin.configure(latency_s=1.5)
    with ThreadPoolExecutor(1) as pool:
        asked = pool.submit(post_chat, stack.url, {"prompt": question(), **ns}, key=key)
        time.sleep(0.7)
        scrape = requests.get(f"{stack.url}/metrics", headers=ops(), timeout=10).text
        assert asked.result().status_code == 200
    assert "flock_inflight_leases 1.0" in scrape, scrape[-2000:]


def test_a_node_restarted_empty_costs_only_what_it_held(cluster_stack, cluster, standin, ns):
    stack, key = cluster_stack
    asked = [question() for _ in range(6)]
    port = _lock_port(cluster, asked[0], ns)
    victim = next(n for n in cluster.nodes if n.port == port)
    for p in asked:
        assert post_chat(stack.url, {"prompt": p, **ns}, key=key).status_code == 200
    victim.kill()
    time.sleep(2)  # the other nodes mark it failed
    victim.start()  # same port and slots, no data
    cluster.wait_ok()

    # Asked again, each stored answer is served (from Redis, or from PostgreSQL where the
    # node lost it: asked[0] at least) without a new LLM call...
    budget = LEASE_MS / 1000 + 10
    for p in asked:
        resp = post_chat(stack.url, {"prompt": p, **ns}, key=key, timeout=budget)
        assert resp.status_code == 200, resp.text
        assert resp.json()["cache"]["status"] in ("exact", "semantic"), resp.json()["cache"]
    assert standin.calls()["chat"] == len(asked)
    # ...and new questions, on the restarted node's slots and on the others', are answered
    # within the lease, with no process restarted.
    fresh = [question() for _ in range(60)]
    on_victim = [q for q in fresh if _lock_port(cluster, q, ns) == victim.port]
    elsewhere = [q for q in fresh if _lock_port(cluster, q, ns) != victim.port]
    for q in on_victim[:3] + elsewhere[:3]:
        started = time.monotonic()
        resp = post_chat(stack.url, {"prompt": q, **ns}, key=key, timeout=budget)
        assert resp.status_code == 200, (resp.text, stack.procs["embedder"].tail())
        assert time.monotonic() - started < budget
    assert standin.calls()["chat"] == len(asked) + 6
    assert all(proc.alive() for proc in stack.procs.values())
