"""Prometheus metrics of the web tier, served at GET /metrics (webapp/ops.py).

Two kinds:

- Counted as answers happen, through `observe_answer()`: answers and their latency by
  outcome, LLM calls, tokens saved. Under gunicorn several processes count; with
  PROMETHEUS_MULTIPROC_DIR set, prometheus_client writes each process's values to files
  in that directory and a scrape sums them, so any worker's /metrics shows the totals.
  Without it (one process, tests in-process) they live in a plain registry.
- Read from Redis at scrape time: in-flight leases, queue depths and the audits' verdicts
  (counted by the audit worker: tasks/flow.py). They describe the
  shared state rather than this process, so they are never stored per process. Both are
  cheap reads whatever the size of the keyspace: the leases are kept in a sorted set as
  they are taken and released (cache/lease.py: in_flight), the queues are LLENs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import TypeVar

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from cache import Keyspace
from cache.lease import in_flight
from cache.redisconn import connect

log = logging.getLogger(__name__)
T = TypeVar("T")

OUTCOMES = ("exact", "semantic", "coalesced", "miss", "error")
QUEUES = ("embed", "embeddings", "llm", "audit")  # the Celery queues (celeryconfig.task_routes)

# Own registry rather than the global default: importing this module twice (tests, the
# Flask reloader) must not fail with "Duplicated timeseries".
REGISTRY = CollectorRegistry()

ANSWERS = Counter(
    "flock_requests", "Chat requests answered, by outcome", ["outcome"], registry=REGISTRY
)
LATENCY = Histogram(
    "flock_request_latency_seconds",
    "Time from request to answer, by outcome",
    ["outcome"],
    # From a Redis GET (~1 ms) to a slow LLM answer (minutes).
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
LLM_CALLS = Counter("flock_llm_calls", "Answers that called the LLM (miss)", registry=REGISTRY)
TOKENS_SAVED = Counter(
    "flock_tokens_saved", "Prompt and completion tokens not generated again", registry=REGISTRY
)
RATELIMIT_FAILED_OPEN = Counter(
    "flock_ratelimit_failed_open",
    "Requests admitted without their rate-limit token: a full Redis refused the bucket's write",
    registry=REGISTRY,
)
# Every outcome is exported from the start, at 0: rate() needs the series before the
# first event, and a dashboard should not show "no data" for "no errors yet".
for _outcome in OUTCOMES:
    ANSWERS.labels(_outcome)
    LATENCY.labels(_outcome)


def observe_answer(status: str, latency_s: float, tokens_saved: int) -> None:
    """Count one answered (or failed: status "error") chat request."""
    ANSWERS.labels(status).inc()
    LATENCY.labels(status).observe(latency_s)
    if status == "miss":
        LLM_CALLS.inc()
    if tokens_saved > 0:
        TOKENS_SAVED.inc(tokens_saved)


@lru_cache(maxsize=8)
def timed_redis(url: str, cluster: bool = False) -> redis.Redis:
    """A client with short timeouts, for probes and scrapes: a dead Redis must make them
    report it, not hang (the web's pool waits up to 10 s for a connection)."""
    return connect(url, cluster, socket_connect_timeout=1, socket_timeout=1)


class RedisGauges(Collector):
    """In-flight leases (lock keys in the cache Redis) and queue depths (broker lists)."""

    def __init__(self, cache_url: str, cluster: bool, keys: Keyspace, broker_url: str) -> None:
        self.cache_url, self.cluster, self.keys = cache_url, cluster, keys
        self.broker_url = broker_url

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        audits = CounterMetricFamily(
            "flock_audits",
            "Semantic hits audited (answered again and judged), by verdict",
            labels=["verdict"],
        )
        if (judged := _safely(self._audits)) is not None:
            for verdict in ("right", "wrong"):
                audits.add_metric([verdict], judged.get(verdict, 0))
            yield audits
        leases = GaugeMetricFamily(
            "flock_inflight_leases",
            "Single-flight leases held now: questions being answered",
        )
        if (n := _safely(self._count_leases)) is not None:
            leases.add_metric([], n)
            yield leases
        depth = GaugeMetricFamily(
            "flock_queue_depth", "Tasks waiting in a Celery queue", labels=["queue"]
        )
        # Only a Redis broker keeps a queue as a list we can LLEN.
        if self.broker_url.startswith(("redis://", "rediss://", "unix://")):
            if (lengths := _safely(self._queue_lengths)) is not None:
                for queue, length in lengths.items():
                    depth.add_metric([queue], length)
                yield depth

    def _audits(self) -> dict[str, int]:
        raw = timed_redis(self.cache_url, self.cluster).hgetall(self.keys.auditcounts)
        return {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}

    def _count_leases(self) -> int:
        return in_flight(timed_redis(self.cache_url, self.cluster), self.keys)

    def _queue_lengths(self) -> dict[str, int]:
        pipe = timed_redis(self.broker_url).pipeline(transaction=False)
        for queue in QUEUES:
            pipe.llen(queue)
        return dict(zip(QUEUES, pipe.execute(), strict=True))


def _safely(read: Callable[[], T]) -> T | None:
    """A gauge whose source is down (or misconfigured) is left out of the scrape rather
    than failing it: the counters are still worth having."""
    try:
        return read()
    except Exception as exc:
        log.warning("metrics: %s", exc)
        return None


def render(gauges: RedisGauges) -> bytes:
    """The whole scrape in Prometheus text format."""
    counted = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counted = CollectorRegistry()
        MultiProcessCollector(counted)  # sums every process's files
    live = CollectorRegistry()
    live.register(gauges)
    return generate_latest(counted) + generate_latest(live)
