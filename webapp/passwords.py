"""Password hashing with scrypt (stdlib), and API key generation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# scrypt cost: N=2**14, r=8, p=1 takes ~50 ms and 16 MiB here, per OWASP's minimum.
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, n, r, p, salt, digest = stored.split("$")
    expected = base64.b64decode(digest)
    actual = hashlib.scrypt(
        password.encode(),
        salt=base64.b64decode(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=len(expected),
    )
    return hmac.compare_digest(actual, expected)


def new_api_key() -> str:
    """A 256-bit random key; `flk_` makes it recognisable to secret scanners."""
    return "flk_" + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    # The key is random and long: a fast hash is enough and keeps every request cheap.
    return hashlib.sha256(key.encode()).hexdigest()
