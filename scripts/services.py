"""Run a command with a Redis and a PostgreSQL that answer, starting private ones if needed.

    python scripts/services.py [--tests] [--env-file FILE] -- COMMAND [ARG...]

Without --tests (`make run`): REDIS_URL and DATABASE_URL are probed. A URL that answers is
used as it is and nothing else is touched. A URL that is unset, or where nothing answers,
gets a private server started from the local binaries under var/ on a free port, and the
command sees REDIS_URL / DATABASE_URL pointing at it (its database is created if missing).

With --tests (`make test`): the same for the servers the test suite uses, FLOCK_TEST_REDIS
and FLOCK_TEST_PG (unset: the defaults of tests/conftest.py), under var/test/.

Private servers are stopped when the command ends, however it ends (Ctrl-C, SIGTERM, an
error); their data stays under var/ so the next run reuses it. One command at a time may
run them from one var/ directory (a lock file says so).

As root, PostgreSQL runs as the `postgres` user (initdb refuses root), which must be able
to enter its data directory. When it cannot enter var/ (a clone under /root, mode 700),
the cluster's data goes to /var/tmp/flock-<hash of var/'s path>/pg instead (owned by
postgres, mode 700; the next run of the same clone finds it there again).
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import glob
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import pq

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"

# Same defaults as tests/conftest.py.
TEST_REDIS_DEFAULT = "redis://127.0.0.1:6379"
TEST_PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432"

INSTALL_HINTS = {
    "redis": "redis-server (Debian/Ubuntu: sudo apt-get install redis-server;"
    " macOS: brew install redis)",
    "postgres": "PostgreSQL's initdb and pg_ctl (Debian/Ubuntu: sudo apt-get install postgresql;"
    " macOS: brew install postgresql@15)",
}
# Where the private cluster's data goes when the postgres user cannot enter var/ (as root):
# a directory every user may traverse, and not cleared at reboot.
OUTSIDE = Path("/var/tmp")
# Where PostgreSQL installations keep initdb when pg_config is not on PATH: Debian/Ubuntu,
# then Homebrew's keg-only postgresql@NN (Apple silicon, Intel).
PG_BIN_GLOBS = [
    "/usr/lib/postgresql/*/bin",
    "/opt/homebrew/opt/postgresql@*/bin",
    "/usr/local/opt/postgresql@*/bin",
]


class ServiceError(Exception):
    """A reason not to go on, said in one message."""


# --- probes ------------------------------------------------------------------------------


def redis_answers(url: str) -> bool:
    """Whether anything accepts a connection at a Redis URL (password or not: it is there)."""
    parts = urlsplit(url)
    try:
        if parts.scheme == "unix":
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(1)
                s.connect(parts.path)
        else:
            return any(_accepts(host, port) for host, port in redis_nodes(url))
    except OSError:
        return False
    return True


@functools.cache
def _load_redisconn():
    """cache/redisconn.py by its path: `import cache` would load numpy and the index."""
    spec = importlib.util.spec_from_file_location("flock_redisconn", ROOT / "cache/redisconn.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def redis_nodes(url: str) -> list[tuple[str, int]]:
    """(host, port) of each node a redis:// URL names: one, or several comma-separated (a
    Redis Cluster's seeds, REDIS_CLUSTER=1), parsed as the cluster client parses them."""
    return _load_redisconn().url_nodes(url)


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 1).close()
    except OSError:
        return False
    return True


