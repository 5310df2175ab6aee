"""Per-process resources of a worker: Redis pool, lease, store, Ollama session.

Built lazily and keyed by pid, so each prefork child opens its own pools after
the fork, and thread pools share one per process.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import redis
from celery.signals import celeryd_init, worker_process_init
from psycopg_pool import ConnectionPool

from cache import EmbeddingCache, ExactStore, InFlightPrompts, Lease, SemanticIndex
from cache.repo import CacheRepo
from cache.tokens import TokenWriter
from inference import OllamaClient
from inference.embeddings import Embedder, load_embedder
from tasks.app import app


@dataclass(frozen=True)
class Resources:
    redis: redis.Redis
    lease: Lease
    store: ExactStore
    repo: CacheRepo
    index: SemanticIndex
    inflight: InFlightPrompts
    embeddings: EmbeddingCache
    tokens: TokenWriter
    llm: OllamaClient
    max_retries: int
    retry_backoff_s: float
    embed_cache_dir: str

    def embedder(self) -> Embedder:
        """The embedding model, loaded on first use: only embedder children ever load it."""
        with _lock:
            if "embedder" not in _models:
                _models["embedder"] = load_embedder(cache_dir=self.embed_cache_dir)
            return _models["embedder"]


_lock = threading.Lock()
_by_pid: dict[int, Resources] = {}
_models: dict[str, Embedder] = {}


def resources() -> Resources:
    pid = os.getpid()
    with _lock:
        if pid not in _by_pid:
            _by_pid.clear()  # inherited from a parent before the fork: never reuse its sockets
            _models.clear()
            _by_pid[pid] = _build()
        return _by_pid[pid]


def _build() -> Resources:
    conf = app.conf
    client = redis.Redis.from_url(conf.flock_redis_url, health_check_interval=30)
    prefix = conf.flock_key_prefix
    lease = Lease(client, prefix, conf.flock_lock_lease_ms)
    pool = ConnectionPool(
        conf.flock_database_url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=True
    )
    repo = CacheRepo(pool)
    return Resources(
        redis=client,
        lease=lease,
        store=ExactStore(client, prefix, lease),
        repo=repo,
        index=SemanticIndex(client, prefix, repo.vectors),
        inflight=InFlightPrompts(client, prefix),
        embeddings=EmbeddingCache(client, prefix),
        tokens=TokenWriter(client, prefix),
        llm=OllamaClient(conf.flock_ollama_url, read_timeout_s=conf.flock_llm_timeout_s),
        max_retries=conf.flock_llm_max_retries,
        retry_backoff_s=conf.flock_llm_retry_backoff_s,
        embed_cache_dir=conf.flock_embed_cache_dir,
    )


log = logging.getLogger(__name__)

# Which queues this worker consumes, recorded in the parent before it forks its children.
_queues: set[str] = set()


@celeryd_init.connect
def _remember_queues(options: dict | None = None, **_: object) -> None:
    raw = (options or {}).get("queues") or []
    _queues.update(raw.split(",") if isinstance(raw, str) else raw)


@worker_process_init.connect
def _preload(**_: object) -> None:
    """Embedder children load the model before taking their first task: a task must not
    spend its lease loading it."""
    if "embed" in _queues:
        model = resources().embedder()
        log.info("embedding model %s loaded in pid %d", model.name, os.getpid())
