"""Per-process resources of a worker: Redis pool, lease, store, Ollama session.

Built lazily and keyed by pid, so each prefork child opens its own pools after
the fork, and thread pools share one per process.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import redis

from cache import ExactStore, Lease
from inference import OllamaClient
from tasks.app import app


@dataclass(frozen=True)
class Resources:
    redis: redis.Redis
    lease: Lease
    store: ExactStore
    llm: OllamaClient
    max_retries: int
    retry_backoff_s: float


_lock = threading.Lock()
_by_pid: dict[int, Resources] = {}


def resources() -> Resources:
    pid = os.getpid()
    with _lock:
        if pid not in _by_pid:
            _by_pid.clear()  # inherited from a parent before the fork: never reuse its sockets
            _by_pid[pid] = _build()
        return _by_pid[pid]


def _build() -> Resources:
    conf = app.conf
    client = redis.Redis.from_url(conf.flock_redis_url, health_check_interval=30)
    lease = Lease(client, conf.flock_key_prefix, conf.flock_lock_lease_ms)
    return Resources(
        redis=client,
        lease=lease,
        store=ExactStore(client, conf.flock_key_prefix, lease),
        llm=OllamaClient(conf.flock_ollama_url, read_timeout_s=conf.flock_llm_timeout_s),
        max_retries=conf.flock_llm_max_retries,
        retry_backoff_s=conf.flock_llm_retry_backoff_s,
    )
