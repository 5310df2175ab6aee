"""Flock's settings: every environment variable it reads, each with its one default.

The web tier (webapp/config.py makes Flask's config of it) and the workers (celeryconfig.py,
tasks/) read the same `Settings`; cache/ and inference/ take what they need as constructor
arguments and never read the environment. A field's variable is its name in upper case;
.env.sample and the README document each one (tests/test_layout.py checks).

Unset variables take the default. An empty value means "none" for the optional ones
(CELERY_BROKER_URL=, SECRET_KEY= as .env.sample has them). A value that does not parse
or is out of range stops the process at start with a ValueError naming the variable.
"""

from __future__ import annotations

import functools
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

LLM_BACKENDS = ("ollama", "embedded", "auto")

# Timeouts of every connection Flock opens. A Redis command answers within REDIS_TIMEOUT_S
# (a setting) or fails; connecting takes at most REDIS_CONNECT_TIMEOUT_S of it; idle
# connections are checked before use every REDIS_HEALTH_CHECK_S. The wake-up subscriber
# waits for messages with get_message(timeout=...), which the read timeout does not cut.
# PostgreSQL: connecting within PG_CONNECT_TIMEOUT_S, statements cut at
# PG_STATEMENT_TIMEOUT_MS (migrations excepted). A pool's connection is checked as it is
# handed out (one dropped by a PostgreSQL restart is replaced, not used), and a pool gives
# up reconnecting with backoff after PG_RECONNECT_TIMEOUT_S, so the next request tries at
# once (psycopg_pool's own default, 5 minutes, lets the backoff grow past 30 s).
REDIS_CONNECT_TIMEOUT_S = 5.0
REDIS_HEALTH_CHECK_S = 30
PG_CONNECT_TIMEOUT_S = 5
PG_STATEMENT_TIMEOUT_MS = 30_000
PG_RECONNECT_TIMEOUT_S = 5.0


def redis_timeouts(timeout_s: float) -> dict[str, Any]:
    """Keyword arguments of a redis-py client or pool: REDIS_TIMEOUT_S and the rest."""
    return {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": min(REDIS_CONNECT_TIMEOUT_S, timeout_s),
        "health_check_interval": REDIS_HEALTH_CHECK_S,
    }


def pg_pool_kwargs() -> dict[str, Any]:
    """Keyword arguments of every PostgreSQL pool (psycopg_pool.ConnectionPool)."""
    from psycopg_pool import ConnectionPool

    return {
        "kwargs": pg_connection_kwargs(),
        "configure": pg_configure,
        "check": ConnectionPool.check_connection,
        "reconnect_timeout": PG_RECONNECT_TIMEOUT_S,
    }


def pg_connection_kwargs() -> dict[str, Any]:
    """Keyword arguments of each pooled PostgreSQL connection (autocommit, connect timeout);
    the statement timeout is set by `pg_configure` after connecting, not as a startup
    `options` parameter, which PgBouncer refuses unless told to ignore it."""
    return {"autocommit": True, "connect_timeout": PG_CONNECT_TIMEOUT_S}


def pg_configure(conn: Any) -> None:
    """A pool's `configure`: the statement timeout of a new (autocommit) connection."""
    conn.execute(f"SET statement_timeout = {int(PG_STATEMENT_TIMEOUT_MS)}")


