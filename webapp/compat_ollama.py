"""Ollama-compatible API: POST /api/chat, POST /api/generate, GET /api/tags, GET /api/version.

Point an Ollama client at Flock (with `Authorization: Bearer <Flock API key>`) and it
is answered by the native path (a thin adapter on webapp/call.py): same keys, cache,
single flight and request log. As Ollama does, answers stream as NDJSON unless the body
says `"stream": false`, and errors are `{"error": "..."}` (with the native status).

What Flock cannot honour is refused with a 400 rather than silently ignored: images,
tools, `format`, `think`, and on /api/generate `raw`, `context`, `suffix`, `template`.
Durations are what Flock took (Flock does not see the model's own timings), so
eval_duration equals total_duration. Heartbeats are not sent: NDJSON has no comment
line and Ollama's clients parse every line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import requests
from flask import Blueprint, Response, current_app, jsonify, stream_with_context
from flask.typing import ResponseReturnValue

from cache import Entry
from webapp.auth import User, current_user
from webapp.call import (
    Call,
    cache_headers,
    cached_models,
    finish_reason,
    read_json,
    register_errors,
    with_header_mode,
)
from webapp.errors import BadRequest
from webapp.services import services
from webapp.streaming import Event

bp = Blueprint("compat_ollama", __name__, url_prefix="/api")
register_errors(bp, lambda err: {"error": err.message})

UPSTREAM_TIMEOUT_S = 2.0
VERSION = "0.6.0"  # reported when the upstream Ollama does not answer
# Request fields that change the answer in ways a cached text cannot reproduce.
_UNSUPPORTED = {
    "chat": ("tools", "format", "think", "logprobs"),
    "generate": ("raw", "context", "images", "suffix", "template", "format", "think",
                 "logprobs"),
}  # fmt: skip


@bp.post("/chat")
def chat_view() -> ResponseReturnValue:
    started = time.perf_counter()
    user = current_user()
    body = _body("chat")
    messages = body.get("messages")
    if isinstance(messages, list):
        for i, message in enumerate(messages):
            if isinstance(message, dict) and (message.get("images") or message.get("tool_calls")):
                raise BadRequest(f"messages[{i}]: images and tool calls are not supported")
        messages = [{"role": m.get("role"), "content": m.get("content")} if isinstance(m, dict)
                    else m for m in messages]  # fmt: skip
    return _answer("chat", _fields(body, messages), user, started)


@bp.post("/generate")
def generate_view() -> ResponseReturnValue:
    started = time.perf_counter()
    user = current_user()
    body = _body("generate")
    prompt, system = body.get("prompt"), body.get("system")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequest("'prompt' must be a non-empty string")
    if system is not None and not isinstance(system, str):
        raise BadRequest("'system' must be a string")
    messages = [{"role": "system", "content": system}] if system and system.strip() else []
    messages.append({"role": "user", "content": prompt})
    return _answer("generate", _fields(body, messages), user, started)


def _body(kind: str) -> dict[str, Any]:
    body = read_json()
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    given = [name for name in _UNSUPPORTED[kind] if body.get(name)]  # false/[]/"" are no-ops
    if given:
        raise BadRequest(f"not supported by Flock's cache: {', '.join(given)}")
    return body


def _fields(body: dict[str, Any], messages: Any) -> dict[str, Any]:
    # Ollama streams unless told "stream": false, even for "stream": null.
    stream = body.get("stream")
    fields = {"messages": messages, "stream": True if stream is None else stream}
    for name in ("model", "options", "cache"):
        if body.get(name) is not None:
            fields[name] = body[name]
    return fields


def _answer(kind: str, fields: dict[str, Any], user: User, started: float) -> Response:
    call = Call.prepare(services(), current_app.config, with_header_mode(fields), user, started)
    lookup = call.admit()
    if call.req.stream:
        headers, events = call.stream(lookup)
        return Response(stream_with_context(_lines(kind, call, events)),
                        mimetype="application/x-ndjson", headers=headers)  # fmt: skip
    answer = call.ask(lookup=lookup)
    resp = jsonify(_final(kind, call, answer.entry, answer.entry.response))
    resp.headers.update(cache_headers(answer.status, answer.similarity))
    return resp


def _lines(kind: str, call: Call, events: Iterator[Event]) -> Iterator[str]:
    for event, data in events:
        if event == "delta":
            yield _line({**_head(call), **_text(kind, data), "done": False})
        elif event == "done":
            yield _line(_final(kind, call, data.entry, ""))
        elif event == "error":
            yield _line({"error": data.message})  # Ollama's mid-stream error line
            return


def _head(call: Call) -> dict[str, Any]:
    created = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return {"model": call.req.model, "created_at": created}


def _text(kind: str, text: str) -> dict[str, Any]:
    if kind == "chat":
        return {"message": {"role": "assistant", "content": text}}
    return {"response": text}


def _final(kind: str, call: Call, entry: Entry, text: str) -> dict[str, Any]:
    took_ns = int((time.perf_counter() - call.started) * 1e9)
    return {
        **_head(call),
        **_text(kind, text),
        "done": True,
        "done_reason": finish_reason(call.req, entry),
        "total_duration": took_ns,
        "prompt_eval_count": entry.prompt_tokens,
        "eval_count": entry.completion_tokens,
        "eval_duration": took_ns,
    }


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"


@bp.get("/tags")
def tags() -> ResponseReturnValue:
    user = current_user()
    try:
        return jsonify(_upstream("tags"))
    except (requests.RequestException, ValueError):
        pass  # Ollama is unreachable or answered nonsense: list what the cache knows
    listed = cached_models(user)
    return jsonify({"models": [
        {"name": name, "model": name, "modified_at": _iso(at), "size": 0, "digest": "",
         "details": {}}
        for name, at in listed.items()
    ]})  # fmt: skip


@bp.get("/version")
def version() -> ResponseReturnValue:
    current_user()
    try:
        return jsonify({"version": _upstream("version")["version"]})
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return jsonify({"version": VERSION})


def _upstream(name: str) -> dict[str, Any]:
    url = f"{current_app.config['OLLAMA_URL'].rstrip('/')}/api/{name}"
    resp = requests.get(url, timeout=UPSTREAM_TIMEOUT_S)
    resp.raise_for_status()
    body = resp.json()
    if not isinstance(body, dict):
        raise ValueError(f"{url} did not answer with an object")
    return body


def _iso(at: float | None) -> str:
    moment = datetime.fromtimestamp(at or 0, UTC)
    return moment.isoformat().replace("+00:00", "Z")
