"""Who is calling: API keys (programs) and browser sessions.

Every /api and /v1 endpoint requires one of them. A session request that changes
something must also carry the session's CSRF token in `X-CSRF-Token`; API-key
requests carry no cookie and need none. Key lookups are remembered by each process for
API_KEY_MEMORY_S (10 s) and cached in Redis for API_KEY_CACHE_S (a minute; revoking
deletes the cached copy), so an exact hit costs no PostgreSQL read.

A key PostgreSQL last confirmed keeps working while PostgreSQL is out of reach: each
confirmation also leaves a last-known copy in Redis (API_KEY_LAST_KNOWN_S, a day; 0: none),
read only when the lookup fails for want of PostgreSQL (no connection within
_PG_WAIT_S, a lost connection, a statement timeout). Whenever PostgreSQL answers, its
answer wins: a key it no longer knows loses its copy, and revoking deletes it too. A key
without a copy waits for PostgreSQL as any request does, and gets a 503 if it is down.

Sessions live in PostgreSQL (`sessions`): the signed cookie carries a random id, the
table its hash, its expiry (SESSION_LIFETIME_S) and whether it was revoked. Signing out
revokes it, so the old cookie stops working wherever it was copied to.

Accounts: registration only when ALLOW_REGISTRATION is on; sign-in and registration are
throttled per name and per client address (AUTH_ATTEMPTS_PER_MINUTE, Redis token buckets);
a wrong password and an unknown name get the same answer after the same work (a scrypt
hash either way, webapp/passwords.py). API keys are created from a browser session only
(a leaked key cannot mint more; revoking it contains the leak), at most MAX_KEYS_PER_USER
active ones per user.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import wraps
from typing import ParamSpec, TypeVar

import click
import psycopg
import redis
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request, session
from flask.typing import ResponseReturnValue

from webapp import db
from webapp.errors import BadRequest, Conflict, Forbidden, NotFound, RateLimited, Unauthorized
from webapp.passwords import (
    check_password,
    hash_password,
    key_hash,
    needs_rehash,
    new_api_key,
)
from webapp.services import services

bp = Blueprint("auth", __name__, url_prefix="/api/v1")
log = logging.getLogger(__name__)
# Each process remembers a key for API_KEY_MEMORY_S (settings.py), so an exact hit costs
# no lookup round trip; a revoked key therefore stops working within that long everywhere.
# A key lookup is one indexed SELECT: a pool that gives no connection in this long means
# PostgreSQL is in trouble, and a key it confirmed before is let through meanwhile.
_PG_WAIT_S = 2.0
_WARN_EVERY_S = 10.0
_fallbacks, _warned_at = 0, -_WARN_EVERY_S
_recent_keys: dict[str, tuple[User, float]] = {}
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
MAX_PASSWORD = 1024  # characters: longer is no stronger, only more to hash
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    key_id: int | None = None  # the API key this request came with, if any

    @property
    def rate_key(self) -> str:
        """What a rate limit counts: the API key, or the user for browser sessions."""
        return f"key{self.key_id}" if self.key_id is not None else f"user{self.id}"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def current_user() -> User:
    """The authenticated user of this request, or 401."""
    if "user" not in g:
        g.user = _from_api_key() or _from_session()
    if g.user is None:
        raise Unauthorized("send 'Authorization: Bearer <API key>' or sign in")
    return g.user


def login_required(view: Callable[P, R]) -> Callable[P, R]:
    @wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        current_user()
        return view(*args, **kwargs)

    return wrapped


def admin_required(view: Callable[P, R]) -> Callable[P, R]:
    @wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        if not current_user().is_admin:
            raise Forbidden("this endpoint is for admins")
        return view(*args, **kwargs)

    return wrapped


def _from_api_key() -> User | None:
    header = request.headers.get("Authorization", "")
    if not header:
        return None
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <API key>'")
    digest = key_hash(key.strip())
    known = remembered(digest)
    if known is not None:
        return known
    found = _key_user(digest)
    if found is None:
        return _invalid_key()
    _recent_keys[digest] = (found, time.monotonic() + current_app.config["API_KEY_MEMORY_S"])
    return found


def _key_user(digest: str) -> User | None:
    """The user of an API key (by its hash): Redis's cached answer, else PostgreSQL's, else,
    when PostgreSQL cannot be reached, the last-known copy (the module's docstring)."""
    cfg, svc = current_app.config, services()
    cache_key, known_key = svc.keys.apikey(digest), svc.keys.apikey_known(digest)
    with svc.redis.pipeline(transaction=False) as pipe:  # one round trip, two names
        pipe.get(cache_key)
        pipe.get(known_key)
        cached, last = pipe.execute()
    if cached is not None:
        return User(**json.loads(cached)) if cached else None
    last = last if cfg["API_KEY_LAST_KNOWN_S"] else None
    try:
        # A key with a last-known copy waits little for a connection: it has somewhere to
        # fall back to. Any other waits as every request does (the pool's timeout).
        with db.pool().connection(timeout=_PG_WAIT_S if last else None) as conn:
            row = conn.execute(
                "SELECT u.id, u.name, u.role, k.id FROM api_keys k JOIN users u"
                " ON u.id = k.user_id WHERE k.key_hash = %s AND k.revoked_at IS NULL",
                (digest,),
            ).fetchone()
    except psycopg.OperationalError as exc:  # unreachable, pool or statement timeout
        if not last:
            raise
        _fell_back(exc)
        return User(**json.loads(last))
    found = User(*row) if row else None
    value = json.dumps(asdict(found)) if found else ""
    try:
        with svc.redis.pipeline(transaction=False) as pipe:
            if cfg["API_KEY_CACHE_S"]:
                pipe.set(cache_key, value, px=_ms(cfg["API_KEY_CACHE_S"]))
            if found is not None and cfg["API_KEY_LAST_KNOWN_S"]:
                pipe.set(known_key, value, px=_ms(cfg["API_KEY_LAST_KNOWN_S"]))
            else:
                pipe.delete(known_key)
            pipe.execute()
    except redis.OutOfMemoryError as exc:  # a full Redis: the answer stands, uncached
        log.warning("API key lookup not cached: %s", exc)
    return found


def _fell_back(exc: Exception) -> None:
    """Log a key let in on its last-known copy: once per interval, with the count since."""
    global _fallbacks, _warned_at
    _fallbacks += 1
    now = time.monotonic()
    if now - _warned_at >= _WARN_EVERY_S:
        log.warning("PostgreSQL is unreachable (%s): %d API key checks answered from their "
                    "last-known copies", exc, _fallbacks)  # fmt: skip
        _fallbacks, _warned_at = 0, now


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def remembered(digest: str) -> User | None:
    """The user of an API key (by its hash) this process saw less than API_KEY_MEMORY_S ago;
    no I/O."""
    known = _recent_keys.get(digest)
    return known[0] if known is not None and known[1] > time.monotonic() else None


def _invalid_key() -> User:
    raise Unauthorized("unknown or revoked API key")


def _from_session() -> User | None:
    sid = session.get("sid")
    if not isinstance(sid, str):
        return None  # no session (or a cookie from before server-side sessions)
    if request.method in _UNSAFE and request.headers.get("X-CSRF-Token") != session.get("csrf"):
        raise Forbidden("missing or wrong X-CSRF-Token for this session", code="csrf")
    with db.pool().connection() as conn:
        row = conn.execute(
            "SELECT u.id, u.name, u.role FROM sessions s JOIN users u ON u.id = s.user_id"
            " WHERE s.id_hash = %s AND s.revoked_at IS NULL AND s.expires_at > now()",
            (_sid_hash(sid),),
        ).fetchone()
    return User(*row) if row else None


def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


# --- users and keys (shared by the API and the CLI) ---------------------------------


def create_user(name: str, password: str | None, role: str = "user") -> User:
    try:
        with db.pool().connection() as conn:
            row = conn.execute(
                "INSERT INTO users (name, password_hash, role) VALUES (%s, %s, %s)"
                " RETURNING id, name, role",
                (name, hash_password(password) if password else None, role),
            ).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(f"the name {name!r} is taken") from exc
    assert row is not None
    return User(*row)


def create_key(user: User, name: str, limit: int | None = None) -> tuple[int, str]:
    """A new API key for `user`; with `limit`, refused (409) when the user already holds
    that many active keys."""
    key = new_api_key()
    with db.pool().connection() as conn, conn.transaction():
        # The user's row lock serialises two creations racing for the last slot.
        conn.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (user.id,))
        if limit is not None:
            held = conn.execute(
                "SELECT count(*) FROM api_keys WHERE user_id = %s AND revoked_at IS NULL",
                (user.id,),
            ).fetchone()
            if held is not None and held[0] >= limit:
                raise Conflict(f"you hold {held[0]} active API keys, the most allowed; revoke "
                               "one first", code="too_many_keys")  # fmt: skip
        row = conn.execute(
            "INSERT INTO api_keys (user_id, name, prefix, key_hash) VALUES (%s, %s, %s, %s)"
            " RETURNING id",
            (user.id, name, key[:8], key_hash(key)),
        ).fetchone()
    assert row is not None
    return row[0], key