@dataclass(frozen=True)
class Settings:
    # services
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False  # REDIS_URL is a node of a Redis Cluster (cache.redisconn)
    celery_broker_url: str | None = None  # None: the cache's Redis (see `broker_url`)
    flock_key_prefix: str = "flock:v1:"
    database_url: str = "postgresql:///flock"
    database_pool_size: int = 10  # per web process
    redis_max_connections: int = 100  # per web process
    redis_timeout_s: float = 10.0  # any one Redis command, or it fails (503)
    # security
    secret_key: str | None = None  # required by the web tier; no default on purpose
    session_cookie_secure: bool = False
    session_lifetime_s: int = 7 * 24 * 3600  # a browser session ends after this (or at logout)
    requests_per_minute: int = 600  # per API key; 0: no limit
    allow_registration: bool = False  # `make run` turns it on for development
    auth_attempts_per_minute: int = 10  # login/register tries per name and per address; 0: none
    max_keys_per_user: int = 10  # active API keys a user may hold
    api_key_memory_s: float = 10.0  # a web process remembers a checked key (revocation lag)
    api_key_cache_s: float = 60.0  # a key's check cached in Redis; 0: not cached
    api_key_last_known_s: float = 86400.0  # a confirmed key's copy for PostgreSQL outages; 0: none
    ops_token: str | None = None  # Bearer token for /metrics and /readyz's details; None: nobody
    # the LLM
    ollama_url: str = "http://127.0.0.1:11434"
    ollama_model: str = "llama3.2:1b"
    llm_backend: str = "auto"  # ollama | embedded (SmolLM2-135M in the llm worker) | auto
    llm_timeout_s: float = 120.0
    llm_max_retries: int = 2
    llm_retry_backoff_s: float = 0.5
    llm_verify_band: float | None = None  # the uncertain band; None: off
    semantic_max_error: float = 0.2  # the share of wrong semantic hits the audits aim under
    audit_rate: float = 0.05  # the share of semantic hits audited (answered again); 0: none
    # caching and waiting
    semantic_threshold: float = 0.8
    cache_ttl: int = 7 * 24 * 3600
    cache_max_ttl: int = 30 * 24 * 3600  # the longest `cache.ttl` a request may ask
    lock_lease_ms: int = 10_000
    request_timeout_s: float = 120.0
    max_prompt_chars: int = 32_000
    max_body_bytes: int = 1024 * 1024
    embed_max_texts: int = 64  # texts per embeddings request (each costs a rate-limit token)
    embed_max_chars: int = 64_000  # characters over all texts of an embeddings request
    request_log_interval_s: float = 1.0
    embed_cache_dir: str = "var/models"
    embed_cache_ttl: int = 24 * 3600  # a text's vector in Redis (emb:<model>:<sha>)
    cache_max_entries: int = 100_000
    evict_interval_s: float = 30.0
    # the semantic index (cache/semantic.py; docs/ARCHITECTURE.md, "The index")
    index_ann_min_entries: int = 10_000  # a namespace this large is an HNSW index; 0: always
    index_ann_ef: int = 256  # the HNSW search's candidate list: recall against lookup time
    index_build_threads: int = 1  # threads that build an HNSW index (a cold start, a switch)
    index_snapshot_dir: str | None = None  # where embedders save/load the index; None: never
    index_snapshot_interval_s: float = 900.0  # how old a snapshot gets before a new one
    # shared entries: votes of users who were served a wrong answer
    feedback_quorum: int = 3  # distinct users whose "wrong" invalidates a shared entry
    feedback_per_minute: int = 10  # feedback a user may send; 0: no limit
    # operations
    flower_url: str = "http://127.0.0.1:5555"
    flower_address: str = "127.0.0.1"  # where the flower process listens

    def __post_init__(self) -> None:
        for name in ("semantic_threshold", "llm_verify_band", "audit_rate"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name.upper()} must be within 0..1, not {value}")
        if not 0.0 < self.semantic_max_error < 1.0:
            raise ValueError(f"SEMANTIC_MAX_ERROR must be within (0, 1), not "
                             f"{self.semantic_max_error}")  # fmt: skip
        if self.llm_backend not in LLM_BACKENDS:
            raise ValueError(
                f"LLM_BACKEND must be one of {', '.join(LLM_BACKENDS)}, not {self.llm_backend!r}"
            )
        positive = ("database_pool_size", "redis_max_connections", "redis_timeout_s",
                    "llm_timeout_s", "cache_ttl", "lock_lease_ms", "request_timeout_s",
                    "max_prompt_chars", "max_body_bytes", "embed_max_texts", "embed_max_chars",
                    "embed_cache_ttl",
                    "request_log_interval_s", "evict_interval_s", "cache_max_ttl",
                    "session_lifetime_s", "feedback_quorum", "max_keys_per_user",
                    "index_ann_ef", "index_build_threads", "index_snapshot_interval_s")  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.upper()} must be positive, not {getattr(self, name)}")
        for name in ("requests_per_minute", "llm_max_retries", "llm_retry_backoff_s",
                     "cache_max_entries", "auth_attempts_per_minute",
                     "feedback_per_minute", "index_ann_min_entries", "api_key_memory_s",
                     "api_key_cache_s", "api_key_last_known_s"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name.upper()} must not be negative, not {getattr(self, name)}")

        if "{" in self.flock_key_prefix or "}" in self.flock_key_prefix:
            # A brace would make the prefix the hash tag: one cluster slot for every key.
            raise ValueError(f"FLOCK_KEY_PREFIX must not contain braces: "
                             f"{self.flock_key_prefix!r}")  # fmt: skip
        if self.redis_cluster and not self.celery_broker_url:
            raise ValueError("REDIS_CLUSTER needs CELERY_BROKER_URL: Celery cannot use a "
                             "cluster as its broker; give it a Redis of its own")  # fmt: skip
        if self.cache_ttl > self.cache_max_ttl:
            raise ValueError(f"CACHE_TTL ({self.cache_ttl}) must not exceed CACHE_MAX_TTL "
                             f"({self.cache_max_ttl})")  # fmt: skip

    @property
    def broker_url(self) -> str:
        """The Celery broker: CELERY_BROKER_URL, else the cache's Redis."""
        return self.celery_broker_url or self.redis_url

    def index_options(self) -> dict[str, Any]:
        """The semantic index's constructor arguments (cache.SemanticIndex)."""
        return {
            "ann_min_entries": self.index_ann_min_entries,
            "ann_ef": self.index_ann_ef,
            "build_threads": self.index_build_threads,
            "snapshot_dir": self.index_snapshot_dir,
            "snapshot_interval_s": self.index_snapshot_interval_s,
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name.upper(), hints[f.name], raw)
        return cls(**values)


def variables() -> list[str]:
    """The name of every environment variable Flock reads."""
    return [f.name.upper() for f in fields(Settings)]


@functools.cache
def current() -> Settings:
    """This process's settings, read from the environment on first use."""
    return Settings.from_env()


_BOOLS = {"1": True, "true": True, "0": False, "false": False}


def _parse(name: str, kind: Any, raw: str) -> Any:
    if isinstance(kind, types.UnionType):  # `X | None`: empty means None
        if not raw.strip():
            return None
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if kind is str:
        return raw
    if kind is bool:
        if raw.strip().lower() not in _BOOLS:
            raise ValueError(f"{name} must be 0 or 1, not {raw!r}")
        return _BOOLS[raw.strip().lower()]
    try:
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, "
                         f"not {raw!r}") from exc  # fmt: skip
