"""Fixtures: the Ollama stand-in, the test's own Redis databases and PostgreSQL
database, a running stack, users with API keys.

Tests own Redis database numbers (FLOCK_TEST_REDIS_DB, default 11 or the next free
trio, for the cache; the next one for the Celery broker; the one before for a second
stack's broker) and flush only those, and a PostgreSQL
database of their own (created, migrated and dropped here) on the server at
FLOCK_TEST_PG (default postgresql://postgres@127.0.0.1:5432).
"""

from __future__ import annotations

import fcntl
import os
import random
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psycopg
import pytest
import redis
import requests

from tests.ollama_standin import StandIn
from tests.stack import ROOT, Stack
from webapp.migrate import migrate

REDIS_BASE = os.environ.get("FLOCK_TEST_REDIS", "redis://127.0.0.1:6379")


def _claim_databases() -> int:
    """Three Redis databases (n-1, n, n+1) of our own. Test sessions running at the same
    time on one machine each lock a different trio, so none flushes another's."""
    chosen = os.environ.get("FLOCK_TEST_REDIS_DB")
    for n in (int(chosen),) if chosen else (11, 8, 5, 2):
        handle = open(os.path.join(tempfile.gettempdir(), f"flock-test-redis-{n}.lock"), "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _locks.append(handle)  # held until this process exits
        return n
    raise RuntimeError("the test Redis databases are in use by other test sessions")


_locks: list = []
CACHE_DB = _claim_databases()
CACHE_URL = f"{REDIS_BASE}/{CACHE_DB}"
BROKER_URL = f"{REDIS_BASE}/{CACHE_DB + 1}"
LEASE_MS = 3000
PG_SERVER = os.environ.get("FLOCK_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
PG_DB = f"flock_test_{os.getpid()}"
PG_URL = f"{PG_SERVER}/{PG_DB}"
_keys: dict[str, str] = {}
OPS_TOKEN = "test-ops-token"


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    admin = f"{PG_SERVER}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB}"')
        conn.execute(f'CREATE DATABASE "{PG_DB}"')
    migrate(PG_URL)
    yield PG_URL
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(CACHE_URL)
    broker = redis.Redis.from_url(BROKER_URL)
    client.flushdb()
    broker.flushdb()
    yield client
    client.flushdb()
    broker.flushdb()


@pytest.fixture(scope="session")
def standin() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


@pytest.fixture(scope="session")
def stack_env(standin: StandIn, database: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database,
        "SECRET_KEY": "test-only-secret-key",
        "REQUEST_LOG_INTERVAL_S": "0.2",
        "REQUESTS_PER_MINUTE": "100000",
        "EVICT_INTERVAL_S": "1",
        "REDIS_URL": CACHE_URL,
        "CELERY_BROKER_URL": BROKER_URL,
        "OLLAMA_URL": standin.url,
        "OLLAMA_MODEL": "llama3.2:1b",
        "LOCK_LEASE_MS": str(LEASE_MS),
        "REQUEST_TIMEOUT_S": "30",
        "LLM_MAX_RETRIES": "2",
        "LLM_RETRY_BACKOFF_S": "0.2",
        "MAX_PROMPT_CHARS": "2000",
        "OPS_TOKEN": OPS_TOKEN,
        "ALLOW_REGISTRATION": "1",
        # Many tests sign in from 127.0.0.1; tests/test_accounts.py checks the throttle.
        "AUTH_ATTEMPTS_PER_MINUTE": "0",
        "FEEDBACK_PER_MINUTE": "0",
        "AUDIT_RATE": "0",  # tests/test_accuracy.py turns audits on where it checks them
    }


@pytest.fixture(scope="session")
def stack(stack_env, redis_client, tmp_path_factory) -> Iterator[Stack]:
    s = Stack(env=stack_env, logdir=tmp_path_factory.mktemp("stack-logs"))
    try:
        s.start_default()
        _keys["default"] = create_user(stack_env, "tester")
        yield s
    finally:
        s.stop()


@pytest.fixture(autouse=True)
def _fresh_standin(request) -> None:
    if "standin" in request.fixturenames:
        request.getfixturevalue("standin").reset()


def nonsense_word(syllables: int = 4) -> str:
    rng = random.Random(uuid.uuid4().int)
    return "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(syllables))


def fresh_namespace() -> dict:
    """Body fields putting a request in a namespace of its own (a random `seed` option),
    so one test's questions are never semantic hits for another's."""
    return {"options": {"seed": uuid.uuid4().int % 2**31}}


@pytest.fixture
def ns() -> dict:
    return fresh_namespace()


def conversation(prompt: str, system: str | None = None, history: list[str] = ()) -> list:
    """Messages: an optional system prompt, earlier (user, assistant) turns, the prompt."""
    messages = [{"role": "system", "content": system}] if system else []
    for user, assistant in zip(history[::2], history[1::2], strict=True):
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return [*messages, {"role": "user", "content": prompt}]


@pytest.fixture
def prompt() -> str:
    """A question nobody has asked yet in this run, and never a semantic hit for another one:
    each has a number of its own, which the numbers guard compares. Nonsense words alone do
    not keep two prompts apart: the pair model reads them as names it cannot tell apart, and
    served one such question for another (0.97)."""
    number = uuid.uuid4().int % 10**6
    return f"Why is the {nonsense_word()} {number} so {nonsense_word()}?"


def create_user(env: dict[str, str], name: str, admin: bool = False) -> str:
    """A new user through the real CLI; returns the API key it prints."""
    args = [sys.executable, "-m", "flask", "--app", "webapp", "users", "create", name]
    out = subprocess.run(
        args + (["--admin"] if admin else []), cwd=ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def api_key(stack) -> str:
    return _keys["default"]


def ops() -> dict[str, str]:
    """The operator's header for /metrics and /readyz's details."""
    return {"Authorization": f"Bearer {OPS_TOKEN}"}


def auth(key: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key or _keys['default']}"}


def post_chat(
    url: str, body: dict, timeout: float = 60, key: str | None = None
) -> requests.Response:
    return requests.post(f"{url}/api/v1/chat", json=body, timeout=timeout, headers=auth(key))


def post_many(
    url: str, bodies: list[dict], workers: int | None = None, key: str | None = None
) -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=workers or len(bodies)) as pool:
        return list(pool.map(lambda b: post_chat(url, b, key=key), bodies))


@contextmanager
def small_stack(
    env: dict[str, str], logdir, label: str, embedders: int = 2, llm: int = 4
) -> Iterator[tuple[Stack, str]]:
    """An embedder, an llm worker (`embedders`, `llm` threads) and one web process on
    `env`, and the API key of a new user named after `label`; stopped on the way out."""
    s = Stack(env=env, logdir=logdir)
    try:
        s.start_worker("embedder", "embed", concurrency=embedders, pool="threads")
        s.start_worker("llm", "llm", concurrency=llm, pool="threads")
        s.start_web(workers=1)
        yield s, create_user(env, f"{label}-{uuid.uuid4().hex[:6]}")
    finally:
        s.stop()