# --- HTTP -------------------------------------------------------------------------------


def _credentials() -> tuple[str, str]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    name, password = body.get("name"), body.get("password")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 64:
        raise BadRequest("'name' must be a string of 1 to 64 characters")
    if not isinstance(password, str) or len(password) < 8:
        raise BadRequest("'password' must be a string of at least 8 characters")
    if len(password) > MAX_PASSWORD:
        raise BadRequest(f"'password' must be at most {MAX_PASSWORD} characters")
    return name.strip(), password


def _throttle(name: str) -> None:
    """One try of AUTH_ATTEMPTS_PER_MINUTE for this name and for the client's address
    (the TCP peer's: behind a proxy, the proxy's), whatever its outcome."""
    limiter = services().auth_limiter
    name_id = hashlib.sha256(name.casefold().encode()).hexdigest()[:32]
    for ident in (f"auth-name:{name_id}", f"auth-addr:{request.remote_addr or '-'}"):
        wait_s = limiter.take(ident)
        if wait_s:
            raise RateLimited("too many sign-in attempts; try again later",
                              retry_after_s=int(wait_s))  # fmt: skip


def _start_session(user: User) -> Response:
    sid = secrets.token_urlsafe(32)
    lifetime_s = int(current_app.permanent_session_lifetime.total_seconds())
    with db.pool().connection() as conn:
        # The user's dead sessions go when a new one starts: the table stays small.
        conn.execute(
            "DELETE FROM sessions WHERE user_id = %s AND (revoked_at IS NOT NULL"
            " OR expires_at < now())",
            (user.id,),
        )
        conn.execute(
            "INSERT INTO sessions (id_hash, user_id, expires_at)"
            " VALUES (%s, %s, now() + make_interval(secs => %s))",
            (_sid_hash(sid), user.id, lifetime_s),
        )
    session.clear()
    session["sid"] = sid
    session["csrf"] = secrets.token_urlsafe(32)
    session.permanent = True  # the cookie lasts as long as the session (SESSION_LIFETIME_S)
    return jsonify({"user": _public(user), "csrf_token": session["csrf"]})


