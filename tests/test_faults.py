"""Faults that must cost no answer and hang nobody: Redis restarted empty, PostgreSQL
out of reach for a worker, a request-log row PostgreSQL refuses, Redis lost mid-stream.

Redis's restart needs a Redis of our own: a private redis-server on a free port (never the
shared 6379) serves as this module's cache and broker, and its stack (web and workers) is
never restarted.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg
import pytest
import redis
import requests

from cache.keyspace import Keyspace
from tests.conftest import (
    LEASE_MS,
    auth,
    conversation,
    create_user,
    nonsense_word,
    small_stack,
)
from tests.redis_servers import RedisServer, own_redis
from tests.stack import Stack, free_port

MODEL = "llama3.2:1b"


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory) -> Iterator[RedisServer]:
    with own_redis(tmp_path_factory.mktemp("private-redis")) as server:
        yield server


@pytest.fixture(scope="module")
def own_stack(stack_env, private_redis, tmp_path_factory) -> Iterator[tuple[Stack, str]]:
    """Web, embedder and llm worker on the private Redis (cache in db 0, broker in db 1)."""
    env = {
        **stack_env,
        "REDIS_URL": f"{private_redis.url}/0",
        "CELERY_BROKER_URL": f"{private_redis.url}/1",
    }
    with small_stack(env, tmp_path_factory.mktemp("faults-logs"), "faults") as stack_and_key:
        yield stack_and_key


def question() -> str:
    return f"How does a {nonsense_word()} {nonsense_word()} keep its {nonsense_word()} warm?"


def ask(url: str, key: str, surface: str, prompt: str, timeout: float) -> requests.Response:
    messages = conversation(prompt)
    path, body = {
        "native": ("/api/v1/chat", {"prompt": prompt}),
        "openai": ("/v1/chat/completions", {"model": MODEL, "messages": messages}),
        "ollama": ("/api/chat", {"model": MODEL, "messages": messages, "stream": False}),
    }[surface]
    return requests.post(f"{url}{path}", json=body, headers=auth(key), timeout=timeout)


def test_redis_restarted_empty_costs_no_answer(own_stack, private_redis, standin):
    stack, key = own_stack
    first = ask(stack.url, key, "native", question(), timeout=30)
    assert first.status_code == 200, first.text

    # Redis dies while a question is being answered (its worker holds a lease and an
    # unacknowledged message), stays away a while, and comes back empty.
    standin.configure(latency_s=1.5)
    pending = ThreadPoolExecutor(1).submit(ask, stack.url, key, "native", question(), 30)
    time.sleep(0.7)
    private_redis.kill()  # -9: no goodbye to any client
    time.sleep(3)
    private_redis.start()  # same port, empty (no persistence)
    pending.exception()  # whatever it got, it got it: an answer or an error
    standin.configure(latency_s=0)

    # Every new question after the restart is answered, at once (a dead pooled connection
    # is retried on a new one), on every surface, within the lease and a margin.
    budget = LEASE_MS / 1000 + 10
    for surface in ("native", "openai", "ollama"):
        started = time.monotonic()
        resp = ask(stack.url, key, surface, question(), timeout=budget)
        elapsed = time.monotonic() - started
        assert resp.status_code == 200, (surface, resp.text, stack.procs["llm"].tail())
        assert elapsed < budget, (surface, elapsed)
    for proc in stack.procs.values():
        assert proc.alive(), proc.name


def _rows(database: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(database) as conn:
        return conn.execute(sql, params).fetchall()


def test_a_row_postgres_refuses_does_not_stop_the_request_log(database):
    """A row PostgreSQL refuses (a NUL: the API refuses such prompts now, but a log must not
    trust its callers) is dropped; the rest of its batch and later batches are written."""
    from psycopg_pool import ConnectionPool

    from webapp.reqlog import RequestLog

    def row(prompt: str) -> dict:
        return {"answer_id": uuid.uuid4().hex, "user_id": None, "model": "m",
                "outcome": "miss", "entry_id": None, "key": None, "prompt": prompt,
                "similarity": None, "latency_ms": 1.0, "tokens_saved": 0,
                "error_code": None}  # fmt: skip

    with ConnectionPool(database, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        reqlog = RequestLog(pool, interval_s=3600)  # flushed by hand below
        rows = [row("fine"), row("a \x00 in it"), row("fine too")]
        for r in rows:
            reqlog._rows.append(r | {"at": datetime.now(UTC)})
        assert reqlog.flush() == 2
        later = row("after the bad one")
        reqlog._rows.append(later | {"at": datetime.now(UTC)})
        assert reqlog.flush() == 1
        assert reqlog.flush() == 0  # nothing kept for a retry
    ids = [rows[0]["answer_id"], rows[2]["answer_id"], later["answer_id"]]
    sql = "SELECT count(*) FROM request_log WHERE answer_id = ANY(%s)"
    assert _rows(database, sql, ids) == [(3,)]


def test_an_answer_postgres_could_not_take_is_served_and_recorded_later(own_stack, database):
    """The llm worker cannot reach PostgreSQL (nothing listens at its DATABASE_URL): the
    answer still reaches the client and Redis, and the embedder's sweeper records it."""
    stack, key = own_stack
    stack.procs["llm"].stop()
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/flock"
    blind = stack.start_worker(
        "llm-nopg", "llm", concurrency=2, pool="threads", extra_env={"DATABASE_URL": nowhere}
    )
    try:
        prompt = question()
        first = ask(stack.url, key, "native", prompt, timeout=30)
        assert first.status_code == 200, (first.text, blind.tail())
        assert first.json()["cache"]["status"] == "miss"
        again = ask(stack.url, key, "native", prompt, timeout=30)
        assert again.json()["cache"]["status"] == "exact"
        assert again.json()["message"] == first.json()["message"]
        # The outage is remembered: the next answer does not wait for PostgreSQL again
        # (a pool timeout before the LLM call and another after it, a second each here).
        started = time.monotonic()
        second = ask(stack.url, key, "native", question(), timeout=30)
        assert second.status_code == 200, second.text
        assert time.monotonic() - started < 1.5
        entry_id = first.json()["cache"]["entry_id"]
        sql = "SELECT response FROM cache_entries WHERE id = %s AND invalidated_at IS NULL"
        deadline = time.monotonic() + 15
        while not _rows(database, sql, entry_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _rows(database, sql, entry_id) == [(first.json()["message"]["content"],)]
    finally:
        blind.stop()
        del stack.procs["llm-nopg"]
        stack.start_worker("llm", "llm", concurrency=4, pool="threads")


class SilentServer:
    """Accepts TCP connections and never answers: a Redis that hangs."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)  # held open, never read or answered

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_a_broker_that_does_not_answer_is_a_503_not_a_hang(
    own_stack, stack_env, private_redis, tmp_path
):
    """The broker accepts connections and never answers: sending the task must fail in
    time (REDIS_TIMEOUT_S; kombu passes no timeout to redis-py unless told), not hang the
    request for good."""
    _, key = own_stack
    silent = SilentServer()
    web = Stack(
        env={
            **stack_env,
            "REDIS_URL": f"{private_redis.url}/0",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{silent.port}/1",
            "REDIS_TIMEOUT_S": "1",
        },
        logdir=tmp_path,
    )
    web.start_web(workers=1)
    try:
        for surface in ("native", "openai", "ollama"):
            started = time.monotonic()
            resp = ask(web.url, key, surface, question(), timeout=30)
            assert resp.status_code == 503, (surface, resp.text)
            assert time.monotonic() - started < 15, surface
    finally:
        web.stop()
        silent.close()


def _stream_events(url: str, key: str, prompt: str, timeout: float) -> list[tuple[str, float]]:
    """(event, arrival time) of a native SSE stream, read until it ends or `timeout`."""
    events = []
    with requests.post(
        f"{url}/api/v1/chat", json={"prompt": prompt, "stream": True}, headers=auth(key),
        stream=True, timeout=timeout,
    ) as resp:  # fmt: skip
        assert resp.status_code == 200, resp.text
        for line in resp.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                events.append((line[7:], time.monotonic()))
    return events


def test_redis_lost_mid_stream_ends_the_stream_with_an_error(own_stack, private_redis, standin):
    """Redis dies while an answer streams: the stream ends with an `error` event in time
    (the relay neither spins nor waits for good), and once Redis is back, streams work."""
    stack, key = own_stack
    standin.configure(tokens=40, token_interval_s=0.25)
    try:
        pending = ThreadPoolExecutor(1).submit(_stream_events, stack.url, key, question(), 60)
        time.sleep(2.0)  # tokens are flowing
        private_redis.kill()
        killed = time.monotonic()
        events = pending.result(timeout=60)
    finally:
        if private_redis.popen is None:
            private_redis.start()
        standin.configure(tokens=12, token_interval_s=0)
    names = [name for name, _ in events]
    assert "delta" in names, names
    assert names[-1] == "error", names
    assert events[-1][1] - killed < 15, events[-1][1] - killed
    assert ask(stack.url, key, "native", question(), timeout=30).status_code in (200, 503)


def test_a_stream_ends_by_its_deadline_when_redis_hangs(
    own_stack, stack_env, private_redis, standin, tmp_path
):
    """Redis stops answering (SIGSTOP: connections stay open) while an answer streams: the
    stream still ends, with an `error` event, by REQUEST_TIMEOUT_S and a grace, not when
    the stuck Redis call gives up (REDIS_TIMEOUT_S, retried)."""
    stack, key = own_stack
    web = Stack(
        env={
            **stack_env,
            "REDIS_URL": f"{private_redis.url}/0",
            "CELERY_BROKER_URL": f"{private_redis.url}/1",
            "REQUEST_TIMEOUT_S": "4",
        },
        logdir=tmp_path,
    )
    web.start_web(workers=1)
    standin.configure(tokens=12, token_interval_s=0.25)
    assert private_redis.popen is not None
    try:
        started = time.monotonic()
        pending = ThreadPoolExecutor(1).submit(_stream_events, web.url, key, question(), 60)
        time.sleep(1.5)  # tokens are flowing
        private_redis.popen.send_signal(signal.SIGSTOP)
        events = pending.result(timeout=60)
    finally:
        private_redis.popen.send_signal(signal.SIGCONT)
        standin.configure(tokens=12, token_interval_s=0)
        web.stop()
    names = [name for name, _ in events]
    assert names[-1] == "error", names
    assert events[-1][1] - started < 4 + 3, events[-1][1] - started


def test_an_embedder_without_postgres_still_answers(own_stack, private_redis):
    """A fresh embedder process cannot reach PostgreSQL, and Redis lost the namespaces'
    thresholds: it cannot load its index nor the thresholds, yet the question is answered
    (a miss: the strictest bar, no semantic match), not failed."""
    stack, key = own_stack
    stack.procs["embedder"].stop()
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/flock"
    blind = stack.start_worker(
        "embedder-nopg", "embed", concurrency=2, pool="threads",
        extra_env={"DATABASE_URL": nowhere},
    )  # fmt: skip
    try:
        cache = redis.Redis.from_url(f"{private_redis.url}/0")
        ks = Keyspace(stack.env.get("FLOCK_KEY_PREFIX", "flock:v1:"))
        cache.delete(ks.nsthreshold, ks.scorethreshold)  # as a Redis that lost them
        resp = ask(stack.url, key, "native", question(), timeout=30)
        assert resp.status_code == 200, (resp.text, blind.tail())
        assert resp.json()["cache"]["status"] == "miss"
    finally:
        blind.stop()
        del stack.procs["embedder-nopg"]
        stack.start_worker("embedder", "embed", concurrency=2, pool="threads")


def test_wake_ups_redis_refuses_are_a_503(stack_env, tmp_path):
    """A Redis that answers commands but refuses PSUBSCRIBE (renamed away, as an ACL
    without pub/sub would): the request waits for the subscription, then gets a 503 like
    any Redis fault, not a 500."""
    server = RedisServer(tmp_path)
    server.start("--rename-command", "PSUBSCRIBE", "")
    web = Stack(
        env={**stack_env, "REDIS_URL": f"{server.url}/0", "CELERY_BROKER_URL": f"{server.url}/1"},
        logdir=tmp_path,
    )
    try:
        web.start_web(workers=1)
        key = create_user(web.env, f"nopubsub-{uuid.uuid4().hex[:6]}")
        resp = ask(web.url, key, "native", question(), timeout=30)
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"]["code"] == "redis_unavailable"
    finally:
        web.stop()
        server.kill()
