"""Embeddings as a service, on three surfaces: native POST /api/v1/embed, Ollama's
POST /api/embed and OpenAI's POST /v1/embeddings.

Vectors are computed by the embedder workers (the web never loads a model), through
the embedding cache: a text is never embedded twice.
"""

from __future__ import annotations

import json
import queue
import uuid
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from cache.job import EmbedJob
from webapp.call import authorize
from webapp.errors import BadRequest, TooLarge, WaitTimeout
from webapp.services import services

bp = Blueprint("embed", __name__)
MAX_TEXTS = 256


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    return body


def _texts(body: dict[str, Any]) -> list[str]:
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise BadRequest("'input' must be a string or a non-empty list of strings")
    if len(texts) > MAX_TEXTS:
        raise TooLarge(f"at most {MAX_TEXTS} texts per request")
    limit = current_app.config["MAX_PROMPT_CHARS"]
    if any(len(t) > limit for t in texts):
        raise TooLarge(f"a text is over the limit of {limit} characters")
    return texts


def embed_texts(texts: list[str]) -> dict[str, Any]:
    """Ask an embedder worker and wait for its vectors."""
    svc = services()
    job_id = f"embed-{uuid.uuid4().hex}"
    svc.hub.start()
    with svc.hub.watch(job_id) as box:
        svc.dispatch("flock.embed", EmbedJob(job_id, texts).to_payload(), queue="embed")
        try:
            outcome = box.get(timeout=current_app.config["REQUEST_TIMEOUT_S"])
        except queue.Empty as exc:
            raise WaitTimeout("no embedder answered in time") from exc
    if outcome.error_code:
        raise BadRequest(outcome.error_message or "embedding failed", code=outcome.error_code)
    raw = svc.redis.get(svc.keys.embres(job_id))
    if raw is None:
        raise WaitTimeout("the embedding result expired before it was read")
    return json.loads(raw)


@bp.post("/api/v1/embed")
def native() -> ResponseReturnValue:
    authorize()
    result = embed_texts(_texts(_body()))
    return jsonify(
        {"model": result["model"], "embeddings": result["vectors"], "computed": result["computed"]}
    )


@bp.post("/api/embed")
def ollama() -> ResponseReturnValue:
    authorize()
    body = _body()
    result = embed_texts(_texts(body))
    return jsonify({"model": body.get("model") or result["model"], "embeddings": result["vectors"]})


@bp.post("/v1/embeddings")
def openai() -> ResponseReturnValue:
    authorize()
    body = _body()
    texts = _texts(body)
    result = embed_texts(texts)
    tokens = sum(len(t.split()) for t in texts)  # an estimate: the tokenizer lives in workers
    return jsonify(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": v}
                for i, v in enumerate(result["vectors"])
            ],
            "model": body.get("model") or result["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
