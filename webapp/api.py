"""Native API: POST /api/v1/chat."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context

from cache.keys import CacheKey
from webapp import chat, jobs, metrics, streaming
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


# Set by webapp.fastpath on a request it admitted but did not answer: (wait_s, entry).
ADMITTED = "flock.admitted"
STARTED = "flock.started"


def prepare(
    body: Any, user: User, cfg: Mapping[str, Any]
) -> tuple[ChatRequest, CacheKey, float, int]:
    """The validated request, its cache key, its threshold and its TTL."""
    req = ChatRequest.parse(body, cfg["OLLAMA_MODEL"], cfg["MAX_PROMPT_CHARS"])
    threshold = cfg["SEMANTIC_THRESHOLD"] if req.threshold is None else req.threshold
    ttl_s = cfg["CACHE_TTL"] if req.ttl is None else req.ttl
    return req, chat.request_key(req, user.id), threshold, ttl_s


def exact_lookup(req: ChatRequest, key: CacheKey) -> str | None:
    """The exact key to read in the same round trip as the rate limit (a hit costs no
    more), or None when this request must not be answered from the exact cache."""
    return key.exact if req.mode in ("use", "no-store") and req.wait else None


@bp.post("/chat")
def chat_view():
    started = request.environ.get(STARTED) or time.perf_counter()
    user = current_user()
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequest(
            "the body must be valid JSON (Content-Type: application/json)", code="invalid_json"
        )
    cfg = current_app.config
    req, key, threshold, ttl_s = prepare(body, user, cfg)
    answer_id = uuid.uuid4().hex
    svc = services()
    lookup = exact_lookup(req, key)
    # webapp.fastpath may have admitted this request already (then handed it over).
    admitted = request.environ.pop(ADMITTED, None)
    wait_s, cached = admitted or svc.admit(user.rate_key, lookup)
    if wait_s:
        raise RateLimited(
            f"over {cfg['REQUESTS_PER_MINUTE']} requests a minute", retry_after_s=int(wait_s)
        )

    question = chat.Question(req, key, user.id, ttl_s, threshold, cfg["REQUEST_TIMEOUT_S"])
    looked = chat.Lookup(cached) if lookup else None

    def ask(progress: chat.Progress | None = None) -> chat.Answer:
        try:
            answer = chat.ask(svc, question, progress, looked)
        except ApiError as exc:
            if exc.status >= 500:
                log_answer(svc, answer_id, user, req, started, outcome="error", error_code=exc.code)
            raise
        log_answer(svc, answer_id, user, req, started, answer=answer)
        return answer

    if not req.wait:
        if req.stream:
            raise BadRequest("'stream' and 'wait': false do not go together")
        job_id = jobs.submit(svc, question)
        return jsonify({"id": job_id, "state": "pending", "url": f"/api/v1/jobs/{job_id}"}), 202
    if req.stream:
        return Response(
            stream_with_context(_events(svc, key, ask, answer_id, threshold, req, started)),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    answer = ask()
    resp = jsonify(answer_body(answer, answer_id, threshold, req, started))
    resp.headers["X-Cache"] = answer.status
    return resp


@bp.get("/jobs/<job_id>")
def job_view(job_id: str):
    started = time.perf_counter()
    user = authorize()
    try:
        answer = jobs.poll(services(), job_id, user.id)
    except ApiError as exc:
        if exc.status == 404:
            raise
        error = {"code": exc.code, "message": exc.message}
        return jsonify({"id": job_id, "state": "error", "error": error})
    if answer is None:
        return jsonify({"id": job_id, "state": "pending"})
    cfg = current_app.config
    req = ChatRequest(model=answer.entry.model, messages=[], options={})
    body = answer_body(answer, job_id, cfg["SEMANTIC_THRESHOLD"], req, started)
    return jsonify({"id": job_id, "state": "done", "answer": body})


def _events(svc, key, ask, answer_id, threshold, req, started) -> Iterator[str]:
    for event, data in streaming.relay(svc, key, ask):
        if event == "meta":
            yield streaming.sse("meta", {**data, "threshold": threshold, "id": answer_id,
                                         "model": req.model})  # fmt: skip
        elif event == "delta":
            yield streaming.sse("delta", {"content": data})
        elif event == "done":
            yield streaming.sse("done", answer_body(data, answer_id, threshold, req, started))
        elif event == "error":
            yield streaming.sse("error", {"error": {"code": data.code, "message": data.message}})
        else:
            yield streaming.sse(event, {})


def answer_body(answer: chat.Answer, answer_id: str, threshold: float, req: ChatRequest, started):
    entry = answer.entry
    return {
        "id": answer_id,
        "model": entry.model,
        "message": {"role": "assistant", "content": entry.response},
        "cache": {
            "status": answer.status,
            "similarity": answer.similarity,
            "matched_prompt": answer.matched_prompt,
            "threshold": threshold,
            "checks": answer.checks,
            "scope": req.scope,
            "entry_id": entry.id,
        },
        "usage": {
            "prompt_tokens": entry.prompt_tokens,
            "completion_tokens": entry.completion_tokens,
        },
        "timings": {"total_ms": _ms_since(started)},
    }


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def log_answer(
    svc, answer_id, user, req, started, answer=None, outcome=None, error_code=None
) -> None:
    entry = answer.entry if answer else None
    saved = 0
    if answer is not None and answer.status != "miss":
        saved = entry.prompt_tokens + entry.completion_tokens
    latency_ms = _ms_since(started)
    metrics.observe_answer(outcome or answer.status, latency_ms / 1000, saved)
    svc.log.record(
        answer_id=answer_id,
        user_id=user.id,
        model=req.model,
        outcome=outcome or answer.status,
        entry_id=entry.id if entry else None,
        key=answer.key if answer else None,
        prompt=req.messages[-1]["content"],
        similarity=answer.similarity if answer else None,
        latency_ms=latency_ms,
        tokens_saved=saved,
        error_code=error_code,
    )
