"""The embedded backend (SmolLM2-135M run by xllamacpp inside the llm worker) answers a
real question through the whole stack: what `make run` gives on a machine without Ollama."""

from __future__ import annotations

import uuid

import pytest
import redis

from tests.conftest import CACHE_DB, REDIS_BASE, create_user, post_chat
from tests.stack import Stack

BROKER_DB = CACHE_DB - 1  # a broker of its own: the session's llm worker must not take these


@pytest.mark.slow
def test_the_embedded_model_answers_through_the_whole_stack(stack_env, database, tmp_path):
    env = {
        **stack_env,
        "LLM_BACKEND": "embedded",
        "OLLAMA_MODEL": "smollm2:135m",
        "OLLAMA_URL": "http://127.0.0.1:9",  # nothing there: nothing may reach it
        "FLOCK_KEY_PREFIX": "flock:embedded-test:",
        "CELERY_BROKER_URL": f"{REDIS_BASE}/{BROKER_DB}",
        "REQUEST_TIMEOUT_S": "120",
        "LOCK_LEASE_MS": "10000",
    }
    broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    broker.flushdb()
    embedded = Stack(env=env, logdir=tmp_path)
    try:
        embedded.start_worker("embedder", "embed", concurrency=1)
        embedded.start_worker("llm", "llm", concurrency=1, pool="threads")
        embedded.start_web(workers=1)
        key = create_user(env, f"embedded-{uuid.uuid4().hex[:6]}")
        body = {"prompt": "What is the capital of France?", "options": {"num_predict": 24}}
        first = post_chat(embedded.url, body, timeout=180, key=key)
        assert first.status_code == 200, first.text
        answer = first.json()
        assert answer["cache"]["status"] == "miss"
        assert answer["model"] == "smollm2:135m"
        assert answer["message"]["content"].strip()
        assert answer["usage"]["completion_tokens"] > 0
        again = post_chat(embedded.url, body, key=key).json()
        assert again["cache"]["status"] == "exact"
        assert again["message"] == answer["message"]
    finally:
        embedded.stop()
        broker.flushdb()
