"""Per-process resources of a worker: Redis pool, lease, store, Ollama session.

Built lazily and keyed by pid, so each prefork child opens its own pools after
the fork, and thread pools share one per process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import psycopg
import redis
from celery.signals import celeryd_after_setup, celeryd_init, worker_process_init, worker_ready
from psycopg_pool import ConnectionPool

from cache import EmbeddingCache, ExactStore, InFlightPrompts, Keyspace, Lease, SemanticIndex
from cache.audit import Calibration, choose_threshold
from cache.job import AuditJob
from cache.pending import PendingPuts
from cache.redisconn import connect
from cache.repo import CacheRepo
from cache.tokens import TokenWriter
from cache.verify import Verifier
from inference import (
    DEFAULT_MODEL_NAME,
    Completion,
    EmbeddedLLM,
    Embedder,
    OllamaClient,
    TransientLLMError,
    load_embedder,
)
from inference.pair_model import PairModel
from settings import Settings, current, pg_pool_kwargs, redis_timeouts

T = TypeVar("T")


OUTAGE_HOLD_S = 5.0


class Outage:
    """PostgreSQL out of reach, remembered for `hold_s`: meanwhile each call through here
    fails at once (psycopg.OperationalError) instead of waiting a pool timeout for a
    connection, so a PostgreSQL outage costs an answer one wait, not one per read. (An
    answer given meanwhile is recorded, and so indexed, by the pending-answers loop once
    PostgreSQL is back: up to `hold_s` later than otherwise.)"""

    def __init__(self, hold_s: float = OUTAGE_HOLD_S) -> None:
        self.hold_s = hold_s
        self._until = 0.0

    def _check(self) -> None:
        if time.monotonic() < self._until:
            raise psycopg.OperationalError("PostgreSQL was out of reach moments ago")

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        self._check()
        try:
            return fn(*args)
        except psycopg.OperationalError:
            self._until = time.monotonic() + self.hold_s
            raise

    def rows(self, source: Callable[[], Iterator[T]]) -> Iterator[T]:
        """`source`'s rows, through the same memory of an outage."""
        self._check()
        try:
            yield from source()
        except psycopg.OperationalError:
            self._until = time.monotonic() + self.hold_s
            raise


@dataclass(frozen=True)
class Resources:
    redis: redis.Redis
    keys: Keyspace
    lease: Lease
    store: ExactStore
    repo: CacheRepo
    index: SemanticIndex
    inflight: InFlightPrompts
    embeddings: EmbeddingCache
    tokens: TokenWriter
    llm: LLM
    max_retries: int
    retry_backoff_s: float
    embed_cache_dir: str
    verifier: Verifier
    calibration: Calibration  # the pair model's offline error curve (cache/audit.py)
    max_error: float  # SEMANTIC_MAX_ERROR
    audit_rate: float  # AUDIT_RATE: the share of semantic hits audited
    send_audit: Callable[[AuditJob], None]  # queues flock.audit
    llm_band: float | None = None  # LLM_VERIFY_BAND: see tasks.flow._second_opinion
    pg: Outage = field(default_factory=Outage)  # PostgreSQL calls that must not wait twice

    @property
    def pending(self) -> PendingPuts:
        """Answers PostgreSQL could not take yet, for the sweeper to write (cache/pending.py)."""
        return PendingPuts(self.redis, self.keys)

    def namespace_threshold(self, namespace: str) -> float:
        """What wrong hits raised this namespace's threshold to (0 when none did). Unknown
        (Redis lost it and PostgreSQL is out of reach): 1.0, only identical prompts match."""
        try:
            value = self._mirrored(self.keys.nsthreshold, namespace, lambda: {
                ns: str(t) for ns, t in self.repo.namespace_thresholds().items()})  # fmt: skip
        except psycopg.OperationalError as exc:
            log.warning("namespace thresholds unknown (%s): exact matches only", exc)
            return 1.0
        return float(value) if value is not None else 0.0

    def score_threshold(self, namespace: str) -> float:
        """The pair model's acceptance threshold in this namespace: learned from its audits
        (tasks.flow.audit keeps it in Redis); the offline operating point for
        SEMANTIC_MAX_ERROR where none was learned. Unknown (Redis lost it and PostgreSQL is
        out of reach): 1.0, the strictest."""
        try:
            value = self._mirrored(self.keys.scorethreshold, namespace, lambda: {
                ns: str(choose_threshold(audits, self.max_error, self.calibration))
                for ns, audits in self.repo.recent_audits().items()})  # fmt: skip
        except psycopg.OperationalError as exc:
            log.warning("score thresholds unknown (%s): the strictest for now", exc)
            return 1.0
        return float(value) if value is not None else self.verifier.score_threshold

    def _mirrored(
        self, key: str, namespace: str, load: Callable[[], dict[str, str]]
    ) -> str | bytes | None:
        """A namespace's value in a Redis hash that mirrors PostgreSQL, read on every lookup;
        the whole hash is loaded again (and marked `_loaded`) when Redis lost it. Raises
        psycopg.OperationalError when it must load and PostgreSQL is out of reach."""
        value, loaded = self.redis.hmget(key, [namespace, "_loaded"])
        if loaded is None:
            known = self.pg.call(load)
            self.redis.hset(key, mapping={"_loaded": "1", **known})  # type: ignore[dict-item]
            value = known.get(namespace)
        return value

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
    conf = current()
    client = connect(conf.redis_url, conf.redis_cluster, **redis_timeouts(conf.redis_timeout_s))
    keys = Keyspace(conf.flock_key_prefix)
    lease = Lease(client, keys, conf.lock_lease_ms)
    # A connection within a third of the lease, or PostgreSQL counts as out of reach (a
    # task then answers without it: tasks/flow.py); the lease outlives the wait.
    pool = ConnectionPool(
        conf.database_url,
        min_size=1,
        max_size=4,
        timeout=max(1.0, conf.lock_lease_ms / 3000),
        open=True,
        **pg_pool_kwargs(),
    )
    repo = CacheRepo(pool)
    pg = Outage()
    pair = PairModel()
    thresholds, error = pair.calibration()
    calibration = Calibration(tuple(thresholds), tuple(error))
    return Resources(
        redis=client,
        keys=keys,
        lease=lease,
        store=ExactStore(client, keys),
        repo=repo,
        index=SemanticIndex(
            client,
            keys,
            lambda: pg.rows(repo.vectors),
            fetch=repo.vectors_of,
            **conf.index_options(),
        ),  # fmt: skip
        inflight=InFlightPrompts(client, keys),
        embeddings=EmbeddingCache(client, keys, ttl_s=conf.embed_cache_ttl),
        tokens=TokenWriter(client, keys),
        llm=_llm(conf),
        max_retries=conf.llm_max_retries,
        retry_backoff_s=conf.llm_retry_backoff_s,
        embed_cache_dir=conf.embed_cache_dir,
        verifier=Verifier(
            pair.score, score_threshold=calibration.operating_point(conf.semantic_max_error)
        ),
        calibration=calibration,
        max_error=conf.semantic_max_error,
        audit_rate=conf.audit_rate,
        send_audit=_send_audit,
        llm_band=conf.llm_verify_band,
        pg=pg,
    )


