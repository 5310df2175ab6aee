"""The API's errors: one JSON shape, `{"error": {"code", "message"}}`, one handler.

ApiError            base, 500 internal_error
├── BadRequest      400 (malformed JSON, missing or mistyped fields, unknown roles...)
├── Unauthorized    401 no or unknown credentials
├── Forbidden       403 not allowed (not an admin, missing CSRF token, another's entry)
├── NotFound        404
├── Conflict        409 (a taken user name)
├── TooLarge        413 prompt or body over the limit
├── RateLimited     429 over REQUESTS_PER_MINUTE (with Retry-After)
├── LLMFailed       502 the LLM failed for good (carries its message)
│   (Redis or PostgreSQL unreachable: 503, from their own exceptions)
└── WaitTimeout     504 no answer within REQUEST_TIMEOUT_S
"""

from __future__ import annotations

import logging

import psycopg
import redis
from flask import Flask, jsonify
from psycopg_pool import PoolTimeout
from werkzeug.exceptions import HTTPException

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


class WaitTimeout(ApiError):
    status = 504
    code = "timeout"


def error_response(status: int, code: str, message: str):
    return jsonify({"error": {"code": code, "message": message}}), status


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        body, status = error_response(exc.status, exc.code, exc.message)
        if isinstance(exc, RateLimited):
            body.headers["Retry-After"] = str(exc.retry_after_s)
        return body, status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(redis.RedisError)
    def _redis_down(exc: redis.RedisError):
        log.error("Redis: %s", exc)
        return error_response(503, "redis_unavailable", "the cache is unreachable; try again")

    @app.errorhandler(psycopg.OperationalError)
    @app.errorhandler(PoolTimeout)
    def _database_down(exc: Exception):
        log.error("PostgreSQL: %s", exc)
        return error_response(503, "database_unavailable", "the database is unreachable")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")