def postgres_answers(url: str) -> bool:
    """libpq's PQping: OK or REJECT mean a server is there (even if our login would fail)."""
    return pq.PGconn.ping(url.encode()) in (pq.Ping.OK, pq.Ping.REJECT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_host(url: str, netloc: str) -> str:
    """`url` with its user, password, host and port replaced by `netloc`; path kept."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=netloc))


def where(url: str) -> str:
    """host:port of a Redis or PostgreSQL URL, for messages (never the password)."""
    if url.startswith(("postgres://", "postgresql://")) or "://" not in url:
        try:
            info = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error:
            return "?"
        return f"{info.get('host') or 'local socket'}:{info.get('port') or 5432}"
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return ",".join(f"{host}:{port}" for host, port in redis_nodes(url))


# --- binaries ----------------------------------------------------------------------------


def pg_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl, or None."""
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    # Highest version first: /usr/lib/postgresql/16/bin before .../15/bin.
    for pattern in PG_BIN_GLOBS:
        candidates += sorted(glob.glob(pattern), key=_version_key, reverse=True)
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb") or "").parent))
    for candidate in candidates:
        if candidate and all((Path(candidate) / b).exists() for b in ("initdb", "pg_ctl")):
            return Path(candidate)
    return None


def _version_key(bindir: str) -> int:
    """15 for /usr/lib/postgresql/15/bin or /opt/homebrew/opt/postgresql@15/bin."""
    return int("".join(c for c in Path(bindir).parent.name if c.isdigit()) or 0)


def check_binaries(need_redis: bool, need_postgres: bool, settings: str) -> None:
    """Fail before starting anything when a private server cannot be started."""
    missing = []
    if need_redis and not shutil.which("redis-server"):
        missing.append(INSTALL_HINTS["redis"])
    if need_postgres and pg_bindir() is None:
        missing.append(INSTALL_HINTS["postgres"])
    if missing:
        raise ServiceError(
            "no server answers, and starting a private one needs "
            + " and ".join(missing)
            + f". Install it, or point {settings} at running servers."
        )
    if need_postgres:
        _as_pg_owner()  # as root: is there a user to run initdb as?


# --- private servers ---------------------------------------------------------------------


class PrivateServices:
    """The private Redis and PostgreSQL under one directory; stops what it started on exit."""

    def __init__(self, base: Path, disposable: bool = False) -> None:
        self.base = base
        self.disposable = disposable  # the data only serves tests: skip durability
        self._lock: int | None = None
        self._redis: subprocess.Popen | None = None
        self._pg_data: Path | None = None

    def __enter__(self) -> PrivateServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def ensure(self, env: dict[str, str], tests: bool) -> dict[str, str]:
        """The variables to give the command so that its servers answer."""
        if tests:
            redis_var, pg_var = "FLOCK_TEST_REDIS", "FLOCK_TEST_PG"
            redis_url = env.get(redis_var) or TEST_REDIS_DEFAULT
            pg_url = env.get(pg_var) or TEST_PG_DEFAULT
        else:
            redis_var, pg_var = "REDIS_URL", "DATABASE_URL"
            redis_url, pg_url = env.get(redis_var, ""), env.get(pg_var, "")
        need_redis = _needs_private(redis_var, redis_url, redis_answers)
        need_pg = _needs_private(pg_var, pg_url, postgres_answers)
        check_binaries(need_redis, need_pg, f"{redis_var} / {pg_var}")

        exports: dict[str, str] = {}
        if need_redis:
            netloc = f"127.0.0.1:{self.start_redis()}"
            # Keep the database number the URL asked for (/0 when unset; none for the tests,
            # whose conftest appends its own). The private server speaks plain redis://.
            template = redis_url if urlsplit(redis_url).scheme == "redis" else "redis://_/0"
            exports[redis_var] = with_host(template, netloc)
            broker = env.get("CELERY_BROKER_URL", "")
            if not tests and broker and redis_url and where(broker) == where(redis_url):
                exports["CELERY_BROKER_URL"] = with_host(broker, netloc)  # same dead server
        if need_pg:
            server = f"postgresql://postgres@127.0.0.1:{self.start_postgres()}"
            if tests:
                exports[pg_var] = server  # the conftest creates its own database
            else:
                dbname = (pg_url and psycopg.conninfo.conninfo_to_dict(pg_url).get("dbname"))
                exports[pg_var] = f"{server}/{dbname or 'flock'}"
                _create_database(server, str(dbname or "flock"))
        return exports

    def _take_lock(self) -> None:
        """One command at a time runs the private servers of a var/ directory. Holding the
        lock also proves that a server left running there belongs to a dead run."""
        if self._lock is not None:
            return
        self.base.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.base / "services.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ServiceError(
                f"another `make run` or `make test` runs the private servers of {self.base}"
                "; stop it first"
            ) from None
        self._lock = fd

    def start_redis(self) -> int:
        self._take_lock()
        data = self.base / "redis"
        data.mkdir(parents=True, exist_ok=True)
        _stop_stale(data / "redis.pid", "redis-server")
        port = free_port()
        args = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no",
            "--dir", str(data), "--pidfile", str(data / "redis.pid"),
            "--logfile", str(data / "redis.log"),
            # Saved on shutdown and every minute: the next run finds the same cache.
            "--save", "" if self.disposable else "60 1", "--appendonly", "no",
        ]  # fmt: skip
        # Its own session: a Ctrl-C must not stop it before the processes that use it.
        self._redis = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while not redis_answers(f"redis://127.0.0.1:{port}"):
            if self._redis.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"the private Redis did not start; see {data / 'redis.log'}")
            time.sleep(0.05)
        print(f"services: started a private Redis on 127.0.0.1:{port} ({_rel(data)})")
        return port

    def start_postgres(self) -> int:
        self._take_lock()
        bindir = pg_bindir()
        assert bindir is not None  # check_binaries said so
        data = self.pg_data()
        if not (data / "PG_VERSION").exists():
            _initdb(bindir, data, disposable=self.disposable)
        elif _pg_ctl(bindir, "status", "-D", str(data), check=False).returncode == 0:
            # Left running by a run that was killed (we hold the lock: nobody uses it).
            _pg_ctl(bindir, "stop", "-D", str(data), "-m", "fast", "-w", check=False)
        port = free_port()
        self._pg_data = data  # from now on stop() stops it, even if starting is interrupted
        out = _pg_ctl(
            bindir, "start", "-D", str(data), "-w", "-t", "60",
            "-l", str(data / "server.log"), "-o", f"-p {port}",
            check=False,
        )  # fmt: skip
        if out.returncode != 0:
            raise ServiceError(
                f"the private PostgreSQL did not start: {out.stdout}{out.stderr}"
                f"see {data / 'server.log'}"
            )
        print(f"services: started a private PostgreSQL on 127.0.0.1:{port} ({_rel(data)})")
        return port

    def pg_data(self) -> Path:
        """The private cluster's data directory: var/pg, unless it runs as the postgres
        user (we are root), who cannot enter var/; then a directory of its own outside."""
        data = self.base / "pg"
        if os.geteuid() != 0 or _postgres_may_enter(self.base):
            return data
        digest = hashlib.sha256(str(self.base.resolve()).encode()).hexdigest()[:16]
        outside = OUTSIDE / f"flock-{digest}"
        owner = pwd.getpwnam("postgres")
        outside.mkdir(mode=0o700, exist_ok=True)
        found = os.lstat(outside)
        # A name anyone could have made first: it must be a directory of root or postgres.
        if not os.path.isdir(outside) or os.path.islink(outside) or found.st_uid not in (
            0, owner.pw_uid,
        ):  # fmt: skip
            raise ServiceError(f"{outside} exists and is not ours: remove it, or run as a "
                               "user other than root")  # fmt: skip
        os.chown(outside, owner.pw_uid, owner.pw_gid)
        os.chmod(outside, 0o700)
        print(f"services: the postgres user cannot enter {_rel(self.base)}; the private "
              f"PostgreSQL keeps its data in {outside / 'pg'}")  # fmt: skip
        return outside / "pg"

    def stop(self) -> None:
        """Stop what this object started: PostgreSQL (fast shutdown), then Redis."""
        if self._pg_data is not None:
            bindir = pg_bindir()
            assert bindir is not None
            stopped = _pg_ctl(
                bindir, "stop", "-D", str(self._pg_data), "-m", "fast", "-w", "-t", "30",
                check=False,
            )  # fmt: skip
            if stopped.returncode != 0:
                _pg_ctl(bindir, "stop", "-D", str(self._pg_data), "-m", "immediate", check=False)
            self._pg_data = None
            print("services: stopped the private PostgreSQL")
        if self._redis is not None:
            self._redis.terminate()  # SIGTERM: Redis saves its data and exits
            try:
                self._redis.wait(30)
            except subprocess.TimeoutExpired:
                self._redis.kill()
                self._redis.wait()
            self._redis = None
            print("services: stopped the private Redis")
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def _needs_private(var: str, url: str, answers: Callable[[str], bool]) -> bool:
    if not url:
        print(f"services: {var} is not set")
        return True
    if answers(url):
        print(f"services: {var} answers at {where(url)}: using it")
        return False
    print(f"services: nothing answers at {var} ({where(url)})")
    return True