log = logging.getLogger(__name__)


def _send_audit(job: AuditJob) -> None:
    from cache.job import describe
    from tasks.app import app

    payload = job.to_payload()
    # An audit an hour late is dropped: the entry may be gone, and a backlog must not grow.
    app.send_task("flock.audit", args=[payload], queue="audit", expires=3600,
                  argsrepr=describe(payload), kwargsrepr="{}")  # fmt: skip


class LLM(Protocol):
    def chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        options: dict[str, Any] | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> Completion: ...


def _llm(conf: Settings) -> LLM:
    """LLM_BACKEND: `ollama`, `embedded` (SmolLM2-135M in this process), or `auto`: Ollama
    when it answers, else the embedded demo model."""
    ollama = OllamaClient(conf.ollama_url, read_timeout_s=conf.llm_timeout_s)
    choice = conf.llm_backend
    if choice == "auto":
        try:
            ollama.version()
            choice = "ollama"
        except TransientLLMError:
            log.warning("Ollama does not answer at %s: using the embedded demo model",
                        conf.ollama_url)  # fmt: skip
            choice = "embedded"
    if choice == "embedded":
        return EmbeddedLLM(name=DEFAULT_MODEL_NAME)
    return ollama


# Which queues this worker consumes, recorded in the main process before any fork.
_queues: set[str] = set()


@celeryd_init.connect
def _remember_queues(options: dict | None = None, **_: object) -> None:
    raw = (options or {}).get("queues") or []
    _queues.update(raw.split(",") if isinstance(raw, str) else raw)


@celeryd_after_setup.connect
def _embeddings_too(sender: str, instance: Any, **_: object) -> None:
    """An embedder (queue `embed`) also takes the embeddings requests' queue, so every
    place that starts one (Procfile, systemd units, tests) keeps naming `embed` only."""
    if "embed" in _queues and "embeddings" not in _queues:
        instance.app.amqp.queues.select_add("embeddings")
        _queues.add("embeddings")


@worker_process_init.connect
def _preload(**_: object) -> None:
    """Embedder processes load the model before taking their first task: a task must not
    spend its lease loading it. Prefork: each child, after the fork."""
    if "embed" in _queues:
        model = resources().embedder()
        log.info("embedding model %s loaded in pid %d", model.name, os.getpid())


@worker_ready.connect
def _preload_in_process(sender: object = None, **_: object) -> None:
    """Thread (or solo) pool: the tasks run in this process, which loads the model once."""
    if "prefork" not in type(getattr(sender, "pool", None)).__module__:
        _preload()
