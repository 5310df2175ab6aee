"""Asynchronous jobs and the embeddings service, against the running stack."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests

from tests.conftest import auth, create_user, fresh_namespace


def wait_done(url: str, job_id: str, key: str | None = None, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = requests.get(f"{url}/api/v1/jobs/{job_id}", headers=auth(key), timeout=10).json()
        if body["state"] != "pending" or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_async_submit_then_poll(stack, standin):
    standin.configure(latency_s=1.0)
    body = {"prompt": "Explain how tides work.", "wait": False, **fresh_namespace()}
    started = time.monotonic()
    a = requests.post(f"{stack.url}/api/v1/chat", json=body, headers=auth(), timeout=10)
    b = requests.post(f"{stack.url}/api/v1/chat", json=body, headers=auth(), timeout=10)
    assert time.monotonic() - started < 1.0  # answered at once, before the LLM
    assert (a.status_code, b.status_code) == (202, 202)
    assert a.json()["state"] == "pending"
    first, second = wait_done(stack.url, a.json()["id"]), wait_done(stack.url, b.json()["id"])
    assert first["state"] == second["state"] == "done"
    assert first["answer"]["message"] == second["answer"]["message"]
    assert sorted([first["answer"]["cache"]["status"], second["answer"]["cache"]["status"]]) == [
        "coalesced", "miss"
    ]  # fmt: skip
    assert standin.calls()["chat"] == 1  # two async submits, one LLM call


def test_async_errors_and_other_users_jobs(stack, standin, stack_env):
    standin.configure(fail_status=404)
    body = {"prompt": "Will the async job fail?", "wait": False, **fresh_namespace()}
    job = requests.post(f"{stack.url}/api/v1/chat", json=body, headers=auth(), timeout=10).json()
    failed = wait_done(stack.url, job["id"])
    assert failed["state"] == "error" and failed["error"]["code"] == "llm_rejected"
    other = create_user(stack_env, f"frank-{uuid.uuid4().hex[:6]}")
    resp = requests.get(f"{stack.url}/api/v1/jobs/{job['id']}", headers=auth(other), timeout=10)
    assert resp.status_code == 404


def test_embeddings_on_three_surfaces_share_vectors_and_the_cache(stack):
    text = f"Embeddings of {uuid.uuid4().hex} are computed once."
    native = requests.post(
        f"{stack.url}/api/v1/embed", json={"input": [text]}, headers=auth(), timeout=60
    ).json()
    assert native["computed"] == 1
    vector = np.array(native["embeddings"][0])
    assert vector.shape == (384,)
    assert abs(np.linalg.norm(vector) - 1) < 1e-3

    ollama = requests.post(
        f"{stack.url}/api/embed", json={"model": "all-minilm", "input": text}, headers=auth()
    ).json()
    openai = requests.post(
        f"{stack.url}/v1/embeddings", json={"model": "text-embedding", "input": [text]},
        headers=auth(),
    ).json()  # fmt: skip
    np.testing.assert_allclose(ollama["embeddings"][0], vector, rtol=1e-6)
    np.testing.assert_allclose(openai["data"][0]["embedding"], vector, rtol=1e-6)
    assert openai["object"] == "list" and openai["data"][0]["object"] == "embedding"

    again = requests.post(
        f"{stack.url}/api/v1/embed", json={"input": [text, "and one more"]}, headers=auth()
    ).json()
    assert again["computed"] == 1  # only the new text reached the model


def test_embed_bad_input(stack):
    for body in ({}, {"input": []}, {"input": [1]}, {"input": 3}):
        resp = requests.post(f"{stack.url}/api/v1/embed", json=body, headers=auth(), timeout=10)
        assert resp.status_code == 400
        assert resp.json()["error"]["code"] == "bad_request"


def test_a_backlog_of_embeddings_does_not_hold_a_question(stack, standin):
    """Embeddings have a queue of their own on the same embedders, which alternate between
    their queues: a question asked behind 24 requests of 64 new texts each is answered
    while most of them still wait (with one FIFO queue it would wait behind all of them)."""
    standin.configure(latency_s=0)

    def embed(i: int) -> float:
        texts = [f"backlog {uuid.uuid4().hex} text {i} {j} about nothing at all" for j in range(64)]
        resp = requests.post(f"{stack.url}/api/v1/embed", json={"input": texts}, headers=auth(),
                             timeout=120)  # fmt: skip
        assert resp.status_code == 200, resp.text
        return time.monotonic()

    with ThreadPoolExecutor(24) as pool:
        backlog = [pool.submit(embed, i) for i in range(24)]
        time.sleep(0.5)  # the embedders' queues fill up
        body = {"prompt": f"Is the {uuid.uuid4().hex[:8]} queue fair?", **fresh_namespace()}
        resp = requests.post(f"{stack.url}/api/v1/chat", json=body, headers=auth(), timeout=60)
        answered = time.monotonic()
        done = [f.result() for f in backlog]
    assert resp.status_code == 200, resp.text
    assert sum(t < answered for t in done) < len(done) / 2, (answered, sorted(done))
