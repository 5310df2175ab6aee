"""Password hashing with scrypt (stdlib), and API key generation.

scrypt at OWASP's parameters: N=2**17, r=8, p=1 (128 MiB and about a second of one core
per hash here). The parameters are stored with each hash, so hashes made with older ones
(N=2**14) still verify, and are replaced at the next sign-in (`needs_rehash`).

A hash is CPU work of a second: under gevent it would stop every other request of the
process for that long, so it runs in gevent's thread pool (hashlib releases the GIL). At
most `_CONCURRENT` hashes run at once per process, which bounds their memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

_N, _R, _P = 2**17, 8, 1
_CONCURRENT = 2
_slots: list[threading.BoundedSemaphore] = []  # made at first use: after gevent patched threading
# Checked against when the user does not exist (or has no password): the same work as a
# real check, so the answer's timing does not tell whether a name exists. Matches nothing.
_NOBODY = f"scrypt${_N}${_R}${_P}${base64.b64encode(b'flock-no-such-user').decode()}$" + (
    base64.b64encode(bytes(32)).decode()
)
T = TypeVar("T")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _off_the_loop(lambda: _scrypt(password, salt, _N, _R, _P, 32))
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str | None) -> bool:
    """Whether `password` matches `stored`; the same work when `stored` is None."""
    real = bool(stored) and str(stored).startswith("scrypt$")
    _, n, r, p, salt, digest = (stored if real and stored else _NOBODY).split("$")
    expected = base64.b64decode(digest)
    actual = _off_the_loop(
        lambda: _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p), len(expected))
    )
    return hmac.compare_digest(actual, expected) and real


def needs_rehash(stored: str) -> bool:
    """A hash made with weaker parameters than today's."""
    _, n, r, p, *_ = stored.split("$")
    return (int(n), int(r), int(p)) != (_N, _R, _P)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # scrypt needs 128 * r * n bytes (plus a little); hashlib's default cap is 32 MiB.
    maxmem = 128 * r * n * (p + 1) + (1 << 20)
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen,
                          maxmem=maxmem)  # fmt: skip


def _off_the_loop(work: Callable[[], T]) -> T:
    """Run `work` in gevent's thread pool when this process runs under gevent (the web's
    gunicorn workers), else here; at most _CONCURRENT at a time."""
    if not _slots:
        _slots.append(threading.BoundedSemaphore(_CONCURRENT))
    with _slots[0]:
        if _under_gevent():
            import gevent

            return gevent.get_hub().threadpool.apply(work)
        return work()


def _under_gevent() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def new_api_key() -> str:
    """A 256-bit random key; `flk_` makes it recognisable to secret scanners."""
    return "flk_" + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    # The key is random and long: a fast hash is enough and keeps every request cheap.
    return hashlib.sha256(key.encode()).hexdigest()
