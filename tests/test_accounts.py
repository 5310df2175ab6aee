"""Accounts: registration switch, throttled and uniform sign-in, scrypt at OWASP's
parameters (old hashes still verify, and are upgraded), sessions that sign-out ends for
good, API keys from a session only and at most MAX_KEYS_PER_USER, security headers.

Web processes with other settings are extra ones of this module; the session's stack
(ALLOW_REGISTRATION=1, no sign-in throttle: see conftest) serves the rest."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import secrets
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import requests

from tests.conftest import auth, create_user, post_chat
from tests.test_ops import extra_web

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("accounts-logs")


def _name(prefix: str = "acct") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def register(url: str, name: str | None = None) -> tuple[requests.Session, str, str]:
    """A new user signed in: its session, CSRF token and name."""
    s = requests.Session()
    name = name or _name()
    resp = s.post(f"{url}/api/v1/auth/register", json={"name": name, "password": PASSWORD})
    assert resp.status_code == 201, resp.text
    return s, resp.json()["csrf_token"], name


def login(url: str, name: str, password: str = PASSWORD) -> requests.Response:
    return requests.post(f"{url}/api/v1/auth/login", json={"name": name, "password": password},
                         timeout=30)  # fmt: skip


def test_registration_is_closed_unless_allowed(stack_env, logdir):
    with extra_web(stack_env, logdir, ALLOW_REGISTRATION="0") as web:
        resp = requests.post(f"{web}/api/v1/auth/register",
                             json={"name": _name(), "password": PASSWORD}, timeout=30)  # fmt: skip
        config = requests.get(f"{web}/api/v1/config", timeout=10).json()
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "registration_closed"
    assert config["allow_registration"] is False


def test_an_unknown_name_and_a_wrong_password_get_the_same_answer(stack):
    _, _, name = register(stack.url)
    wrong = login(stack.url, name, "not the password")
    unknown = login(stack.url, _name("nobody"), "not the password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert login(stack.url, name).status_code == 200


def test_an_unknown_name_costs_a_hash_too(monkeypatch):
    """The same work either way: a scrypt at today's parameters for a user that does not
    exist (or has no password), so the answer's timing does not tell names apart."""
    from webapp import passwords

    calls = []
    real = hashlib.scrypt
    monkeypatch.setattr(passwords.hashlib, "scrypt",
                        lambda *a, **kw: calls.append(kw["n"]) or real(*a, **kw))  # fmt: skip
    stored = passwords.hash_password(PASSWORD)
    assert passwords.check_password(PASSWORD, stored)
    assert not passwords.check_password(PASSWORD, None)
    assert not passwords.check_password(PASSWORD, "")
    assert calls == [2**17] * 4


