"""Exact hits of POST /api/v1/chat, answered below Flask.

An exact hit is the most frequent request and the cheapest to answer: one Redis command.
Flask's machinery around it (request context, session, routing, Response objects) cost
about as much as the rest of the request together, so this WSGI middleware answers the
plain case itself, with the same functions the view uses (validation, key, admission,
body, request log, metrics), and hands everything else to Flask untouched:

- an API key this process remembers (webapp.auth.remembered; no I/O), JSON body;
- a valid request that may be answered from the exact cache, neither streamed nor async;
- the answer is in the exact cache.

A request it admitted (rate-limit token taken, exact cache read) but cannot answer goes
on to the view with that admission in its environ, so nothing is counted or read twice.
Errors are left to the view too (a bad body, Redis down, anything unexpected): it builds
the same request again and answers with the JSON error and status it always gives.

A full Redis refuses the rate-limit bucket's write; the admission's read still stands, so
exact hits keep being served (cache/ratelimit.py), counted in
`flock_ratelimit_failed_open_total`.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
from flask import Flask

from cache.job import EXACT
from webapp import security
from webapp.auth import remembered
from webapp.call import ADMITTED, STARTED, Call
from webapp.chat import Answer
from webapp.errors import ApiError
from webapp.passwords import key_hash
from webapp.services import Services

PATH = "/api/v1/chat"
log = logging.getLogger(__name__)


class ExactHits:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self.next = app.wsgi_app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == PATH and environ.get("REQUEST_METHOD") == "POST":
            try:
                answered = self._answer(environ)
            except redis.RedisError:
                answered = None  # the view meets the same error and reports it (503)
            except Exception:
                log.exception("exact-hit fast path failed; the view answers")
                answered = None
            if answered is not None:
                start_response("200 OK", [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(answered))),
                    ("X-Cache", "exact"),
                    *security.HEADERS,
                ])  # fmt: skip
                return [answered]
        return self.next(environ, start_response)

    def _answer(self, environ: dict[str, Any]) -> bytes | None:
        started = time.perf_counter()
        scheme, _, api_key = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not api_key.strip():
            return None
        user = remembered(key_hash(api_key.strip()))
        if user is None or not environ.get("CONTENT_TYPE", "").startswith("application/json"):
            return None
        cfg = self.app.config
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if not 0 < length <= cfg["MAX_CONTENT_LENGTH"]:
            return None
        raw = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(raw)  # the view reads it again if we pass
        svc: Services = self.app.extensions["flock"]
        try:
            body = self.app.json.loads(raw)
            if not _reads_the_cache(body):
                return None  # refresh or bypass: never an exact hit (and no owner lookup here)
            call = Call.prepare(svc, cfg, body, user, started)
        except (ValueError, ApiError):
            return None
        lookup = call.exact_lookup
        if lookup is None or call.req.stream:
            return None
        wait_s, entry = svc.admit(user.rate_key, lookup)
        # From here on the view, if it answers instead, must not admit this request again.
        environ[ADMITTED] = (wait_s, entry)
        environ[STARTED] = started
        if wait_s or entry is None or not entry.serves(lookup, call.threshold):
            return None  # an alias below this request's threshold is a miss for it: the view
        answer = Answer(entry, EXACT, lookup)
        body = call.body(answer)
        call.log(answer)
        # What flask.jsonify would send (compact separators, trailing newline).
        return (self.app.json.dumps(body, separators=(",", ":")) + "\n").encode()


def _reads_the_cache(body: Any) -> bool:
    cache = body.get("cache") if isinstance(body, dict) else None
    return not isinstance(cache, dict) or cache.get("mode", "use") in ("use", "no-store")


def init_app(app: Flask) -> None:
    app.wsgi_app = ExactHits(app)  # type: ignore[method-assign]
