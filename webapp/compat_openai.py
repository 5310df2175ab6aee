"""OpenAI-compatible API: POST /v1/chat/completions, GET /v1/models.

A thin adapter on webapp/call.py: a request in OpenAI's shape becomes the native body and
is answered by the native path (same keys, cache, single flight, request log); answers and
errors are rendered in OpenAI's shapes, errors with the native status.

How an answer was served: `X-Cache: exact|semantic|coalesced|miss` and, when known,
`X-Cache-Similarity`. A streamed answer sends its headers once the relay knows the
status: at once for a cached answer, with the first token for a new one. If a heartbeat
is due first (no token for HEARTBEAT_S), the headers go out without them.

Per-request cache control: the body field `"cache"` (the native object: mode, ttl,
threshold, scope), or `Cache-Control: no-cache` (mode refresh), `no-store` (mode
no-store), both (bypass). A `cache.mode` in the body wins over the header.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, stream_with_context
from flask.typing import ResponseReturnValue

from cache import Entry
from webapp.auth import current_user
from webapp.call import (
    Call,
    cache_headers,
    cached_models,
    finish_reason,
    read_json,
    register_errors,
    with_header_mode,
)
from webapp.errors import ApiError, BadRequest
from webapp.schemas import option_problem
from webapp.services import services
from webapp.streaming import Event

bp = Blueprint("compat_openai", __name__, url_prefix="/v1")

# OpenAI parameters that are Ollama options of the same name, unless renamed;
# max_completion_tokens (the newer name) wins over max_tokens.
_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INTEGERS = ("seed", "max_tokens", "max_completion_tokens")
_RENAMED = {"max_tokens": "num_predict", "max_completion_tokens": "num_predict"}
_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                429: "rate_limit_error"}  # fmt: skip


class _BadParam(BadRequest):
    """A bad request parameter, which OpenAI's error names."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def _openai_error(err: ApiError) -> dict[str, Any]:
    kind = "server_error" if err.status >= 500 else _ERROR_TYPES.get(err.status)
    param = err.param if isinstance(err, _BadParam) else None
    return {"error": {"message": err.message, "type": kind or "invalid_request_error",
                      "param": param, "code": err.code}}  # fmt: skip


register_errors(bp, _openai_error)


@bp.post("/chat/completions")
def chat_completions() -> ResponseReturnValue:
    started = time.perf_counter()
    user = current_user()
    body = read_json()
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    fields = with_header_mode(_fields(body))
    call = Call.prepare(services(), current_app.config, fields, user, started)
    lookup = call.admit()
    if call.req.stream:
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        headers, events = call.stream(lookup)
        return Response(stream_with_context(_chunks(call, events, usage)),
                        mimetype="text/event-stream", headers=headers)  # fmt: skip
    answer = call.ask(lookup=lookup)
    entry = answer.entry
    resp = jsonify({
        "id": f"chatcmpl-{call.id}",
        "object": "chat.completion",
        "created": call.created,
        "model": call.req.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": entry.response},
            "logprobs": None,
            "finish_reason": finish_reason(call.req, entry),
        }],
        "usage": _usage(entry),
    })  # fmt: skip
    resp.headers.update(cache_headers(answer.status, answer.similarity))
    return resp


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    """The native body of an OpenAI request; OpenAI fields Flock has no use for are ignored."""
    if body.get("n") not in (None, 1):
        raise _BadParam("'n' must be 1: Flock keeps one answer per question", "n")
    messages = body.get("messages")
    if isinstance(messages, list):
        messages = [_message(i, m) for i, m in enumerate(messages)]
    fields = {"messages": messages, "options": _options(body),
              "stream": body.get("stream") or False}  # fmt: skip
    for name in ("model", "cache"):
        if body.get(name) is not None:
            fields[name] = body[name]
    return fields


def _message(i: int, message: Any) -> Any:
    if not isinstance(message, dict):
        return message  # ChatRequest.parse refuses it
    role, content = message.get("role"), message.get("content")
    if isinstance(content, list):  # content parts: only text can be cached and answered
        text = all(isinstance(p, dict) and p.get("type") == "text" for p in content)
        if not text:
            raise _BadParam(f"messages[{i}]: only text content parts are supported",
                       f"messages[{i}].content")  # fmt: skip
        if not all(isinstance(p.get("text"), str) for p in content):
            raise _BadParam(f"messages[{i}]: a text part's 'text' must be a string",
                            f"messages[{i}].content")  # fmt: skip
        content = "\n".join(p["text"] for p in content)
    # "developer" is OpenAI's newer name for the system message.
    return {"role": "system" if role == "developer" else role, "content": content}


def _options(body: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name in (*_NUMBERS, *_INTEGERS):
        value = body.get(name)
        if value is None:
            continue
        kind = int if name in _INTEGERS else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise _BadParam(f"'{name}' must be {'an integer' if kind is int else 'a number'}", name)
        option = _RENAMED.get(name, name)
        if problem := option_problem(option, value):
            raise _BadParam(f"'{name}' {problem}", name)
        options[option] = value
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _BadParam("'stop' must be a string or a list of strings", "stop")
        if problem := option_problem("stop", stop):
            raise _BadParam(f"'stop' {problem}", "stop")
        options["stop"] = stop
    return options


def _usage(entry: Entry) -> dict[str, int]:
    return {"prompt_tokens": entry.prompt_tokens, "completion_tokens": entry.completion_tokens,
            "total_tokens": entry.prompt_tokens + entry.completion_tokens}  # fmt: skip


def _chunks(call: Call, events: Iterator[Event], include_usage: bool) -> Iterator[str]:
    def chunk(delta: dict[str, str] | None, finish: str | None = None, **extra: Any) -> str:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return _sse({"id": f"chatcmpl-{call.id}", "object": "chat.completion.chunk",
                     "created": call.created, "model": call.req.model, "choices": choices,
                     **extra})  # fmt: skip

    yield chunk({"role": "assistant", "content": ""})
    for event, data in events:
        if event == "delta":
            yield chunk({"content": data})
        elif event == "heartbeat":
            yield ": heartbeat\n\n"  # an SSE comment: clients skip it, proxies see traffic
        elif event == "error":
            yield _sse(_openai_error(data))  # the openai client raises it as an APIError
            return
        elif event == "done":
            yield chunk({}, finish_reason(call.req, data.entry))
            if include_usage:  # OpenAI's shape: a last chunk with no choices
                yield chunk(None, usage=_usage(data.entry))
    yield "data: [DONE]\n\n"


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


@bp.get("/models")
def models() -> ResponseReturnValue:
    listed = cached_models(current_user())
    return jsonify({"object": "list", "data": [
        {"id": name, "object": "model", "created": int(at or 0), "owned_by": "flock"}
        for name, at in listed.items()
    ]})  # fmt: skip
