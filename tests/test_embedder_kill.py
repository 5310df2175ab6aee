"""SIGKILL of the embedder (the worker of queue `embed`, which runs every question's
`answer` task) while it holds tasks, under concurrent requests: nothing hangs, every
waiter gets an answer or a clear JSON error in time, and once a new embedder runs the same
questions are answered, each with one LLM call. Without any embedder for longer than a
request may wait, the waiters get a 504 in time, and the questions are answered once one
is back.

"Mid-task" is made sure of, not hoped for: the embedder is frozen (SIGSTOP) the moment
the broker shows it holding an `answer` message it has not acknowledged (tasks are
acks_late: acknowledged when they return), then killed. Cache and broker are a private
Redis, so no other test's workers take this stack's tasks.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import psycopg
import pytest
import redis
import requests

from tests.conftest import LEASE_MS, auth, fresh_namespace, small_stack
from tests.redis_servers import RedisServer, own_redis
from tests.sse import stream_chat
from tests.stack import Stack
from tests.test_faults import question

pytestmark = pytest.mark.slow

QUESTIONS, ASKERS = 6, 3  # each wave: 6 new questions, each asked by 3 clients at once
TIMEOUT_S = 30  # the stack's REQUEST_TIMEOUT_S (tests/conftest.py)


@pytest.fixture(scope="module")
def kill_stack(stack_env, tmp_path_factory) -> Iterator[tuple[Stack, str, RedisServer]]:
    with own_redis(tmp_path_factory.mktemp("kill-redis")) as server:
        env = {**stack_env, "REDIS_URL": f"{server.url}/0", "CELERY_BROKER_URL": f"{server.url}/1"}
        with small_stack(env, tmp_path_factory.mktemp("kill-logs"), "kill") as (s, key):
            yield s, key, server


def _ask(url: str, key: str, body: dict) -> tuple[int, dict, float]:
    """(status, JSON body, seconds taken); a reply that is not JSON fails the test. A
    streamed one (`"stream": true`) ends with a `done` event (the answer body: 200) or an
    `error` event (its body; status 0, the stream having begun with a 200)."""
    started = time.monotonic()
    if body.get("stream"):
        last, data, _ = stream_chat(url, body, auth(key), timeout=90)[-1]
        assert last in ("done", "error"), last
        return (200 if last == "done" else 0), data, time.monotonic() - started
    resp = requests.post(f"{url}/api/v1/chat", json=body, headers=auth(key), timeout=90)
    return resp.status_code, resp.json(), time.monotonic() - started


def _held_answers(broker: redis.Redis) -> int:
    """`answer` messages a worker took from the queue and has not acknowledged yet
    (kombu's `unacked` hash: [message, exchange, routing key] per delivery tag)."""
    held = broker.hvals("unacked")
    return sum(1 for raw in held if json.loads(raw)[2] == "embed")


def test_sigkill_of_the_embedder_mid_task_loses_no_question(kill_stack, standin):
    stack, key, server = kill_stack
    warm = _ask(stack.url, key, {"prompt": question(), **fresh_namespace()})
    assert warm[0] == 200, warm
    standin.reset()
    standin.configure(latency_s=0.5)  # answers take a while: waiters pile up
    broker = redis.Redis.from_url(f"{server.url}/1")
    embedder = stack.procs["embedder"]
    bodies: list[dict] = []
    futures: list[tuple[dict, Future]] = []
    pool = ThreadPoolExecutor(QUESTIONS * ASKERS * 5)
    caught = False
    try:
        for _wave in range(5):
            wave = [{"prompt": question(), **fresh_namespace()} for _ in range(QUESTIONS)]
            bodies += wave
            # The last asker of each question streams: waiters of both kinds.
            askers = wave * (ASKERS - 1) + [{**b, "stream": True} for b in wave]
            futures += [(b, pool.submit(_ask, stack.url, key, b)) for b in askers]
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not _held_answers(broker):
                time.sleep(0.001)
            embedder.kill(signal.SIGSTOP)
            if _held_answers(broker):  # still held once frozen: it dies holding them
                caught = True
                break
            embedder.kill(signal.SIGCONT)  # missed it (the tasks were quick): another wave
        assert caught, "the embedder never held an answer task long enough to be killed"
        embedder.kill(signal.SIGKILL)
        embedder.popen.wait(10)
        killed = time.monotonic()
        stack.start_worker("embedder", "embed", concurrency=2, pool="threads")
        restarted = time.monotonic() - killed
        results = [(b, f.result(timeout=TIMEOUT_S + 60)) for b, f in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        standin.configure(latency_s=0)

    # Every waiter got an answer or a clear JSON error, in time: about a lease (a lost
    # attempt is taken over when its lease lapses) after the new embedder is up.
    for _, (status, reply, took) in results:
        assert took < restarted + LEASE_MS / 1000 + 10, (took, restarted, reply)
        if status == 200:
            assert reply["message"]["content"], reply
        else:
            assert status in (0, 502, 503, 504), (status, reply)
            assert reply["error"]["code"] and reply["error"]["message"], reply
    answered = [r for _, r in results if r[0] == 200]
    assert len(answered) == len(results), (
        [r for _, r in results if r[0] != 200],
        restarted,
        stack.procs["embedder"].tail(),
    )
    # Waiters of one question got one answer.
    by_prompt: dict[str, set[str]] = {}
    for body, (_, reply, _) in results:
        by_prompt.setdefault(body["prompt"], set()).add(reply["message"]["content"])
    assert all(len(answers) == 1 for answers in by_prompt.values()), by_prompt

    # With the new embedder, every question is answered again: from the cache, since no
    # entry was lost (each has its row in PostgreSQL), and each cost one LLM call in all.
    entries = []
    for body in bodies:
        status, reply, _ = _ask(stack.url, key, body)
        assert status == 200, reply
        assert reply["cache"]["status"] == "exact", reply["cache"]
        assert {reply["message"]["content"]} == by_prompt[body["prompt"]]
        entries.append(reply["cache"]["entry_id"])
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        sql = "SELECT count(*) FROM cache_entries WHERE id = ANY(%s) AND invalidated_at IS NULL"
        assert conn.execute(sql, (entries,)).fetchone() == (len(bodies),)
    prompts = standin.calls()["prompts"]
    assert sorted(prompts) == sorted(b["prompt"] for b in bodies), prompts


def test_without_an_embedder_waiters_get_a_504_in_time_then_answers(kill_stack, standin, tmp_path):
    """No embedder at all for longer than REQUEST_TIMEOUT_S (4 s on a web of its own): every
    waiter gets a 504 `timeout` in time, never a hang. The attempts its waiters dispatched
    stay queued; once an embedder is back, the same questions are answered, one LLM call
    each (the queued duplicates step aside)."""
    stack, key, server = kill_stack
    broker = redis.Redis.from_url(f"{server.url}/1")
    web = Stack(env={**stack.env, "REQUEST_TIMEOUT_S": "4"}, logdir=tmp_path)
    web.start_web(workers=1)
    stack.procs["embedder"].kill(signal.SIGKILL)
    stack.procs["embedder"].popen.wait(10)
    dead = set(broker.hkeys("unacked"))
    bodies = [{"prompt": question(), **fresh_namespace()} for _ in range(3)]
    try:
        with ThreadPoolExecutor(len(bodies) * ASKERS) as pool:
            results = list(pool.map(lambda b: _ask(web.url, key, b), bodies * ASKERS))
    finally:
        web.stop()
        stack.start_worker("embedder", "embed", concurrency=2, pool="threads")
    for status, reply, took in results:
        assert status == 504, reply
        assert reply["error"]["code"] == "timeout", reply
        assert took < 4 + 3, took
    for body in bodies:
        status, reply, _ = _ask(stack.url, key, body)
        assert status == 200, reply
    # Every attempt dispatched meanwhile has run (a duplicate would call the LLM again).
    # (What a killed worker held stays in `unacked` for the visibility timeout: not ours.)
    deadline = time.monotonic() + 30
    while broker.llen("embed") or broker.llen("llm") or set(broker.hkeys("unacked")) - dead:
        assert time.monotonic() < deadline, "the queues do not drain"
        time.sleep(0.1)
    time.sleep(0.5)  # the last one's `generate`, if any, reaches the stand-in
    prompts = standin.calls()["prompts"]
    assert sorted(prompts) == sorted(b["prompt"] for b in bodies), prompts
