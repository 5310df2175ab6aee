"""The web process's pools: Redis, lease, exact store, wake-up hub, task sender.

Created per process in the app factory (gunicorn loads the app in each worker after the
fork), reached through `services()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from flask import Flask, current_app

from cache import ExactStore, Lease, WakeupHub
from tasks.app import app as celery_app


@dataclass(frozen=True)
class Services:
    redis: redis.Redis
    lease: Lease
    store: ExactStore
    hub: WakeupHub

    def dispatch(self, task: str, job: dict[str, Any], queue: str) -> None:
        celery_app.send_task(task, args=[job], queue=queue)


def init_app(app: Flask) -> None:
    cfg = app.config
    # Blocking pool: under a burst, requests wait for a free connection instead of
    # failing with "Too many connections".
    pool = redis.BlockingConnectionPool.from_url(
        cfg["REDIS_URL"], max_connections=cfg["REDIS_MAX_CONNECTIONS"], timeout=10
    )
    client = redis.Redis(connection_pool=pool)
    prefix = cfg["KEY_PREFIX"]
    lease = Lease(client, prefix, cfg["LOCK_LEASE_MS"])
    store = ExactStore(client, prefix, lease)
    # The subscriber holds its connection for good: give it its own, outside the pool.
    hub = WakeupHub(
        redis.Redis.from_url(cfg["REDIS_URL"], health_check_interval=30),
        store.channel_pattern,
        prefix_len=len(store.channel("")),
    )
    celery_app.conf.broker_url = cfg["CELERY_BROKER_URL"]
    app.extensions["flock"] = Services(redis=client, lease=lease, store=store, hub=hub)


def services() -> Services:
    return current_app.extensions["flock"]
