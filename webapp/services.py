"""The web process's pools: Redis, lease, exact store, wake-up hub, task sender.

Created per process in the app factory (gunicorn loads the app in each worker after the
fork), reached through `services()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from flask import Flask, current_app

from cache import Entry, ExactStore, Keyspace, Lease, SemanticIndex, WakeupHub
from cache.job import describe
from cache.ratelimit import RateLimiter
from cache.redisconn import connect, pooled
from cache.repo import CacheRepo, Removed
from cache.store import forget_everywhere
from cache.tokens import TokenHub, TokenWriter
from settings import redis_timeouts
from tasks.app import app as celery_app
from webapp import db, metrics
from webapp.reqlog import RequestLog


@dataclass(frozen=True)
class Services:
    redis: redis.Redis
    keys: Keyspace
    lease: Lease
    store: ExactStore
    hub: WakeupHub
    repo: CacheRepo
    index: SemanticIndex
    limiter: RateLimiter
    log: RequestLog
    tokens: TokenHub
    auth_limiter: RateLimiter  # sign-in and registration, per name and per address
    feedback_limiter: RateLimiter  # feedback, per user

    def admit(self, rate_key: str, exact_key: str | None) -> tuple[float, Entry | None]:
        """One Redis command for an exact hit: take a rate-limit token and read the cached
        answer together. Returns (seconds to wait, or 0; the entry, if any)."""
        key = self.keys.resp(exact_key) if exact_key is not None else None
        wait_s, raw = self.limiter.take_and_get(rate_key, key)
        return wait_s, (Entry.from_json(raw) if raw else None)

    def forget(self, removed: list[Removed]) -> None:
        forget_everywhere(removed, self.store, self.index)

    def dispatch(self, task: str, payload: dict[str, Any], queue: str) -> None:
        """Send a task by name (a job's payload: cache.job): no task module is loaded here.
        Monitoring (Flower) sees only `describe(payload)`, never the prompt."""
        celery_app.send_task(
            task, args=[payload], queue=queue, argsrepr=describe(payload), kwargsrepr="{}"
        )


def init_app(app: Flask) -> None:
    cfg = app.config
    # Blocking pool: under a burst, requests wait for a free connection instead of
    # failing with "Too many connections"; as long as they would wait for an answer (a
    # burst of 10,000 keeps the last ones queued here for seconds: no reason for a 503).
    cluster = cfg["REDIS_CLUSTER"]
    client = pooled(
        cfg["REDIS_URL"],
        cluster,
        max_connections=cfg["REDIS_MAX_CONNECTIONS"],
        wait_s=cfg["REQUEST_TIMEOUT_S"],
        **redis_timeouts(cfg["REDIS_TIMEOUT_S"]),
    )
    keys = Keyspace(cfg["KEY_PREFIX"])
    lease = Lease(client, keys, cfg["LOCK_LEASE_MS"])
    store = ExactStore(client, keys)
    # The subscriber holds its connection for good: give it its own, outside the pool.
    timeouts = redis_timeouts(cfg["REDIS_TIMEOUT_S"])
    # Its wait for messages is get_message(timeout=...), which the read timeout does not cut.
    hub = WakeupHub(connect(cfg["REDIS_URL"], cluster, **timeouts), keys)
    celery_app.conf.broker_url = cfg["CELERY_BROKER_URL"]
    pool = db.pool_of(app)
    repo = CacheRepo(pool)
    app.extensions["flock"] = Services(
        redis=client,
        keys=keys,
        lease=lease,
        store=store,
        hub=hub,
        repo=repo,
        # The web only ever publishes removals: it never loads or searches vectors.
        index=SemanticIndex(client, keys, source=lambda: ()),
        # An exact hit's read stands when a full Redis refuses its bucket's write: counted.
        limiter=RateLimiter(client, keys, cfg["REQUESTS_PER_MINUTE"],
                            on_refused_write=metrics.RATELIMIT_FAILED_OPEN.inc),  # fmt: skip
        log=RequestLog(pool, cfg["REQUEST_LOG_INTERVAL_S"]),
        tokens=TokenHub(
            connect(cfg["REDIS_URL"], cluster, **timeouts),  # its XREAD blocks for 0.1 s
            TokenWriter(client, keys),
        ),
        auth_limiter=RateLimiter(client, keys, cfg["AUTH_ATTEMPTS_PER_MINUTE"]),
        feedback_limiter=RateLimiter(client, keys, cfg["FEEDBACK_PER_MINUTE"]),
    )


def services() -> Services:
    return current_app.extensions["flock"]
