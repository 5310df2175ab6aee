"""Start and stop the real processes of a Flock stack for tests and benchmarks.

Each process runs in its own session (process group), so a test can SIGKILL a whole
Celery worker, parent and children, exactly as a crashed host would lose it.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def load_services():
    """scripts/services.py (scripts/ is not a package), loaded by its path."""
    spec = importlib.util.spec_from_file_location("flock_services", ROOT / "scripts/services.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 15) -> None:
        if not self.alive():
            return
        self.kill(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.popen.wait(5)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Stack:
    """Web (gunicorn) and workers wired to one Redis database and one Ollama URL.

    Several stacks on one machine stand for several hosts (tests/test_hosts.py): `host`
    names their Celery nodes (`embedder@<host>`), `ip` is where the web listens, and
    `wrapper` runs every command inside something, e.g. `ip netns exec <namespace>`.
    """

    env: dict[str, str]
    logdir: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    web_port: int = 0
    host: str = "%h"  # Celery's own placeholder: the machine's host name
    ip: str = "127.0.0.1"
    wrapper: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.web_port}"

    def _spawn(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> Proc:
        log = self.logdir / f"{name}.log"
        n = 1
        while log.exists():  # a restarted process gets a fresh log: readiness reads it
            n += 1
            log = self.logdir / f"{name}-{n}.log"
        out = open(log, "wb")
        popen = subprocess.Popen(
            [*self.wrapper, sys.executable, "-m", *args],
            cwd=ROOT,
            env={**os.environ, **self.env, **(extra_env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        return proc

    def start_web(
        self, workers: int = 2, worker_class: str = "gevent", extra_env: dict | None = None
    ) -> Proc:
        self.web_port = free_port()
        args = [
            "gunicorn",
            "-k",
            worker_class,
            "-w",
            str(workers),
            "--worker-connections",
            "4000",
            "-b",
            f"{self.ip}:{self.web_port}",
            "--graceful-timeout",
            "5",
            "--no-control-socket",  # gunicorn 27 shares one control socket path by default
            "webapp:create_app()",
        ]
        if worker_class == "gthread":
            args[5:5] = ["--threads", "200"]
        proc = self._spawn("web", args, extra_env)
        _wait_for(lambda: _get_ok(f"{self.url}/healthz"), proc, "web")
        return proc

    def start_worker(
        self,
        name: str,
        queue: str,
        concurrency: int = 2,
        pool: str = "prefork",
        extra_env: dict[str, str] | None = None,
    ) -> Proc:
        args = [
            "celery",
            "-A",
            "tasks",
            "worker",
            "-Q",
            queue,
            "-n",
            f"{name}@{self.host}",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ]
        proc = self._spawn(name, args, extra_env)
        _wait_for(lambda: " ready." in proc.log.read_text(errors="replace"), proc, name)
        if "embed" in queue.split(","):  # each child (or the one process) loads the model
            loaded = "embedding model"
            copies = concurrency if pool == "prefork" else 1
            _wait_for(
                lambda: proc.log.read_text(errors="replace").count(loaded) >= copies,
                proc,
                name,
                timeout=180,
            )
        return proc

    def start_default(self) -> None:
        self.start_worker("embedder", "embed", concurrency=2, pool="threads")
        self.start_worker("llm", "llm", concurrency=8, pool="threads")
        self.start_web()

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()


def _get_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def _wait_for(ready, proc: Proc, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not proc.alive():
            raise RuntimeError(f"{name} exited while starting:\n{proc.tail()}")
        time.sleep(0.1)
    raise RuntimeError(f"{name} not ready after {timeout}s:\n{proc.tail()}")