@bp.post("/auth/register")
def register() -> ResponseReturnValue:
    if not current_app.config["ALLOW_REGISTRATION"]:
        raise Forbidden("registration is closed: ask an admin for an account",
                        code="registration_closed")  # fmt: skip
    name, password = _credentials()
    _throttle(name)
    return _start_session(create_user(name, password)), 201


@bp.post("/auth/login")
def login() -> ResponseReturnValue:
    name, password = _credentials()
    _throttle(name)
    with db.pool().connection() as conn:
        row = conn.execute(
            "SELECT id, name, role, password_hash FROM users WHERE name = %s", (name,)
        ).fetchone()
    # An unknown name costs the same hash as a wrong password, and gets the same answer.
    if not check_password(password, row[3] if row else None) or row is None:
        raise Unauthorized("wrong name or password")
    if needs_rehash(row[3]):  # made with older parameters: today's from now on
        with db.pool().connection() as conn:
            conn.execute("UPDATE users SET password_hash = %s WHERE id = %s",
                         (hash_password(password), row[0]))  # fmt: skip
    return _start_session(User(*row[:3]))


@bp.post("/auth/logout")
def logout() -> ResponseReturnValue:
    """Ends this session for good: its cookie no longer works anywhere."""
    sid = session.get("sid")
    if isinstance(sid, str):
        with db.pool().connection() as conn:
            conn.execute(
                "UPDATE sessions SET revoked_at = now() WHERE id_hash = %s AND revoked_at IS NULL",
                (_sid_hash(sid),),
            )
    session.clear()
    return jsonify({"ok": True})


