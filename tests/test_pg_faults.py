"""PostgreSQL restarted under a running stack: exact hits keep flowing (API keys included,
past the web's key caches), and an answer stored while it is down is served and recorded
once it is back.

The restart needs a PostgreSQL of our own: a private cluster (the local initdb and pg_ctl,
as the `postgres` user when we are root, as scripts/services.py does) on a fixed port, so
that it comes back where the stack looks for it. Never the shared server on 5432. Cache and
broker are a private Redis too, so no other test's workers take this stack's tasks.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import redis
import requests

from cache.keys import CacheKey
from cache.keyspace import Keyspace
from tasks.resources import OUTAGE_HOLD_S
from tests.conftest import auth, create_user, nonsense_word, small_stack
from tests.redis_servers import own_redis
from tests.stack import ROOT, Stack, free_port, load_services
from tests.test_faults import MODEL, ask, question
from webapp.migrate import migrate
from webapp.passwords import key_hash

pytestmark = pytest.mark.slow

# The web's key caches, short here: the outage below outlasts both several times over.
KEY_MEMORY_S, KEY_CACHE_S = 1, 2


services = load_services()


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own, on one port for its whole life: stopped and
    started again, it is back at the same address with its data."""

    def __init__(self, base: Path) -> None:
        bindir = services.pg_bindir()
        if bindir is None:
            pytest.skip("PostgreSQL's initdb and pg_ctl are not installed")
        self.bindir: Path = bindir
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        # var/... where the postgres user may enter it, else a directory outside (as root).
        self.data: Path = services.PrivateServices(base, disposable=True).pg_data()
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/flock"

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            services._initdb(self.bindir, self.data, disposable=True)
        out = services._pg_ctl(
            self.bindir, "start", "-D", str(self.data), "-w", "-t", "60",
            "-l", str(self.data / "server.log"), "-o", f"-p {self.port}", check=False,
        )  # fmt: skip
        assert out.returncode == 0, f"{out.stdout}{out.stderr}"

    def stop(self, mode: str = "immediate") -> None:
        """`immediate`: as a crash would, no goodbye to any client and no checkpoint."""
        services._pg_ctl(self.bindir, "stop", "-D", str(self.data), "-m", mode, "-w",
                         check=False)  # fmt: skip

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data.parent if self.data.parent != self.base else self.data,
                      ignore_errors=True)  # fmt: skip
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(ROOT / "var" / "test" / f"pg-faults-{os.getpid()}")
    try:
        server.start()
        server_url = server.url.rsplit("/", 1)[0]
        with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE flock")
        migrate(server.url)
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="module")
def pg_stack(stack_env, private_pg, tmp_path_factory) -> Iterator[tuple[Stack, str]]:
    with own_redis(tmp_path_factory.mktemp("pg-faults-redis")) as cache:
        env = {
            **stack_env,
            "DATABASE_URL": private_pg.url,
            "REDIS_URL": f"{cache.url}/0",
            "CELERY_BROKER_URL": f"{cache.url}/1",
            "API_KEY_MEMORY_S": str(KEY_MEMORY_S),
            "API_KEY_CACHE_S": str(KEY_CACHE_S),
        }
        with small_stack(env, tmp_path_factory.mktemp("pg-faults-logs"), "pgfaults", llm=2) as sk:
            yield sk


@pytest.fixture
def pg_down(private_pg) -> Iterator[PrivatePostgres]:
    """PostgreSQL is started again after the test, however it ends."""
    yield private_pg
    if services._pg_ctl(private_pg.bindir, "status", "-D", str(private_pg.data),
                        check=False).returncode != 0:  # fmt: skip
        private_pg.start()


