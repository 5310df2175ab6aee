"""Native API: POST /api/v1/chat."""

from __future__ import annotations

import time
import uuid

from flask import Blueprint, current_app, jsonify, request

from webapp import chat
from webapp.errors import BadRequest
from webapp.schemas import ChatRequest
from webapp.services import services

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.post("/chat")
def chat_view():
    started = time.perf_counter()
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequest(
            "the body must be valid JSON (Content-Type: application/json)", code="invalid_json"
        )
    cfg = current_app.config
    req = ChatRequest.parse(body, cfg["OLLAMA_MODEL"], cfg["MAX_PROMPT_CHARS"])
    answer = chat.ask(services(), req, cfg["CACHE_TTL"], cfg["REQUEST_TIMEOUT_S"])
    entry = answer.entry
    resp = jsonify(
        {
            "id": uuid.uuid4().hex,
            "model": entry.model,
            "message": {"role": "assistant", "content": entry.response},
            "cache": {
                "status": answer.status,
                "similarity": answer.similarity,
                "matched_prompt": answer.matched_prompt,
                "entry_id": entry.id,
            },
            "usage": {
                "prompt_tokens": entry.prompt_tokens,
                "completion_tokens": entry.completion_tokens,
            },
            "timings": {"total_ms": round((time.perf_counter() - started) * 1000, 3)},
        }
    )
    resp.headers["X-Cache"] = answer.status
    return resp
