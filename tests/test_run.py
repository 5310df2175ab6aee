"""`make run` from a fresh copy of the repository, and scripts/services.py.

The slow tests run the real `make run` in a temporary copy, against an Ollama stand-in:
once where no Redis or PostgreSQL answers (private ones start under var/ and are gone
after a Ctrl-C), once against answering servers (none is started). Either way a question
gets its answer through web, embedder and llm, and stopping make leaves nothing running.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
import requests

from tests.conftest import CACHE_DB, PG_SERVER, REDIS_BASE
from tests.ollama_standin import StandIn
from tests.stack import ROOT, free_port, load_services

services = load_services()

# Settings a developer's shell (or an outer `make test`) may carry that must not leak into
# the `make run` under test.
_NOT_INHERITED = {
    "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "REDIS_URL", "CELERY_BROKER_URL", "DATABASE_URL",
    "SECRET_KEY", "FLOWER_BASIC_AUTH", "PORT", "FLOWER_PORT", "LLM_BACKEND",
    "FLOCK_TEST_REDIS", "FLOCK_TEST_PG",
}  # fmt: skip


# --- scripts/services.py, in-process ------------------------------------------------------


def test_missing_binaries_fail_before_starting_anything(monkeypatch, tmp_path):
    monkeypatch.setattr(services.shutil, "which", lambda name: None)
    monkeypatch.setattr(services, "PG_BIN_GLOBS", [])
    dead = f"127.0.0.1:{free_port()}"
    env = {"REDIS_URL": f"redis://{dead}/0", "DATABASE_URL": f"postgresql://u@{dead}/flock"}

    with pytest.raises(services.ServiceError) as error:
        services.PrivateServices(tmp_path / "var").ensure(env, tests=False)

    message = str(error.value)
    for hint in ("apt-get install redis-server", "brew install redis", "apt-get install postgresql",
                 "brew install postgresql@15"):  # fmt: skip
        assert hint in message
    assert not (tmp_path / "var").exists()


def test_answering_servers_are_used_as_they_are(tmp_path):
    env = {"FLOCK_TEST_REDIS": REDIS_BASE, "FLOCK_TEST_PG": PG_SERVER}

    with services.PrivateServices(tmp_path / "var") as private:
        exports = private.ensure(env, tests=True)

    assert exports == {}
    assert not (tmp_path / "var").exists()


# --- the real `make run` ------------------------------------------------------------------


@pytest.fixture
def repo_copy() -> Iterator[Path]:
    """The repository's files in a fresh directory, sharing this checkout's .venv."""
    # Not pytest's tmp_path: its directories are private (0700), and as root the private
    # PostgreSQL runs as the postgres user, which must reach var/pg.
    copy = Path(tempfile.mkdtemp(prefix="flock-run-")).resolve()
    copy.chmod(0o755)
    try:
        _copy_tracked_files(copy)
        # The copy's .venv is this one; a fresh stamp makes `make install` a no-op (the tests
        # run from this .venv, so it is installed). Copies keep their mtimes, so
        # requirements.txt is not newer than the stamp unless it is here too.
        (copy / ".venv").symlink_to(ROOT / ".venv")
        stamp = copy / ".venv" / ".installed"
        requirements = ROOT / "requirements.txt"
        if not stamp.exists() or stamp.stat().st_mtime < requirements.stat().st_mtime:
            stamp.touch()
        yield copy
    finally:
        _kill_processes_in(copy)  # only after a failure: a passing test checked there are none
        shutil.rmtree(copy, ignore_errors=True)


def _copy_tracked_files(dest: Path) -> None:
    """What a fresh clone has, plus untracked files not ignored (work in progress)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    for name in listed.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():  # deleted in the worktree: not there
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _processes_in(path: Path) -> list[str]:
    """Processes whose working directory or arguments are inside `path`."""
    found = []
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True)
    for line in ps.stdout.splitlines():
        pid, _, args = line.strip().partition(" ")
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")  # Linux; elsewhere the arguments must do
        except OSError:
            cwd = ""
        if int(pid) != os.getpid() and (str(path) in args or Path(cwd).is_relative_to(path)):
            found.append(f"{pid} (cwd {cwd}) {args}")
    return found