def _rows(url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def test_known_api_keys_keep_working_on_exact_hits_while_postgres_is_down(pg_stack, pg_down):
    stack, key = pg_stack
    prompt = question()
    first = ask(stack.url, key, "native", prompt, timeout=30)
    assert first.status_code == 200, first.text
    answer = first.json()["message"]["content"]

    # Keys revoked while PostgreSQL is up, each after it worked (and left its last-known
    # copy): one through the API (at once), one in PostgreSQL by hand (once the caches let go
    # of it). Both stay refused through the outage.
    revoked = [create_user(stack.env, f"revoked-{uuid.uuid4().hex[:6]}") for _ in "ab"]
    by_api, by_sql = revoked
    for revoked_key in revoked:
        assert ask(stack.url, revoked_key, "native", prompt, timeout=30).status_code == 200
    listed = requests.get(f"{stack.url}/api/v1/keys", headers=auth(by_api), timeout=10)
    key_id = listed.json()["keys"][0]["id"]
    gone = requests.delete(f"{stack.url}/api/v1/keys/{key_id}", headers=auth(by_api), timeout=10)
    assert gone.status_code == 200, gone.text
    _rows(pg_down.url, "UPDATE api_keys SET revoked_at = now() WHERE key_hash = %s "
          "RETURNING id", key_hash(by_sql))  # fmt: skip
    time.sleep(KEY_MEMORY_S + KEY_CACHE_S + 0.5)
    for revoked_key in revoked:
        refused = ask(stack.url, revoked_key, "native", prompt, timeout=30)
        assert refused.status_code == 401, refused.text

    pg_down.stop()
    stopped = time.monotonic()
    # Hits on every surface for several times the caches' lifetimes, and at least 20 of them
    # (each time the key's caches lapse, one request waits out a connection attempt: 2 s).
    served, slowest = 0, 0.0
    surfaces = ("native", "openai", "ollama")
    while time.monotonic() - stopped < 4 * (KEY_MEMORY_S + KEY_CACHE_S) or served < 20:
        surface = surfaces[served % 3]
        started = time.monotonic()
        resp = ask(stack.url, key, surface, prompt, timeout=30)
        slowest = max(slowest, time.monotonic() - started)
        assert resp.status_code == 200, (surface, resp.text, stack.procs["web"].tail())
        assert resp.headers["X-Cache"] == "exact", surface
        assert answer in resp.text, (surface, resp.text)
        served += 1
        time.sleep(0.2)
    assert slowest < 5, slowest  # at worst a connection wait (2 s), never a 10 s pool timeout
    # A revoked key has no last-known copy: PostgreSQL cannot be asked (the pool waits its
    # 10 s for a connection: both at once), so 503, not 200.
    with ThreadPoolExecutor(2) as pool:
        refusals = list(pool.map(lambda k: ask(stack.url, k, "native", prompt, 30), revoked))
    for refused in refusals:
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "database_unavailable", refused.text

    pg_down.start()
    # Back: new questions are answered again, and the revoked key is refused as soon as the
    # web's pool has reconnected (its backoff may take a few seconds), never let in.
    deadline = time.monotonic() + 60
    while True:
        resp = ask(stack.url, key, "native", question(), timeout=30)
        if resp.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert resp.status_code == 200, resp.text

    def statuses(revoked_key: str) -> list[int]:
        seen: list[int] = []
        while not seen or seen[-1] == 503 and time.monotonic() < deadline:
            seen.append(ask(stack.url, revoked_key, "native", prompt, timeout=30).status_code)
        return seen

    with ThreadPoolExecutor(2) as pool:
        for seen in pool.map(statuses, revoked):
            assert set(seen[:-1]) <= {503} and seen[-1] == 401, seen


def test_an_answer_stored_while_postgres_restarts_is_served_and_recorded(
    pg_stack, pg_down, standin
):
    stack, key = pg_stack
    prompt = question()
    standin.configure(latency_s=2.0)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(ask, stack.url, key, "native", prompt, 40)
        deadline = time.monotonic() + 20
        while standin.calls()["in_flight"] == 0:  # generate has looked PostgreSQL up
            assert time.monotonic() < deadline, stack.procs["llm"].tail()
            time.sleep(0.05)
        pg_down.stop()  # while the LLM answers: the answer's row cannot be written
        first = pending.result()
    standin.configure(latency_s=0)
    assert first.status_code == 200, (first.text, stack.procs["llm"].tail())
    body = first.json()
    assert body["cache"]["status"] == "miss"
    entry_id, content = body["cache"]["entry_id"], body["message"]["content"]
    # Served from Redis while PostgreSQL is still down.
    again = ask(stack.url, key, "native", prompt, timeout=30)
    assert again.status_code == 200, again.text
    assert again.json()["cache"]["status"] == "exact"
    assert again.json()["message"]["content"] == content
    # (The put really waited: had it reached PostgreSQL, this test would test nothing.)
    assert "recorded later" in stack.procs["llm"].log.read_text(errors="replace")
    time.sleep(2)  # the sweepers try (EVICT_INTERVAL_S, 1 s) and fail meanwhile: no matter

    pg_down.start()
    sql = "SELECT response FROM cache_entries WHERE id = %s AND invalidated_at IS NULL"
    deadline = time.monotonic() + 30
    while not _rows(pg_down.url, sql, entry_id) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _rows(pg_down.url, sql, entry_id) == [(content,)], stack.procs["llm"].tail()
    # The request log kept its rows through the outage and wrote them once it was back.
    logged = "SELECT outcome FROM request_log WHERE answer_id = ANY(%s) ORDER BY outcome"
    ids = [body["id"], again.json()["id"]]
    while len(_rows(pg_down.url, logged, ids)) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _rows(pg_down.url, logged, ids) == [("exact",), ("miss",)]
    assert standin.calls()["prompts"].count(prompt) == 1, standin.calls()["prompts"]


def test_a_semantic_match_postgres_cannot_load_is_answered_by_the_llm(pg_stack, pg_down, standin):
    """The index finds a stored question whose Redis copy is gone, and PostgreSQL, which
    would have it, is down: the paraphrase is answered as a miss, not failed. First, after a
    PostgreSQL restart, the workers' pooled connections (dropped by the restart) are replaced
    as they are handed out: the question is stored, indexed and matched at once. (A worker
    that tried PostgreSQL while it was down, a sweeper say, skips it for OUTAGE_HOLD_S: an
    answer given then is recorded, and indexed, by the pending loop a little later; seen
    once as a miss here.)"""
    stack, key = pg_stack
    pg_down.stop()
    pg_down.start()
    time.sleep(OUTAGE_HOLD_S + 0.5)
    t = nonsense_word()
    asked = f"How long should I boil a {t} egg?"
    first = ask(stack.url, key, "native", asked, 30)
    assert first.status_code == 200 and first.json()["cache"]["status"] == "miss", first.text
    hit = ask(stack.url, key, "native", f"How long must I boil a {t} egg?", 30)
    assert hit.json()["cache"]["status"] == "semantic", hit.json()["cache"]  # it matches
    exact = CacheKey.build(MODEL, [{"role": "user", "content": asked}]).exact
    assert redis.Redis.from_url(stack.env["REDIS_URL"]).delete(Keyspace("flock:v1:").resp(exact))

    pg_down.stop()
    reworded = f"How long do I need to boil a {t} egg?"
    resp = ask(stack.url, key, "native", reworded, 30)
    assert resp.status_code == 200, (resp.text, stack.procs["embedder"].tail())
    assert resp.json()["cache"]["status"] == "miss"
    assert reworded in standin.calls()["prompts"]