def _rel(path: Path) -> str:
    return os.path.relpath(path, ROOT) if path.is_relative_to(ROOT) else str(path)


def _as_pg_owner() -> list[str]:
    """initdb and pg_ctl refuse to run as root: as root, run them as the `postgres` user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceError(
            "running as root, and initdb refuses root: create a `postgres` user"
            " (useradd --system postgres) or run as a normal user"
        ) from None
    if not shutil.which("runuser"):
        raise ServiceError("running as root needs runuser (util-linux) to run initdb as postgres")
    return ["runuser", "-u", "postgres", "--"]


def _postgres_may_enter(path: Path) -> bool:
    """Whether the postgres user can reach `path` (every directory above it included)."""
    probe = [*_as_pg_owner(), "test", "-x", str(path)]
    return subprocess.run(probe, capture_output=True, cwd="/").returncode == 0


def _pg_ctl(bindir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # Its own session: pg_ctl's server must outlive a Ctrl-C until we stop it ourselves.
    return subprocess.run(
        [*_as_pg_owner(), str(bindir / "pg_ctl"), *args],
        capture_output=True, text=True, check=check, start_new_session=True, cwd="/",
    )  # fmt: skip


def _initdb(bindir: Path, data: Path, disposable: bool) -> None:
    # Built aside and renamed when complete: an interrupted initdb leaves no half cluster.
    tmp = data.with_name(data.name + ".init")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, mode=0o700)
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
    # --no-sync: seconds saved on a busy disk; the server syncs its own writes from then on.
    out = subprocess.run(
        [*_as_pg_owner(), str(bindir / "initdb"), "-D", str(tmp), "-U", "postgres",
         "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
        capture_output=True, text=True, cwd="/",  # a directory the postgres user may enter
    )  # fmt: skip
    if out.returncode != 0:
        hint = " (can the postgres user enter every parent directory?)" if os.geteuid() == 0 else ""
        raise ServiceError(f"initdb failed{hint}:\n{out.stdout}{out.stderr}")
    # Local TCP only: no Unix socket, whose default directory may not be writable here.
    settings = ["listen_addresses = '127.0.0.1'", "unix_socket_directories = ''"]
    if disposable:  # the test suite's data: speed over durability
        settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
    with open(tmp / "postgresql.conf", "a") as conf:
        conf.write("\n# scripts/services.py\n" + "".join(f"{line}\n" for line in settings))
    tmp.rename(data)


def _create_database(server: str, dbname: str) -> None:
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{dbname}"')


def _stop_stale(pidfile: Path, name: str) -> None:
    """Stop a server a killed run left behind, if the pid file still names one."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    ps = subprocess.run(["ps", "-p", str(pid), "-o", "command="], capture_output=True, text=True)
    if name not in ps.stdout:  # gone, or the pid now belongs to another program
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


