"""What Redis holds grows with what it should, and by a bounded amount: N distinct
questions cost about their answers' bytes each, in the key families that hold answers
(docs/DEPLOY.md, "What grows with what")."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
import requests

from cache.keyspace import Keyspace
from settings import current
from tests.conftest import auth, create_user, fresh_namespace, nonsense_word, post_many
from tests.stack import Stack
from webapp import jobs

N = 300
PREFIX = current().flock_key_prefix
# What one answered question may add to Redis beyond its answer's own characters: the
# entry's JSON around it (ids, key, namespace, prompt) and its cached embedding (384
# float32 in a string), plus Redis's overhead per key; for two minutes, its token stream
# (a small stream costs Redis about 4.5 KB whatever it holds). Measured: docs/DEPLOY.md.
OVERHEAD_PER_ENTRY = 4096
STREAM_OVERHEAD = 8192
# Families that may grow with the number of distinct questions; everything else must not.
GROWS = {"resp", "emb", "aliases"}
# One key each whose length is capped, whatever the number of questions: the semantic
# index's change log (trimmed to about 100,000 records, cache/semantic.py).
CAPPED = {"semlog"}
# ... and those that grow with the questions of the last few minutes only: their keys
# expire (seconds at most). A token stream lingers for late joiners (cache/tokens.py).
TRANSIENT = {"stream": 120}


def family(name: bytes) -> str:
    rest = name.decode()[len(PREFIX) :]
    return rest.split(":", 1)[0]


def snapshot(client: redis.Redis) -> tuple[Counter, Counter, dict[str, int]]:
    """Keys and bytes (MEMORY USAGE, every element sampled) by family, Flock's keys only,
    and the longest time to live in each family (-1: a key without one)."""
    keys: Counter = Counter()
    size: Counter = Counter()
    ttl: dict[str, int] = {}
    for name in client.scan_iter(match=f"{PREFIX}*", count=1000):
        used, left = client.memory_usage(name, samples=0), client.ttl(name)
        if used is None or left == -2:  # expired between SCAN and here
            continue
        f = family(name)
        keys[f] += 1
        size[f] += used
        ttl[f] = -1 if -1 in (left, ttl.get(f)) else max(left, ttl.get(f, 0))
    return keys, size, ttl


def test_bytes_per_distinct_question_stay_bounded(stack, redis_client):
    before_keys, before_size, _ = snapshot(redis_client)
    ns = fresh_namespace()
    bodies = [
        {"prompt": f"Who invented the {nonsense_word()} and why is it {nonsense_word()}?", **ns}
        for _ in range(N)
    ]
    answers = post_many(stack.url, bodies, workers=12)
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers if not r.ok][:3]
    answer_chars = sum(len(r.json()["message"]["content"]) for r in answers) / N
    after_keys, after_size, after_ttl = snapshot(redis_client)

    grown = {f: after_keys[f] - before_keys[f] for f in after_keys | before_keys}
    allowed = GROWS | CAPPED | set(TRANSIENT)
    unexpected = {f: n for f, n in grown.items() if n > 2 and f not in allowed}
    assert not unexpected, f"key families that grew with the questions: {unexpected}"
    for f, longest in TRANSIENT.items():
        assert 0 <= after_ttl.get(f, 0) <= longest, (f, after_ttl.get(f))
    assert grown.get("resp", 0) >= N * 0.95  # every question is cached (a few may be hits)
    # A text's vector lives EMBED_CACHE_TTL, not as long as the entries it served.
    assert 0 < after_ttl["emb"] <= current().embed_cache_ttl

    by_family = {f: round((after_size[f] - before_size[f]) / N) for f in after_size}
    lasting = sum(n for f, n in by_family.items() if f in GROWS)
    passing = sum(n for f, n in by_family.items() if f in TRANSIENT)
    print(
        f"\n{N} questions, answers of {answer_chars:.0f} characters: {lasting} bytes each in"
        f" Redis for good, {passing} more for {max(TRANSIENT.values())} s, {by_family['semlog']}"
        f" in the capped change log; by family: {json.dumps(by_family)}"
    )
    assert lasting < answer_chars + OVERHEAD_PER_ENTRY, by_family
    assert passing < answer_chars + STREAM_OVERHEAD, by_family


def wait_done(url: str, job_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = requests.get(f"{url}/api/v1/jobs/{job_id}", headers=auth(), timeout=10).json()
        if body["state"] != "pending" or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_a_job_record_keeps_what_its_poller_needs(stack, standin, redis_client):
    keys = Keyspace(PREFIX)
    standin.configure(latency_s=0.5)
    body = {"prompt": f"Why do {nonsense_word()} hum?", "wait": False, **fresh_namespace()}
    job = requests.post(f"{stack.url}/api/v1/chat", json=body, headers=auth(), timeout=10).json()
    pending = json.loads(redis_client.get(keys.job(job["id"])))
    assert "job" in pending  # what dispatches it again if its worker dies
    assert 0 < redis_client.ttl(keys.job(job["id"])) <= jobs.JOB_PENDING_TTL_S

    done = wait_done(stack.url, job["id"])
    assert done["state"] == "done", done
    record = json.loads(redis_client.get(keys.job(job["id"])))
    assert set(record) == {"user_id", "status", "key", "matched", "entry"}  # no job, no options
    assert record["entry"]["response"] == done["answer"]["message"]["content"]
    assert 0 < redis_client.ttl(keys.job(job["id"])) <= jobs.JOB_DONE_TTL_S
    again = wait_done(stack.url, job["id"])  # the poller reads the same answer again
    assert again["answer"]["message"] == done["answer"]["message"]
    assert again["answer"]["cache"]["status"] == done["answer"]["cache"]["status"] == "miss"

    standin.configure(fail_status=404)
    body = {"prompt": f"Why do {nonsense_word()} hum?", "wait": False, **fresh_namespace()}
    job = requests.post(f"{stack.url}/api/v1/chat", json=body, headers=auth(), timeout=10).json()
    failed = wait_done(stack.url, job["id"])
    assert failed["state"] == "error" and failed["error"]["code"] == "llm_rejected"
    record = json.loads(redis_client.get(keys.job(job["id"])))
    assert set(record) == {"user_id", "error"}
    assert wait_done(stack.url, job["id"])["error"] == failed["error"]


def post_embed(url: str, texts: list[str], key: str | None = None) -> requests.Response:
    return requests.post(
        f"{url}/api/v1/embed", json={"input": texts}, headers=auth(key), timeout=60
    )


def test_embeddings_requests_are_bounded_and_their_results_read_once(stack, redis_client):
    words = [f"{nonsense_word()} {i}" for i in range(64)]
    assert post_embed(stack.url, words).status_code == 200  # EMBED_MAX_TEXTS, the default
    assert not list(redis_client.scan_iter(match=f"{PREFIX}embres:*"))  # deleted once read
    for texts in ([*words, "one more"], ["x" * 2000] * 33):  # 65 texts; 66,000 characters
        resp = post_embed(stack.url, texts)
        assert resp.status_code == 413, resp.text[:300]
        assert resp.json()["error"]["code"] == "too_large"
    resp = requests.post(f"{stack.url}/v1/embeddings", json={"input": [*words, "more"]},
                         headers=auth(), timeout=60)  # fmt: skip
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "too_large"


def other_web(stack_env: dict[str, str], logdir, **env: str) -> Iterator[tuple[Stack, str]]:
    """A web process on the test stack's Redis and workers with settings of its own, and a
    user of its own."""
    web = Stack(env={**stack_env, **env}, logdir=logdir)
    try:
        web.start_web(workers=1)
        yield web, create_user(stack_env, f"other-{uuid.uuid4().hex[:6]}")
    finally:
        web.stop()


@pytest.fixture
def strict_web(stack_env, stack, tmp_path) -> Iterator[tuple[Stack, str]]:
    """Its callers get 20 requests a minute."""
    yield from other_web(stack_env, tmp_path, REQUESTS_PER_MINUTE="20")


@pytest.fixture
def roomy_web(stack_env, stack, tmp_path) -> Iterator[tuple[Stack, str]]:
    """Its prompts may be 200,000 characters long."""
    yield from other_web(stack_env, tmp_path, MAX_PROMPT_CHARS="200000")


def test_a_job_too_large_to_keep_is_refused_before_it_is_dispatched(
    roomy_web, standin, redis_client
):
    web, key = roomy_web
    body = {"prompt": f"{nonsense_word()} " + "a" * 140_000, "wait": False, **fresh_namespace()}
    resp = requests.post(f"{web.url}/api/v1/chat", json=body, headers=auth(key), timeout=30)
    assert resp.status_code == 413, resp.text[:300]
    assert resp.json()["error"]["code"] == "too_large"
    time.sleep(0.5)
    assert standin.calls()["chat"] == 0  # nothing was dispatched


def test_a_large_answer_is_kept_once_a_reference_in_its_job(stack, standin, redis_client):
    keys = Keyspace(PREFIX)
    standin.configure(reply="word " * 60_000)  # 300,000 characters: over JOB_MAX_BYTES
    body = {"prompt": f"Why do {nonsense_word()} hum?", "wait": False, **fresh_namespace()}
    job = requests.post(f"{stack.url}/api/v1/chat", json=body, headers=auth(), timeout=10).json()
    done = wait_done(stack.url, job["id"])
    assert done["state"] == "done", str(done)[:300]
    assert done["answer"]["message"]["content"] == "word " * 60_000
    record = json.loads(redis_client.get(keys.job(job["id"])))
    assert set(record) == {"user_id", "status", "key", "matched"}  # the answer is in resp:
    again = wait_done(stack.url, job["id"])
    assert again["answer"]["message"] == done["answer"]["message"]


def test_each_text_costs_a_token_of_the_rate_limit(strict_web):
    web, key = strict_web
    assert post_embed(web.url, [nonsense_word() for _ in range(15)], key).status_code == 200
    over = post_embed(web.url, [nonsense_word() for _ in range(10)], key)  # ~5 tokens left
    assert over.status_code == 429, over.text[:300]
    assert over.json()["error"]["code"] == "rate_limited" and int(over.headers["Retry-After"]) >= 1
    assert post_embed(web.url, [nonsense_word() for _ in range(4)], key).status_code == 200
