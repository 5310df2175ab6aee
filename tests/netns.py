"""Network namespaces for tests: a "host" with an IP address of its own on this machine.

A namespace gets a veth pair: its end has the host's address, the machine's end is its
gateway. Redis, PostgreSQL and the Ollama stand-in listen on the machine's 127.0.0.1 only,
which a namespace cannot reach (its 127.0.0.1 is its own), so `reach()` starts a relay
(socat) on the gateway for each of them, the way a real host reaches its servers over the
network. Needs root (CAP_NET_ADMIN), `ip` and `socat`: without them `create_all()` makes
none and the tests run every host on 127.0.0.1. FLOCK_TEST_NETNS=0 does so anyway.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from tests.stack import free_port


def create_all(labels: list[str] | tuple[str, ...]) -> list[Netns]:
    """A namespace for each label, or [] where this machine cannot make them."""
    if os.environ.get("FLOCK_TEST_NETNS", "1") == "0":
        return []
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("socat"):
        return []
    made: list[Netns] = []
    try:
        for index, label in enumerate(labels, start=1):
            made.append(Netns.create(label, index))
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):  # e.g. no CAP_NET_ADMIN
        for ns in made:
            ns.delete()
        return []
    return made


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class Netns:
    name: str
    ip: str  # the host's address, inside the namespace
    gateway: str  # the machine's end of the pair
    relays: list[subprocess.Popen] = field(default_factory=list)

    @classmethod
    def create(cls, label: str, index: int) -> Netns:
        """Namespace `flock-<pid>-<label>` on 10.<pid-derived>.<index>.0/30."""
        pid = os.getpid()
        net = f"10.{100 + pid % 100}.{index}"
        ns = cls(f"flock-{pid}-{label}", f"{net}.2", f"{net}.1")
        outside, inside = f"fl{pid}{index}o", f"fl{pid}{index}i"  # at most 15 characters
        _ip("netns", "add", ns.name)
        try:
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", ns.name)
            _ip("addr", "add", f"{ns.gateway}/30", "dev", outside)
            _ip("link", "set", outside, "up")
            for args in (
                ["addr", "add", f"{ns.ip}/30", "dev", inside],
                ["link", "set", inside, "up"],
                ["link", "set", "lo", "up"],
            ):
                _ip("-n", ns.name, *args)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            ns.delete()
            raise
        return ns

    @property
    def wrapper(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def reach(self, url: str) -> str:
        """`url` (a service on the machine's loopback) as this namespace reaches it."""
        parts = urlsplit(url)
        port = free_port()
        relay = subprocess.Popen(
            ["socat", f"TCP-LISTEN:{port},bind={self.gateway},fork,reuseaddr",
             f"TCP:{parts.hostname}:{parts.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # its children (one per connection) share its group
        )  # fmt: skip
        self.relays.append(relay)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((self.gateway, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or relay.poll() is not None:
                    raise RuntimeError(f"relay to {url} did not start") from None
                time.sleep(0.05)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@" if userinfo else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}{self.gateway}:{port}"))

    def delete(self) -> None:
        for relay in self.relays:
            try:
                os.killpg(relay.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            relay.wait(5)
        # Deleting the namespace deletes its end of the pair, and with it the other end.
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
