"""Redis servers of a test's own, from the local redis-server binary, on free ports of
127.0.0.1 and without persistence (a restart loses the data): a single server, or a
Redis Cluster of three primaries. Never the shared Redis on 6379.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.stack import free_port


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    while True:
        port = free_port()
        if port + 10000 <= 65535 and _bindable(port + 10000):
            return port


class RedisServer:
    def __init__(self, workdir: Path, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir.resolve()
        self.extra = extra
        self.popen: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, *extra: str) -> None:
        args = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.workdir), "--daemonize", "no", *self.extra, *extra,
        ]  # fmt: skip
        log = open(self.workdir / f"redis-{self.port}.log", "ab")
        self.popen = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if self.popen.poll() is not None:  # it could not bind its port(s), say
                    self.popen = None
                    raise RuntimeError(f"redis-server on {self.port} exited at start") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no goodbye to any client."""
        if self.popen is not None:
            self.popen.kill()
            self.popen.wait(10)
            self.popen = None


@contextmanager
def own_redis(workdir: Path, *extra: str) -> Iterator[RedisServer]:
    """A started RedisServer (`extra`: its options), killed on the way out; the test is
    skipped where redis-server is not installed."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(workdir)
    server.start(*extra)
    try:
        yield server
    finally:
        server.kill()


class RedisCluster3:
    """Three primaries, no replicas. A node that is killed and started again keeps its
    slots (its nodes.conf stays in its folder) but comes back empty; meanwhile the other
    nodes keep serving their slots (cluster-require-full-coverage no)."""

    def __init__(self, workdir: Path) -> None:
        self.nodes = []
        for i in range(3):
            folder = workdir / f"node{i}"
            folder.mkdir()
            options = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                       "--cluster-node-timeout", "1000", "--cluster-require-full-coverage", "no")
            self.nodes.append(RedisServer(folder, *options, port=cluster_port()))

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            for _ in range(5):  # the bus port (+10000) may be taken by the time it binds
                try:
                    node.start()
                    break
                except RuntimeError:
                    node.port = cluster_port()
            else:
                raise RuntimeError("could not start a cluster node on a free port pair")
        subprocess.run(
            [shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
             *(f"127.0.0.1:{n.port}" for n in self.nodes), "--cluster-replicas", "0",
             "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_ok()

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every node says the cluster is ok and knows all three primaries."""
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for node in self.nodes:
                try:
                    client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=1)
                    info = client.cluster("info")
                    states.append((info["cluster_state"], int(info["cluster_known_nodes"])))
                except redis.RedisError as exc:
                    states.append((repr(exc), 0))
            if all(s == ("ok", 3) for s in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ok after {timeout}s: {states}")
            time.sleep(0.1)

    def node_of(self, name: str) -> RedisServer:
        """The node that serves the slot of key `name`."""
        slot = redis.cluster.key_slot(name.encode())
        client = redis.Redis(host="127.0.0.1", port=self.nodes[0].port)
        for start, end, primary, *_ in client.cluster("slots"):
            if start <= slot <= end:
                port = int(primary[1])
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(name)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
