"""The API's errors: one tree, one mapping from any exception to it, one JSON shape.

ApiError                base, 500 internal_error
├── BadRequest          400 (malformed JSON, missing or mistyped fields, unknown roles...)
├── Unauthorized        401 no or unknown credentials
├── Forbidden           403 not allowed (not an admin, missing CSRF token, another's entry)
├── NotFound            404
├── Conflict            409 (a taken user name)
├── TooLarge            413 prompt or body over the limit
├── RateLimited         429 over REQUESTS_PER_MINUTE (with Retry-After)
├── LLMFailed           502 the LLM failed for good (carries its message)
├── Unavailable         503 a backing service does not answer: redis_unavailable (also
│                           a full Redis), database_unavailable, broker_unavailable
└── WaitTimeout         504 no answer within REQUEST_TIMEOUT_S

`as_api_error` maps every exception a view may meet (Redis, PostgreSQL, the broker,
Werkzeug's HTTP errors, bugs) to this tree, once; `respond` renders it. The native shape is
`{"error": {"code", "message"}}`; the drop-in surfaces render the same error in their
APIs' shapes (webapp.call.register_errors), so a fault has one status on every surface.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
import redis
from flask import Flask, Response, current_app, has_app_context, jsonify
from kombu.exceptions import OperationalError as BrokerError
from psycopg_pool import PoolTimeout
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooLarge(ApiError):
    status = 413
    code = "too_large"


class LLMFailed(ApiError):
    status = 502
    code = "llm_error"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"


class WaitTimeout(ApiError):
    status = 504
    code = "timeout"


class _HttpError(ApiError):
    def __init__(self, exc: HTTPException) -> None:
        code = (exc.name or "error").lower().replace(" ", "_")
        super().__init__(exc.description or exc.name, code)
        self.status = exc.code or 500


def as_api_error(exc: BaseException) -> ApiError:
    """The ApiError a view's exception stands for; what nobody expected is logged here."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestEntityTooLarge):  # MAX_CONTENT_LENGTH, when a view reads the body
        limit = current_app.config.get("MAX_CONTENT_LENGTH") if has_app_context() else None
        return TooLarge(f"the body is over the limit of {limit or 'MAX_BODY_BYTES'} bytes")
    if isinstance(exc, HTTPException):  # routing, 405, ...
        return _HttpError(exc)
    if isinstance(exc, redis.OutOfMemoryError):  # maxmemory reached under noeviction
        log.error("Redis is full: %s", exc)
        return Unavailable("the cache is full; try again later", code="redis_unavailable")
    if isinstance(exc, redis.RedisError):
        log.error("Redis: %s", exc)
        return Unavailable("the cache is unreachable; try again", code="redis_unavailable")
    if isinstance(exc, psycopg.OperationalError | PoolTimeout):
        log.error("PostgreSQL: %s", exc)
        return Unavailable("the database is unreachable", code="database_unavailable")
    if isinstance(exc, BrokerError):
        log.error("broker: %s", exc)
        return Unavailable(f"cannot reach the task broker: {exc}", code="broker_unavailable")
    log.error("unhandled error", exc_info=exc)
    return ApiError("internal error")


def native(err: ApiError) -> dict[str, Any]:
    return {"error": {"code": err.code, "message": err.message}}


def respond(exc: BaseException, render: Callable[[ApiError], Any] = native) -> Response:
    """The response to `exc`: its status, `render`'s body, Retry-After when rate limited."""
    err = as_api_error(exc)
    resp = jsonify(render(err))
    resp.status_code = err.status
    if isinstance(err, RateLimited):
        resp.headers["Retry-After"] = str(err.retry_after_s)
    return resp


def init_app(app: Flask) -> None:
    app.register_error_handler(Exception, respond)