def login_from(url: str, address: str, name: str, password: str = PASSWORD) -> int:
    """Sign in from another loopback address (Linux routes all of 127.0.0.0/8 to lo)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(address, 0))
    try:
        conn.request("POST", "/api/v1/auth/login", json.dumps({"name": name, "password": password}),
                     {"Content-Type": "application/json"})  # fmt: skip
        return conn.getresponse().status
    finally:
        conn.close()


def test_sign_in_is_throttled_per_name_and_per_address(stack_env, logdir):
    with extra_web(stack_env, logdir, AUTH_ATTEMPTS_PER_MINUTE="3") as web:
        _, _, name = register(web)  # a try of this name, and of 127.0.0.1
        # Per name: two wrong passwords from elsewhere, then the right one from a third
        # address is refused too.
        assert [login_from(web, "127.0.0.2", name, "wrong password") for _ in range(2)] == [401] * 2
        assert login_from(web, "127.0.0.3", name) == 429
        # Per address: 127.0.0.1 has one try left of three, whatever the name.
        assert login_from(web, "127.0.0.1", _name("x"), "whatever-password") == 401
        assert login_from(web, "127.0.0.1", _name("y"), "whatever-password") == 401
        refused = login(web, _name("z"), "whatever-password")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        assert login_from(web, "127.0.0.4", _name("w"), "whatever-password") == 401


def test_old_hashes_still_verify_and_are_upgraded(stack, database):
    name = _name("old")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    b64 = base64.b64encode
    old = f"scrypt${2**14}$8$1${b64(salt).decode()}${b64(digest).decode()}"
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO users (name, password_hash) VALUES (%s, %s)", (name, old))
    assert login(stack.url, name).status_code == 200
    with psycopg.connect(database) as conn:
        (stored,) = conn.execute("SELECT password_hash FROM users WHERE name = %s",
                                 (name,)).fetchone()  # fmt: skip
    assert stored.startswith(f"scrypt${2**17}$8$1$")
    assert login(stack.url, name).status_code == 200


def test_hashing_does_not_stop_the_web_process(stack_env, logdir):
    """A sign-in spends about a second hashing; under gevent that runs in a thread, so the
    same web process keeps answering meanwhile (on the event loop itself it would answer
    nothing until the hash is done)."""
    with extra_web(stack_env, logdir, workers=1) as web:
        _, _, name = register(web)
        done = threading.Event()
        signing_in = threading.Thread(target=lambda: (login(web, name), done.set()))
        signing_in.start()
        answered = 0
        with requests.Session() as probe:
            while not done.is_set():
                assert probe.get(f"{web}/healthz", timeout=30).status_code == 200
                answered += not done.is_set()
        signing_in.join()
    assert answered >= 50, answered  # about 300 here; 3 to 7 with the hash on the loop


def test_signing_out_ends_the_session_everywhere(stack):
    s, token, _ = register(stack.url)
    copy = requests.Session()
    copy.cookies.update(s.cookies)  # the same cookie, used from elsewhere
    assert copy.get(f"{stack.url}/api/v1/auth/me").status_code == 200
    assert s.post(f"{stack.url}/api/v1/auth/logout", headers={"X-CSRF-Token": token}).ok
    assert s.get(f"{stack.url}/api/v1/auth/me").status_code == 401
    assert copy.get(f"{stack.url}/api/v1/auth/me").status_code == 401
    refused = copy.post(f"{stack.url}/api/v1/keys", json={"name": "x"},
                        headers={"X-CSRF-Token": token})  # fmt: skip
    assert refused.status_code == 401


def test_a_session_ends_after_its_lifetime(stack_env, logdir):
    with extra_web(stack_env, logdir, SESSION_LIFETIME_S="2") as web:
        s, _, _ = register(web)
        assert s.get(f"{web}/api/v1/auth/me").status_code == 200
        time.sleep(3)
        assert s.get(f"{web}/api/v1/auth/me").status_code == 401


def test_api_keys_come_from_a_session_and_are_capped(stack_env, logdir):
    with extra_web(stack_env, logdir, MAX_KEYS_PER_USER="2") as web:
        s, token, _ = register(web)
        csrf = {"X-CSRF-Token": token}
        first = s.post(f"{web}/api/v1/keys", json={"name": "one"}, headers=csrf)
        second = s.post(f"{web}/api/v1/keys", json={"name": "two"}, headers=csrf)
        assert first.status_code == second.status_code == 201
        third = s.post(f"{web}/api/v1/keys", json={"name": "three"}, headers=csrf)
        assert third.status_code == 409
        assert third.json()["error"]["code"] == "too_many_keys"

        key = first.json()["key"]
        minted = requests.post(f"{web}/api/v1/keys", json={"name": "m"}, headers=auth(key))
        assert minted.status_code == 403
        assert minted.json()["error"]["code"] == "session_required"
        # ... but a key may revoke itself (containing a leak needs no browser).
        own = requests.delete(f"{web}/api/v1/keys/{first.json()['id']}", headers=auth(key))
        assert own.status_code == 200
        again = s.post(f"{web}/api/v1/keys", json={"name": "three"}, headers=csrf)
        assert again.status_code == 201


@pytest.mark.parametrize("path", ["/", "/ui/app.js", "/api/v1/auth/me", "/api/v1/chat"])
def test_security_headers_on_ui_and_api(stack, path):
    resp = (requests.get(f"{stack.url}{path}", timeout=10) if path != "/api/v1/chat"
            else post_chat(stack.url, {"prompt": "Headers, please?"}))  # fmt: skip
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    csp = resp.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp


def test_exact_hits_below_flask_carry_the_headers_too(stack):
    prompt = f"Which headers does the {uuid.uuid4().hex[:6]} fast path send?"
    post_chat(stack.url, {"prompt": prompt})
    hit = post_chat(stack.url, {"prompt": prompt})
    assert hit.json()["cache"]["status"] == "exact"
    assert hit.headers["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" in hit.headers


def test_the_cli_still_makes_users_and_keys(stack, stack_env):
    key = create_user(stack_env, _name("cli"))
    assert requests.get(f"{stack.url}/api/v1/auth/me", headers=auth(key)).status_code == 200
