"""Shared helpers of the benchmarks: their own Redis and PostgreSQL databases, a stand-in +
stack that always stop, an API key, gunicorn for any app, percentiles, CPU accounting, and
logging to stderr.

The benches own Redis databases 13 (cache) and 14 (Celery broker) and flush only those; the
tests own 11 and 12, which the benches never touch (and refuse to use). On the PostgreSQL
server (FLOCK_BENCH_PG, default postgresql://postgres@127.0.0.1:5432) a bench creates,
migrates and drops a database of its own, flock_bench_<pid>.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis

from tests.ollama_standin import StandIn
from tests.stack import ROOT, Proc, Stack, _get_ok, _wait_for, free_port

REDIS_BASE = os.environ.get("FLOCK_BENCH_REDIS", "redis://127.0.0.1:6379")
# FLOCK_BENCH_REDIS_DB moves both (cache there, broker on the next one), e.g. while a test
# session that uses 13 as its spare database runs beside the bench.
CACHE_DB = int(os.environ.get("FLOCK_BENCH_REDIS_DB", "13"))
BROKER_DB = CACHE_DB + 1
TEST_DBS = frozenset({11, 12})  # the tests' databases: never touched here
CACHE_URL = f"{REDIS_BASE}/{CACHE_DB}"
BROKER_URL = f"{REDIS_BASE}/{BROKER_DB}"
PG_SERVER = os.environ.get("FLOCK_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
MODEL = "llama3.2:1b"
# A benchmark measures the request path, not the limiter refusing it: a limit nobody reaches
# (the limiter still runs on every request, as in production).
REQUESTS_PER_MINUTE = 1_000_000_000

_T0 = time.monotonic()


def log(message: str) -> None:
    """Human-readable progress: stderr only, stdout is kept for the one JSON summary."""
    print(f"[bench +{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that `finally` blocks stop the stack."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def flush_bench_dbs() -> None:
    for db in (CACHE_DB, BROKER_DB):
        if db in TEST_DBS:  # a guard against a careless edit of the constants above
            raise RuntimeError(f"Redis DB {db} belongs to the tests")
        client = redis.Redis.from_url(f"{REDIS_BASE}/{db}")
        try:
            client.flushdb()
        finally:
            client.close()


@contextmanager
def bench_database(label: str = "") -> Iterator[str]:
    """A migrated PostgreSQL database of this bench run (one per label), dropped on the way
    out."""
    from webapp.migrate import migrate

    name = f"flock_bench_{os.getpid()}{label and '_' + label}"
    admin = f"{PG_SERVER}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{PG_SERVER}/{name}"
        migrate(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_api_key(env: dict[str, str], name: str = "bench") -> str:
    """A new user through the real CLI (as the tests do); returns the API key it prints."""
    out = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "webapp", "users", "create", name],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"cannot create a user: {out.stderr.strip()[-2000:]}")
    return out.stdout.strip().splitlines()[-1]


def stack_env(
    standin_url: str, database_url: str, lease_ms: int, timeout_s: float = 60
) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "SECRET_KEY": "bench-only-secret-key",
        "REQUESTS_PER_MINUTE": str(REQUESTS_PER_MINUTE),
        "REDIS_URL": CACHE_URL,
        "CELERY_BROKER_URL": BROKER_URL,
        "OLLAMA_URL": standin_url,
        "OLLAMA_MODEL": MODEL,
        "LOCK_LEASE_MS": str(lease_ms),
        "REQUEST_TIMEOUT_S": str(timeout_s),
    }


@dataclass
class Bench:
    standin: StandIn
    stack: Stack
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@contextmanager
def bench_stack(lease_ms: int, timeout_s: float = 60, keep_logs: bool = False) -> Iterator[Bench]:
    """A started stand-in (in-process thread), a fresh PostgreSQL database with one user and
    its API key, and an empty Stack on Redis DBs 13/14.

    Whatever the caller starts on the Stack is stopped on the way out, also on error; the
    Redis databases are flushed before and after, the PostgreSQL one dropped. Process logs
    are kept on error or when asked.
    """
    flush_bench_dbs()
    logdir = Path(tempfile.mkdtemp(prefix="flock-bench-"))
    done = False

    def drop_logs() -> None:
        if done and not keep_logs:
            shutil.rmtree(logdir, ignore_errors=True)
        else:
            log(f"process logs kept in {logdir}")

    with ExitStack() as cleanup:  # undone in reverse order, also on error
        cleanup.callback(drop_logs)
        cleanup.callback(flush_bench_dbs)
        database_url = cleanup.enter_context(bench_database())
        standin = cleanup.enter_context(StandIn())
        stack = Stack(env=stack_env(standin.url, database_url, lease_ms, timeout_s),
                      logdir=logdir)
        cleanup.callback(stack.stop)
        cleanup.callback(log, "stopping the stack")
        yield Bench(standin, stack, create_api_key(stack.env))
        done = True


def start_gunicorn(
    stack: Stack,
    name: str,
    app: str,
    worker_class: str = "gevent",
    workers: int = 2,
    threads: int = 50,
    extra_env: dict[str, str] | None = None,
) -> tuple[Proc, str]:
    """Like Stack.start_web, for any app and thread count: same flags otherwise.

    Stack.start_web serves only 'webapp:create_app()' and fixes gthread at 200 threads; the
    benches need the bare app too, and one --threads for both apps.
    """
    port = free_port()
    args = ["gunicorn", "-k", worker_class, "-w", str(workers), "--worker-connections",
            "4000", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5"]
    if worker_class == "gthread":
        args += ["--threads", str(threads)]
    args.append(app)
    proc = stack._spawn(name, args, extra_env)
    url = f"http://127.0.0.1:{port}"
    _wait_for(lambda: _get_ok(f"{url}/healthz"), proc, name)
    return proc, url


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted sequence (None when empty)."""
    if not sorted_values:
        return None
    rank = min(len(sorted_values), max(1, math.ceil(p / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    return raw[raw.rindex(")") + 2 :].split()


def group_cpu(pgid: int) -> dict[int, float]:
    """User + system CPU seconds of each live process of one process group (a gunicorn master
    started by Stack runs in its own session, so its workers share its group id)."""
    usage = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields is not None and int(fields[2]) == pgid:
                usage[int(entry)] = (int(fields[11]) + int(fields[12])) / _TICK
    return usage


def named_cpu(command: str) -> dict[int, float]:
    """User + system CPU seconds of each live process whose command name is `command`
    ("redis-server", "postgres": the shared servers a request path may lean on)."""
    usage = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if raw[raw.index("(") + 1 : raw.rindex(")")] == command:
                fields = raw[raw.rindex(")") + 2 :].split()
                usage[int(entry)] = (int(fields[11]) + int(fields[12])) / _TICK
    return usage


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two snapshots by the processes alive at the second (a process that
    exited in between took its time with it; a new one counts from zero)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return (sum(values) - values[3] - values[4]) / _TICK


@dataclass
class CpuSnapshot:
    web: dict[int, float]
    redis: dict[int, float]
    postgres: dict[int, float]
    busy: float

    @classmethod
    def take(cls, web_pgid: int) -> CpuSnapshot:
        return cls(group_cpu(web_pgid), named_cpu("redis-server"), named_cpu("postgres"),
                   machine_busy_seconds())


def cpu_used(before: CpuSnapshot, after: CpuSnapshot, client_s: float) -> dict[str, Any]:
    """CPU seconds spent between two snapshots, by whom. `other` is the rest of the machine:
    the Celery workers, the bench process itself, and anybody else's jobs."""
    per_process = sorted(
        (round(cpu - before.web.get(pid, 0.0), 2) for pid, cpu in after.web.items()),
        reverse=True,
    )
    web = sum(per_process)
    redis_s = _spent(before.redis, after.redis)
    postgres_s = _spent(before.postgres, after.postgres)
    busy = after.busy - before.busy
    return {
        "gunicorn": round(web, 2),
        "gunicorn_by_process": per_process,
        "redis": round(redis_s, 2),
        "postgres": round(postgres_s, 2),
        "client": round(client_s, 2),
        "other": round(max(0.0, busy - web - redis_s - postgres_s - client_s), 2),
    }


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