def _kill_processes_in(path: Path) -> None:
    for line in _processes_in(path):
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass


class MakeRun:
    """`make run` in its own process group, as a terminal would run it."""

    def __init__(self, copy: Path, env: dict[str, str], log: str = "make-run.log") -> None:
        self.copy = copy
        self.url = f"http://127.0.0.1:{env['PORT']}"
        self.log = copy / log
        base = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        with open(self.log, "wb") as out:
            self.popen = subprocess.Popen(
                ["make", "run"], cwd=copy, env={**base, **env},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, ready, what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.popen.poll() is None, f"make run exited before {what}:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {what} after {timeout}s:\n{self.output()}"
            time.sleep(0.2)

    def api_key(self) -> str:
        first_run = self.copy / "var" / "first-run.txt"
        self.wait_for(lambda: "api_key:" in _read(first_run), "var/first-run.txt")
        assert first_run.stat().st_mode & 0o777 == 0o600
        return _read(first_run).split("api_key:")[1].split()[0]

    def ask(self, prompt: str) -> requests.Response:
        key = self.api_key()
        self.wait_for(lambda: _answers(f"{self.url}/healthz"), "web")
        # The embedder may still be loading its model: the task waits in the queue for it.
        return requests.post(
            f"{self.url}/api/v1/chat", json={"prompt": prompt},
            headers={"Authorization": f"Bearer {key}"}, timeout=120,
        )  # fmt: skip

    def stop(self, sig: signal.Signals) -> None:
        """Signal make's whole process group (Ctrl-C does this) and wait for make to end."""
        os.killpg(self.popen.pid, sig)
        try:
            self.popen.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            pytest.fail(f"make run still running 60s after {sig.name}:\n{self.output()}")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def _run_env(standin: StandIn, **settings: str) -> dict[str, str]:
    return {
        "PORT": str(free_port()),
        "FLOWER_PORT": str(free_port()),
        "OLLAMA_URL": standin.url,
        # The embedding model's ONNX export, built once in this checkout: not again per copy.
        "EMBED_CACHE_DIR": str(ROOT / "var" / "models"),
        # Fewer processes start faster on a small machine.
        "WEB_CONCURRENCY": "1",
        "EMBED_CONCURRENCY": "1",
        "LLM_CONCURRENCY": "2",
        **settings,
    }


@pytest.mark.slow
def test_make_run_starts_private_servers_and_ctrl_c_stops_everything(repo_copy, standin):
    dead_redis, dead_pg = free_port(), free_port()
    env = _run_env(
        standin,
        REDIS_URL=f"redis://127.0.0.1:{dead_redis}/0",
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:{dead_pg}/flock",
    )
    run = MakeRun(repo_copy, env)
    try:
        key = run.api_key()
        answer = run.ask("Why is the sky blue?")
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Cache"] == "miss"
        assert answer.json()["message"]["content"]
        assert standin.calls()["chat"] == 1
        running = "\n".join(_processes_in(repo_copy))
        assert "redis-server" in running and "postgres" in running
    finally:
        run.stop(signal.SIGINT)

    output = run.output()
    assert "Traceback" not in output  # stopping is quiet (no psycopg_pool thread complaining)
    assert "started a private Redis" in output and "started a private PostgreSQL" in output
    assert "development-only" in output and "Created the admin user" in output
    assert "ollama at" in output
    assert "stopped the private PostgreSQL" in output and "stopped the private Redis" in output
    assert _processes_in(repo_copy) == []

    # A second run reuses it all: the private PostgreSQL's data, hence the admin's API key.
    again = MakeRun(repo_copy, env, log="make-run-2.log")
    try:
        again.wait_for(lambda: _answers(f"{again.url}/healthz"), "web")
        me = requests.get(
            f"{again.url}/api/v1/auth/me", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        assert me.status_code == 200, me.text
        assert me.json()["user"]["name"] == "admin"
    finally:
        again.stop(signal.SIGTERM)
    output = again.output()
    assert "Traceback" not in output
    assert "Created the admin user" not in output and "var/first-run.txt" in output
    assert "migrations: 0 applied" in output
    assert _processes_in(repo_copy) == []


@pytest.fixture
def throwaway_database() -> Iterator[str]:
    name = f"flock_run_{os.getpid()}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_SERVER}/{name}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# A Redis database no test session uses, one per trio conftest.py may claim (10-12, 7-9,
# 4-6), so that concurrent sessions each have their own: 13 by default.
SPARE_REDIS_DB = {11: 13, 8: 14, 5: 15}


@pytest.fixture
def spare_redis_db() -> Iterator[str]:
    if CACHE_DB not in SPARE_REDIS_DB:
        pytest.skip(f"no spare Redis database next to the suite's ({CACHE_DB})")
    url = f"{REDIS_BASE}/{SPARE_REDIS_DB[CACHE_DB]}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.mark.slow
def test_make_run_uses_answering_servers_and_sigterm_stops_everything(
    repo_copy, standin, throwaway_database, spare_redis_db
):
    run = MakeRun(
        repo_copy, _run_env(standin, REDIS_URL=spare_redis_db, DATABASE_URL=throwaway_database)
    )
    try:
        answer = run.ask("Why is the sea salty?")
        assert answer.status_code == 200, answer.text
        assert answer.json()["message"]["content"]
        servers = [p for p in _processes_in(repo_copy) if "redis-server" in p or "postgres" in p]
        assert servers == []
    finally:
        run.stop(signal.SIGTERM)

    output = run.output()
    assert "Traceback" not in output
    assert "REDIS_URL answers" in output and "DATABASE_URL answers" in output
    assert "started a private" not in output
    assert not (repo_copy / "var" / "redis").exists()
    assert not (repo_copy / "var" / "pg").exists()
    assert _processes_in(repo_copy) == []


def test_a_web_process_stops_without_a_traceback(stack_env, tmp_path):
    """gunicorn's gevent worker, stopped as `make run` stops it (SIGTERM): its PostgreSQL
    pool is closed before the interpreter finalizes its greenlets (a pool left to the
    garbage collector then printed "Exception ignored ... greenlet is being finalized")."""
    from tests.stack import Stack

    web = Stack(env=stack_env, logdir=tmp_path)
    proc = web.start_web(workers=1)
    assert requests.get(f"{web.url}/readyz", timeout=10).status_code in (200, 503)
    proc.stop()
    log = proc.log.read_text(errors="replace")
    assert "Worker exiting" in log
    assert "Traceback" not in log and "Exception ignored" not in log, log


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the postgres user matters only to root")
def test_as_root_a_private_postgres_starts_where_postgres_cannot_enter(tmp_path):
    """A clone under /root (mode 700): the postgres user cannot enter its var/, so the
    cluster's data goes to a directory of its own outside, found again by the next run."""
    home = Path(tempfile.mkdtemp(prefix="flock-root-home-"))
    home.chmod(0o700)  # as /root is
    base = home / "clone" / "var"
    data = services.OUTSIDE / "not-made-yet" / "pg"
    try:
        with services.PrivateServices(base, disposable=True) as private:
            data = private.pg_data()
            assert not data.is_relative_to(home) and data.parent.stat().st_mode & 0o777 == 0o700
            port = private.start_postgres()
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres") as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        assert services.PrivateServices(base).pg_data() == data  # the same place next time
        assert not (base / "pg").exists()
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(services.OUTSIDE / data.parent.name, ignore_errors=True)
