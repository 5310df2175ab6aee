"""The request path end to end: real gunicorn, real Celery workers, real Redis, the
Ollama stand-in over HTTP."""

from __future__ import annotations

import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import LEASE_MS, conversation, post_chat, post_many


def test_burst_of_identical_prompts_makes_one_llm_call(stack, standin, prompt):
    standin.configure(latency_s=1.0)
    responses = post_many(stack.url, [{"prompt": prompt}] * 200)

    assert [r.status_code for r in responses] == [200] * 200
    bodies = [r.json() for r in responses]
    assert len({b["message"]["content"] for b in bodies}) == 1
    assert prompt in bodies[0]["message"]["content"]
    statuses = Counter(b["cache"]["status"] for b in bodies)
    assert statuses["miss"] == 1
    assert set(statuses) <= {"miss", "coalesced", "exact"}
    assert all(
        r.headers["X-Cache"] == b["cache"]["status"] for r, b in zip(responses, bodies, strict=True)
    )
    assert standin.calls()["chat"] == 1

    again = post_many(stack.url, [{"prompt": prompt}] * 50)
    assert {r.json()["cache"]["status"] for r in again} == {"exact"}
    assert {r.json()["message"]["content"] for r in again} == {bodies[0]["message"]["content"]}
    assert standin.calls()["chat"] == 1


def test_whitespace_differences_share_one_entry(stack, standin, prompt):
    first = post_chat(stack.url, {"prompt": prompt}).json()
    second = post_chat(stack.url, {"prompt": f"  {prompt.replace(' ', '   ')}\n"}).json()
    assert second["cache"]["status"] == "exact"
    assert second["message"] == first["message"]
    assert standin.calls()["chat"] == 1


@pytest.mark.parametrize(
    "variant",
    [
        {"model": "smollm2:135m"},
        {"options": {"temperature": 0.2}},
        {"system": "Answer like a pirate."},
        {"history": ["Tell me about Europe.", "Europe is a continent."]},
    ],
    ids=["model", "options", "system", "earlier-turns"],
)
def test_what_changes_the_answer_changes_the_entry(stack, standin, prompt, variant):
    base = post_chat(stack.url, {"prompt": prompt}).json()
    messages = conversation(prompt, variant.get("system"), variant.get("history", []))
    body = {"messages": messages, **{k: variant[k] for k in ("model", "options") if k in variant}}

    other = post_chat(stack.url, body).json()
    assert other["cache"]["status"] == "miss"
    assert other["message"]["content"] != base["message"]["content"]
    assert standin.calls()["chat"] == 2
    assert post_chat(stack.url, body).json()["cache"]["status"] == "exact"
    assert standin.calls()["chat"] == 2


def test_options_that_only_change_speed_share_the_entry(stack, standin, prompt):
    post_chat(stack.url, {"prompt": prompt, "options": {"temperature": 0}})
    again = post_chat(stack.url, {"prompt": prompt, "options": {"temperature": 0, "num_thread": 4}})
    assert again.json()["cache"]["status"] == "exact"
    assert standin.calls()["chat"] == 1


def test_llm_failure_reaches_every_waiter_promptly_and_is_not_cached(stack, standin, prompt):
    standin.configure(fail_status=500, latency_s=0.3)
    started = time.monotonic()
    responses = post_many(stack.url, [{"prompt": prompt}] * 30)
    elapsed = time.monotonic() - started

    assert [r.status_code for r in responses] == [502] * 30
    error = responses[0].json()["error"]
    assert error["code"] == "llm_unavailable"
    assert "500" in error["message"]
    assert elapsed < 15  # the retries' backoff, far below REQUEST_TIMEOUT_S (30 s)
    assert standin.calls()["chat"] == 3  # one call and two retries, for all 30 waiters

    standin.reset()
    ok = post_chat(stack.url, {"prompt": prompt})
    assert ok.status_code == 200
    assert ok.json()["cache"]["status"] == "miss"