@bp.get("/auth/me")
@login_required
def me() -> ResponseReturnValue:
    return jsonify({"user": _public(current_user()), "csrf_token": session.get("csrf")})


def _public(user: User) -> dict:
    return {"id": user.id, "name": user.name, "role": user.role}


@bp.get("/keys")
@login_required
def list_keys() -> ResponseReturnValue:
    with db.pool().connection() as conn:
        rows = conn.execute(
            "SELECT id, name, prefix, created_at, last_used_at, revoked_at FROM api_keys"
            " WHERE user_id = %s ORDER BY id",
            (current_user().id,),
        ).fetchall()
    fields = ("id", "name", "prefix", "created_at", "last_used_at", "revoked_at")
    return jsonify({"keys": [dict(zip(fields, row, strict=True)) for row in rows]})


@bp.post("/keys")
@login_required
def add_key() -> ResponseReturnValue:
    user = current_user()
    if user.key_id is not None:
        # A leaked key must not be able to mint keys that outlive its revocation.
        raise Forbidden("API keys are created from a browser session, not with an API key",
                        code="session_required")  # fmt: skip
    body = request.get_json(silent=True) or {}
    name = body.get("name", "default") if isinstance(body, dict) else None
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise BadRequest("'name' must be a string of 1 to 64 characters")
    key_id, key = create_key(user, name, limit=current_app.config["MAX_KEYS_PER_USER"])
    return jsonify({"id": key_id, "name": name, "key": key, "note": "shown once"}), 201


@bp.delete("/keys/<int:key_id>")
@login_required
def revoke_key(key_id: int) -> ResponseReturnValue:
    with db.pool().connection() as conn:
        row = conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = %s AND user_id = %s"
            " AND revoked_at IS NULL RETURNING key_hash",
            (key_id, current_user().id),
        ).fetchone()
    if row is None:
        raise NotFound("no such active key")
    keys = services().keys
    services().redis.delete(keys.apikey(row[0]))
    services().redis.delete(keys.apikey_known(row[0]))  # two names: maybe two cluster slots
    _recent_keys.pop(row[0], None)  # other processes forget it within API_KEY_MEMORY_S
    return jsonify({"id": key_id, "revoked": True})


# --- CLI: flask --app webapp users create NAME [--admin] --------------------------------


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    users = click.Group("users", help="Manage users.")

    @users.command("create")
    @click.argument("name")
    @click.option("--admin", is_flag=True, help="give the user the admin role")
    @click.option("--password", help="let the user sign in to the browser UI too")
    def create(name: str, admin: bool, password: str | None) -> None:
        """Create a user and print a new API key for it (shown once)."""
        user = create_user(name, password, "admin" if admin else "user")
        _, key = create_key(user, "cli")
        click.echo(key)

    app.cli.add_command(users)
