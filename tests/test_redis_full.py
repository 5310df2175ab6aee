"""A full Redis (maxmemory reached under `noeviction`, which docs/DEPLOY.md recommends)
refuses every write: Flock answers 503 `redis_unavailable` in each API's error shape, never
a 500, and answers again once Redis has room. Exact hits are reads: they are served all the
while, although Redis refuses their rate-limit token's write (the limit fails open for
them, counted). On a private redis-server of the test's own: its maxmemory is the whole
server's."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from cache import Keyspace
from cache.ratelimit import RateLimiter
from tests.conftest import ops, small_stack
from tests.redis_servers import RedisServer, own_redis
from tests.stack import Stack
from tests.test_faults import ask, question


@pytest.fixture(scope="module")
def full_redis(tmp_path_factory) -> Iterator[RedisServer]:
    with own_redis(tmp_path_factory.mktemp("full-redis"), "--maxmemory-policy", "noeviction") as s:
        yield s


@pytest.fixture(scope="module")
def full_stack(stack_env, full_redis, tmp_path_factory) -> Iterator[tuple[Stack, str]]:
    env = {
        **stack_env,
        "REDIS_URL": f"{full_redis.url}/0",
        "CELERY_BROKER_URL": f"{full_redis.url}/1",
    }
    with small_stack(env, tmp_path_factory.mktemp("full-logs"), "full", embedders=1, llm=2) as sk:
        yield sk


def _failed_open(url: str) -> float:
    """flock_ratelimit_failed_open_total of the web process (one worker: its own count)."""
    text = requests.get(f"{url}/metrics", headers=ops(), timeout=10).text
    values = [line.split()[-1] for line in text.splitlines()
              if line.startswith("flock_ratelimit_failed_open_total ")]  # fmt: skip
    return float(values[0]) if values else 0.0


def test_a_full_redis_is_a_503_then_answers_again(full_stack, full_redis, standin):
    stack, key = full_stack
    known = question()
    first = ask(stack.url, key, "native", known, timeout=30)
    assert first.status_code == 200, first.text[:300]
    answer = first.json()["message"]["content"]
    refused_before = _failed_open(stack.url)
    admin = redis.Redis(port=full_redis.port)
    # Redis fills up while a question is being answered: its worker cannot store the
    # answer, nor acknowledge its task (the broker is in the same Redis).
    standin.configure(latency_s=1.5)
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(ask, stack.url, key, "native", question(), 40)
        time.sleep(0.8)
        admin.config_set("maxmemory", "1")  # below what it holds: every write is refused
        try:
            for surface in ("native", "openai", "ollama"):
                resp = ask(stack.url, key, surface, question(), timeout=30)
                assert resp.status_code == 503, (surface, resp.status_code, resp.text[:300])
                error = resp.json()["error"]
                if surface == "ollama":
                    assert isinstance(error, str) and "full" in error, resp.text
                else:
                    assert error["code"] == "redis_unavailable", resp.text
                    assert "full" in error["message"], resp.text
            # A question answered before is an exact hit on every surface: a read, served
            # although its rate-limit token could not be written.
            for surface in ("native", "openai", "ollama"):
                resp = ask(stack.url, key, surface, known, timeout=30)
                assert resp.status_code == 200, (surface, resp.status_code, resp.text[:300])
                assert resp.headers["X-Cache"] == "exact", surface
                assert answer in resp.text, (surface, resp.text[:300])
            assert _failed_open(stack.url) - refused_before >= 3
            caught = in_flight.result()
            assert caught.status_code != 500, caught.text[:300]
            assert caught.status_code == 200 or "error" in caught.json(), caught.text[:300]
        finally:
            admin.config_set("maxmemory", "0")
    standin.configure(latency_s=0)
    # Every process is still there and answers: a new question needs the web, the
    # embedder and the llm worker.
    again = ask(stack.url, key, "native", question(), timeout=30)
    assert again.status_code == 200, again.text[:300]
    assert all(proc.alive() for proc in stack.procs.values())


def test_a_full_redis_fails_the_rate_limit_open_for_reads_only(full_redis):
    """On the limiter itself: with a read riding along (an exact hit's admission) a refused
    bucket write lets the request through, counted; a limit that guards only itself
    (sign-in, feedback, embeddings) still fails, as every refused write does."""
    client = redis.Redis(port=full_redis.port, db=2)
    keys = Keyspace(f"ratelimit-{uuid.uuid4().hex[:6]}:")
    counted: list[int] = []
    limiter = RateLimiter(client, keys, per_minute=2, on_refused_write=lambda: counted.append(1))
    client.set(keys.resp("k"), "cached")
    assert limiter.take_and_get("spent", None, cost=2) == (0.0, None)  # its bucket is empty now
    client.config_set("maxmemory", "1")
    try:
        for _ in range(3):  # a refused write takes nothing: the bucket never runs dry
            assert limiter.take_and_get("fresh", keys.resp("k")) == (0.0, b"cached")
        assert len(counted) == limiter.refused_writes == 3
        # The bucket as it was last written still says no: fail open is not "no limit".
        wait_s, value = limiter.take_and_get("spent", keys.resp("k"))
        assert wait_s > 0 and value == b"cached"
        with pytest.raises(redis.OutOfMemoryError):
            limiter.take("fresh")
    finally:
        client.config_set("maxmemory", "0")
        client.flushdb()
