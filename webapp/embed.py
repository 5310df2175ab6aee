"""Embeddings as a service, on three surfaces: native POST /api/v1/embed, Ollama's
POST /api/embed and OpenAI's POST /v1/embeddings.

Vectors are computed by the embedder workers (the web never loads a model), through
the embedding cache: a text is never embedded twice.

Bounded: at most EMBED_MAX_TEXTS texts and EMBED_MAX_CHARS characters a request (413),
each text one token of the caller's rate limit; the worker's result (`embres:<id>`, about
8 KB of JSON a text) is deleted by the request that reads it, and expires within a minute
when nobody does.
"""

from __future__ import annotations

import json
import queue
import uuid
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from cache.job import EmbedJob
from webapp.auth import current_user
from webapp.call import authorize
from webapp.errors import BadRequest, TooLarge, WaitTimeout
from webapp.services import services

bp = Blueprint("embed", __name__)


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
    cfg = current_app.config
    if len(texts) > cfg["EMBED_MAX_TEXTS"]:
        raise TooLarge(f"at most {cfg['EMBED_MAX_TEXTS']} texts per request")
    limit = cfg["MAX_PROMPT_CHARS"]
    if any(len(t) > limit for t in texts):
        raise TooLarge(f"a text is over the limit of {limit} characters")
    total = sum(len(t) for t in texts)
    if total > cfg["EMBED_MAX_CHARS"]:
        raise TooLarge(f"the texts have {total} characters; the limit is {cfg['EMBED_MAX_CHARS']}")
    return texts


def _admit() -> tuple[dict[str, Any], list[str]]:
    """The request's body and texts, once its caller is known (401 first) and has paid one
    token of the rate limit per text."""
    current_user()
    body = _body()
    texts = _texts(body)
    authorize(cost=len(texts))
    return body, texts


def embed_texts(texts: list[str]) -> dict[str, Any]:
    """Ask an embedder worker and wait for its vectors."""
    svc = services()
    job_id = f"embed-{uuid.uuid4().hex}"
    svc.hub.start()
    with svc.hub.watch(job_id) as box:
        svc.dispatch("flock.embed", EmbedJob(job_id, texts).to_payload(), queue="embeddings")
        try:
            outcome = box.get(timeout=current_app.config["REQUEST_TIMEOUT_S"])
        except queue.Empty as exc:
            raise WaitTimeout("no embedder answered in time") from exc
    if outcome.error_code:
        raise BadRequest(outcome.error_message or "embedding failed", code=outcome.error_code)
    raw = svc.redis.getdel(svc.keys.embres(job_id))  # read once: nobody else wants it
    if raw is None:
        raise WaitTimeout("the embedding result expired before it was read")
    return json.loads(raw)


@bp.post("/api/v1/embed")
def native() -> ResponseReturnValue:
    result = embed_texts(_admit()[1])
    return jsonify(
        {"model": result["model"], "embeddings": result["vectors"], "computed": result["computed"]}
    )


@bp.post("/api/embed")
def ollama() -> ResponseReturnValue:
    body, texts = _admit()
    result = embed_texts(texts)
    return jsonify({"model": body.get("model") or result["model"], "embeddings": result["vectors"]})


@bp.post("/v1/embeddings")
def openai() -> ResponseReturnValue:
    body, texts = _admit()
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
