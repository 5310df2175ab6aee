"""Native API: POST /api/v1/chat."""

from __future__ import annotations

import time
import uuid

from flask import Blueprint, current_app, jsonify, request

from webapp import chat
from webapp.auth import User, current_user
from webapp.errors import ApiError, BadRequest, RateLimited
from webapp.schemas import ChatRequest
from webapp.services import services

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def authorize() -> User:
    """Authenticate and take one token of the caller's rate limit."""
    user = current_user()
    wait_s = services().limiter.take(user.rate_key)
    if wait_s:
        raise RateLimited(
            f"over {current_app.config['REQUESTS_PER_MINUTE']} requests a minute",
            retry_after_s=int(wait_s),
        )
    return user


@bp.post("/chat")
def chat_view():
    started = time.perf_counter()
    user = authorize()
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequest(
            "the body must be valid JSON (Content-Type: application/json)", code="invalid_json"
        )
    cfg = current_app.config
    req = ChatRequest.parse(body, cfg["OLLAMA_MODEL"], cfg["MAX_PROMPT_CHARS"])
    threshold = cfg["SEMANTIC_THRESHOLD"] if req.threshold is None else req.threshold
    answer_id = uuid.uuid4().hex
    try:
        ttl_s = cfg["CACHE_TTL"] if req.ttl is None else req.ttl
        answer = chat.ask(services(), req, user.id, ttl_s, threshold, cfg["REQUEST_TIMEOUT_S"])
    except ApiError as exc:
        if exc.status >= 500:
            _log(answer_id, user, req, started, outcome="error", error_code=exc.code)
        raise
    entry = answer.entry
    _log(answer_id, user, req, started, answer=answer)
    resp = jsonify(
        {
            "id": answer_id,
            "model": entry.model,
            "message": {"role": "assistant", "content": entry.response},
            "cache": {
                "status": answer.status,
                "similarity": answer.similarity,
                "matched_prompt": answer.matched_prompt,
                "threshold": threshold,
                "scope": req.scope,
                "entry_id": entry.id,
            },
            "usage": {
                "prompt_tokens": entry.prompt_tokens,
                "completion_tokens": entry.completion_tokens,
            },
            "timings": {"total_ms": _ms_since(started)},
        }
    )
    resp.headers["X-Cache"] = answer.status
    return resp


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _log(answer_id, user, req, started, answer=None, outcome=None, error_code=None) -> None:
    entry = answer.entry if answer else None
    saved = 0
    if answer is not None and answer.status != "miss":
        saved = entry.prompt_tokens + entry.completion_tokens
    services().log.record(
        answer_id=answer_id,
        user_id=user.id,
        model=req.model,
        outcome=outcome or answer.status,
        entry_id=entry.id if entry else None,
        key=answer.key if answer else None,
        prompt=req.messages[-1]["content"],
        similarity=answer.similarity if answer else None,
        latency_ms=_ms_since(started),
        tokens_saved=saved,
        error_code=error_code,
    )
