"""Fixtures: the Ollama stand-in, the test's own Redis databases, a running stack.

Tests own two Redis database numbers (FLOCK_TEST_REDIS_DB, default 11, for the
cache; the next one for the Celery broker) and flush only those.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from tests.ollama_standin import StandIn
from tests.stack import Stack

REDIS_BASE = os.environ.get("FLOCK_TEST_REDIS", "redis://127.0.0.1:6379")
CACHE_DB = int(os.environ.get("FLOCK_TEST_REDIS_DB", "11"))
CACHE_URL = f"{REDIS_BASE}/{CACHE_DB}"
BROKER_URL = f"{REDIS_BASE}/{CACHE_DB + 1}"
LEASE_MS = 3000


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
def stack_env(standin: StandIn) -> dict[str, str]:
    return {
        "REDIS_URL": CACHE_URL,
        "CELERY_BROKER_URL": BROKER_URL,
        "OLLAMA_URL": standin.url,
        "OLLAMA_MODEL": "llama3.2:1b",
        "LOCK_LEASE_MS": str(LEASE_MS),
        "REQUEST_TIMEOUT_S": "30",
        "LLM_MAX_RETRIES": "2",
        "LLM_RETRY_BACKOFF_S": "0.2",
        "MAX_PROMPT_CHARS": "2000",
    }


@pytest.fixture(scope="session")
def stack(stack_env, redis_client, tmp_path_factory) -> Iterator[Stack]:
    s = Stack(env=stack_env, logdir=tmp_path_factory.mktemp("stack-logs"))
    try:
        s.start_default()
        yield s
    finally:
        s.stop()


@pytest.fixture(autouse=True)
def _fresh_standin(request) -> None:
    if "standin" in request.fixturenames:
        request.getfixturevalue("standin").reset()


@pytest.fixture
def prompt() -> str:
    """A question nobody has asked yet in this run."""
    return f"What is the capital of country number {uuid.uuid4().hex[:8]}?"


def post_chat(url: str, body: dict, timeout: float = 60) -> requests.Response:
    return requests.post(f"{url}/api/v1/chat", json=body, timeout=timeout)


def post_many(url: str, bodies: list[dict], workers: int | None = None) -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=workers or len(bodies)) as pool:
        return list(pool.map(lambda b: post_chat(url, b), bodies))