def test_transient_failure_is_retried_transparently(stack, standin, prompt):
    standin.configure(fail_status=503, fail_times=1)
    resp = post_chat(stack.url, {"prompt": prompt})
    assert resp.status_code == 200
    assert standin.calls()["chat"] == 2


def test_midstream_error_is_retried(stack, standin, prompt):
    standin.configure(midstream_error="out of memory", fail_times=None)
    resp = post_chat(stack.url, {"prompt": prompt})
    assert resp.status_code == 502
    assert "out of memory" in resp.json()["error"]["message"]
    assert standin.calls()["chat"] == 3


def test_unknown_model_is_a_permanent_error_not_retried(stack, standin, prompt):
    resp = post_chat(stack.url, {"prompt": prompt, "model": "missing-model"})
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == "llm_rejected"
    assert "not found" in resp.json()["error"]["message"]
    assert standin.calls()["chat"] == 1


def test_cache_modes(stack, standin, prompt):
    first = post_chat(stack.url, {"prompt": prompt}).json()
    refreshed = post_chat(stack.url, {"prompt": prompt, "cache": {"mode": "refresh"}}).json()
    assert refreshed["cache"]["status"] == "miss"
    assert refreshed["cache"]["entry_id"] != first["cache"]["entry_id"]
    after = post_chat(stack.url, {"prompt": prompt}).json()
    assert after["cache"]["entry_id"] == refreshed["cache"]["entry_id"]

    bypassed = post_chat(stack.url, {"prompt": prompt, "cache": {"mode": "bypass"}}).json()
    assert bypassed["cache"]["status"] == "miss"
    after = post_chat(stack.url, {"prompt": prompt}).json()
    assert after["cache"]["entry_id"] == refreshed["cache"]["entry_id"]  # bypass stored nothing
    assert standin.calls()["chat"] == 3


@pytest.mark.slow
def test_sigkill_of_the_llm_worker_blocks_nobody(stack, standin, prompt):
    latency = 3.0
    standin.configure(latency_s=latency)
    with ThreadPoolExecutor(max_workers=20) as pool:
        started = time.monotonic()
        futures = [pool.submit(post_chat, stack.url, {"prompt": prompt}) for _ in range(20)]
        deadline = time.monotonic() + 10
        while standin.calls()["in_flight"] == 0:
            assert time.monotonic() < deadline, "the LLM call never started"
            time.sleep(0.05)
        stack.procs["llm"].kill()  # parent and children, no chance to clean up
        stack.start_worker("llm", "llm", concurrency=8, pool="threads")
        responses = [f.result() for f in futures]
        elapsed = time.monotonic() - started

    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.json()["message"]["content"] for r in responses}) == 1
    # The lease lapses, a waiter takes over and the new worker answers: lease + LLM
    # latency (twice: the killed call and the new one) + worker start, not the broker's hour.
    assert elapsed < LEASE_MS / 1000 + 2 * latency + 15
    assert standin.calls()["chat"] == 2


@pytest.mark.slow
def test_sigterm_lets_an_llm_worker_finish_its_generation(stack, standin, prompt):
    """A platform stopping the llm worker (SIGTERM, e.g. a deploy) mid-generation: Celery's
    warm shutdown finishes the running task, so every waiter gets the answer."""
    standin.configure(latency_s=3.0)
    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [pool.submit(post_chat, stack.url, {"prompt": prompt}) for _ in range(10)]
        deadline = time.monotonic() + 10
        while standin.calls()["in_flight"] == 0:
            assert time.monotonic() < deadline, "the LLM call never started"
            time.sleep(0.05)
        worker = stack.procs["llm"]
        worker.kill(signal.SIGTERM)
        responses = [f.result() for f in futures]
    worker.popen.wait(30)  # within the platform's 30 s
    stack.start_worker("llm", "llm", concurrency=8, pool="threads")

    assert [r.status_code for r in responses] == [200] * 10
    assert len({r.json()["message"]["content"] for r in responses}) == 1
    assert standin.calls()["chat"] == 1  # finished, not abandoned and redone