# --- the command -------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines, parsed as honcho parses .env."""
    from honcho.environ import parse

    return parse(path.read_text()) if path.exists() else {}


def run_command(command: list[str], env: dict[str, str]) -> int:
    """Run `command`, wait for it, return its exit status (128+N when killed by signal N)."""
    child = subprocess.Popen(command, env=env)

    def on_signal(signum: int, _frame: object) -> None:
        # Ctrl-C reaches the whole foreground process group, the command included: it stops
        # by itself, and a second SIGINT could cut its cleanup short. A SIGTERM is usually
        # meant for this process alone (make forwards one to its recipe): pass it on. Either
        # way, we wait for the command before stopping the servers it uses.
        if signum == signal.SIGTERM and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = child.wait()
    return 128 - code if code < 0 else code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tests", action="store_true", help="ensure the test suite's servers")
    parser.add_argument("--env-file", type=Path, help="read settings from this .env first")
    parser.add_argument("command", nargs="+", help="the command to run (after --)")
    args = parser.parse_args(argv)

    env = dict(os.environ)
    if args.env_file:
        env = {**read_env_file(args.env_file), **env}  # the shell's own settings win

    # Until the command runs, a SIGTERM unwinds like Ctrl-C: what started gets stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        base = VAR / "test" if args.tests else VAR
        with PrivateServices(base, disposable=args.tests) as services:
            env.update(services.ensure(env, tests=args.tests))
            return run_command(args.command, env)
    except ServiceError as exc:
        print(f"services: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
