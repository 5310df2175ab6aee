"""OpenAI-compatible API: POST /v1/chat/completions, GET /v1/models.

Also the bridge that both drop-in surfaces (this one and webapp/compat_ollama.py) use:
a request in another API's shape becomes the native body, is validated by
`ChatRequest.parse` and answered by the native path (authorize, request_key,
chat.ask or streaming.relay, the request log). Nothing here waits or caches.

How an answer was served: `X-Cache: exact|semantic|coalesced|miss` and, when known,
`X-Cache-Similarity`. A streamed answer sends its headers once the relay knows the
status: at once for a cached answer, with the first token for a new one. If a heartbeat
is due first (no token for HEARTBEAT_S), the headers go out without them.

Per-request cache control: the body field `"cache"` (the native object: mode, ttl,
threshold, scope), or `Cache-Control: no-cache` (mode refresh), `no-store` (mode
no-store), both (bypass). A `cache.mode` in the body wins over the header.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context
from werkzeug.exceptions import HTTPException

from cache import CacheKey, Entry
from webapp import chat, db, streaming
from webapp.api import authorize, log_answer
from webapp.auth import User, current_user
from webapp.errors import ApiError, BadRequest, LLMFailed, RateLimited
from webapp.schemas import ChatRequest
from webapp.services import Services, services

log = logging.getLogger(__name__)
bp = Blueprint("compat_openai", __name__, url_prefix="/v1")
Event = tuple[str, Any]

# --- the bridge, shared with compat_ollama ------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One drop-in request on the native path: same validation, key, wait, cache and log."""

    svc: Services  # captured here: a streamed answer is computed off the request context
    req: ChatRequest
    user: User
    key: CacheKey
    threshold: float
    ttl_s: int
    timeout_s: float
    id: str
    started: float
    created: int  # unix seconds, as both APIs report it

    @classmethod
    def start(cls, fields: dict[str, Any], user: User, started: float) -> Call:
        """`fields` uses the native names (model, messages, options, cache, stream)."""
        cfg = current_app.config
        req = ChatRequest.parse(_with_header_mode(fields), cfg["OLLAMA_MODEL"],
                                cfg["MAX_PROMPT_CHARS"])  # fmt: skip
        return cls(
            svc=services(),
            req=req,
            user=user,
            key=chat.request_key(req, user.id),
            threshold=cfg["SEMANTIC_THRESHOLD"] if req.threshold is None else req.threshold,
            ttl_s=cfg["CACHE_TTL"] if req.ttl is None else req.ttl,
            timeout_s=cfg["REQUEST_TIMEOUT_S"],
            id=uuid.uuid4().hex,
            started=started,
            created=int(time.time()),
        )

    def ask(self, progress: chat.Progress | None = None) -> chat.Answer:
        args = (self.svc, self.id, self.user, self.req, self.started)
        try:
            question = chat.Question(self.req, self.key, self.user.id, self.ttl_s,
                                     self.threshold, self.timeout_s)  # fmt: skip
            answer = chat.ask(self.svc, question, progress)
        except ApiError as exc:
            if exc.status >= 500:  # as the native API: client mistakes are not logged
                log_answer(*args, outcome="error", error_code=exc.code)
            raise
        log_answer(*args, answer=answer)
        return answer

    def stream(self) -> tuple[dict[str, str], Iterator[Event]]:
        """Headers and events of a streamed answer: ("delta", text), ("heartbeat", None),
        then ("done", Answer) or ("error", ApiError).

        Reads the relay up to its first event before any byte is sent, so that X-Cache
        can be a header and a failure that comes first still gets its HTTP status."""
        events = streaming.relay(self.svc, self.key, self.ask)
        first = next(events)
        if first[0] == "error":
            raise first[1]
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        if first[0] == "meta":
            headers.update(cache_headers(first[1]["status"], first[1]["similarity"]))
        return headers, _append_only(itertools.chain([first], events))


def _with_header_mode(fields: dict[str, Any]) -> dict[str, Any]:
    cache = fields.get("cache", {})
    if not isinstance(cache, dict) or "mode" in cache:
        return fields  # the body decides (or ChatRequest.parse refuses it)
    cc = request.cache_control
    mode = {(True, True): "bypass", (True, False): "refresh", (False, True): "no-store"}.get(
        (bool(cc.no_cache), bool(cc.no_store))
    )
    return {**fields, "cache": {**cache, "mode": mode}} if mode else fields


def _append_only(events: Iterator[Event]) -> Iterator[Event]:
    """Relay events for formats that can only append text.

    `meta` is dropped (it went into the headers). A `reset` (the LLM call was retried
    after streaming began) cannot be taken back, so the new text is accepted while it
    repeats what the client already has, and the stream fails if it says otherwise."""
    sent, redo = "", None  # redo: the text since a reset, while it catches up with `sent`
    diverged = LLMFailed(
        "the LLM call was retried mid-stream and its new answer differs from the text "
        "already sent; ask again",
        code="stream_diverged",
    )
    for event, data in events:
        if event == "meta":
            continue
        if event == "reset":
            redo = ""
        elif event == "delta" and redo is None:
            sent += data
            yield event, data
        elif event == "delta":
            redo += data
            if sent.startswith(redo):
                continue
            if not redo.startswith(sent):
                yield "error", diverged
                return
            data, sent, redo = redo[len(sent) :], redo, None
            yield event, data
        elif event == "done" and sent != data.entry.response:
            yield "error", diverged
            return
        else:
            yield event, data


def cache_headers(status: str, similarity: float | None) -> dict[str, str]:
    headers = {"X-Cache": status}
    if similarity is not None:
        headers["X-Cache-Similarity"] = f"{similarity:.4f}"
    return headers


def finish_reason(req: ChatRequest, entry: Entry) -> str:
    """'length' when the answer used its whole `num_predict` budget (how Ollama decides;
    the entry does not keep Ollama's done_reason), else 'stop'."""
    limit = req.options.get("num_predict")
    if isinstance(limit, int) and 0 < limit <= entry.completion_tokens:
        return "length"
    return "stop"


def read_json() -> Any:
    # force: Ollama's own examples post JSON with curl -d, i.e. without a JSON content type.
    body = request.get_json(force=True, silent=True)
    if body is None:
        raise BadRequest("the body must be valid JSON", code="invalid_json")
    return body


def cached_models(user: User) -> dict[str, float | None]:
    """The default model and every model with a live entry this user may be served, with
    the newest entry's time (unix seconds)."""
    with db.pool().connection() as conn:
        rows = conn.execute(
            "SELECT model, extract(epoch FROM max(created_at))::float8 FROM cache_entries"
            " WHERE invalidated_at IS NULL AND expires_at > now()"
            " AND (scope = 'shared' OR owner_id = %s) GROUP BY model ORDER BY model",
            (user.id,),
        ).fetchall()
    return {current_app.config["OLLAMA_MODEL"]: None, **dict(rows)}


def register_errors(blueprint: Blueprint, render: Callable[[ApiError], Any]) -> None:
    """Every error of `blueprint`'s views in that API's shape, with the native status."""

    @blueprint.errorhandler(Exception)
    def _error(exc: Exception):
        err = _as_api_error(exc)
        resp = jsonify(render(err))
        resp.status_code = err.status
        if isinstance(err, RateLimited):
            resp.headers["Retry-After"] = str(err.retry_after_s)
        return resp


def _as_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, HTTPException):  # e.g. 413 from MAX_CONTENT_LENGTH, reading the body
        err = ApiError(exc.description or exc.name, code=exc.name.lower().replace(" ", "_"))
        err.status = exc.code or 500
        return err
    log.exception("unhandled error")
    return ApiError("internal error")


# --- OpenAI -------------------------------------------------------------------------------

# OpenAI parameters that are Ollama options of the same name, unless renamed;
# max_completion_tokens (the newer name) wins over max_tokens.
_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INTEGERS = ("seed", "max_tokens", "max_completion_tokens")
_RENAMED = {"max_tokens": "num_predict", "max_completion_tokens": "num_predict"}
_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                429: "rate_limit_error"}  # fmt: skip


def _bad(message: str, param: str) -> BadRequest:
    err = BadRequest(message)
    err.param = param  # type: ignore[attr-defined]
    return err


def _openai_error(err: ApiError) -> dict[str, Any]:
    kind = "server_error" if err.status >= 500 else _ERROR_TYPES.get(err.status)
    return {"error": {"message": err.message, "type": kind or "invalid_request_error",
                      "param": getattr(err, "param", None), "code": err.code}}  # fmt: skip


register_errors(bp, _openai_error)


@bp.post("/chat/completions")
def chat_completions():
    started = time.perf_counter()
    user = authorize()
    body = read_json()
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    call = Call.start(_fields(body), user, started)
    if call.req.stream:
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        headers, events = call.stream()
        return Response(stream_with_context(_chunks(call, events, usage)),
                        mimetype="text/event-stream", headers=headers)  # fmt: skip
    answer = call.ask()
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
        raise _bad("'n' must be 1: Flock keeps one answer per question", "n")
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
        kinds = {p.get("type") if isinstance(p, dict) else None for p in content} - {"text"}
        if kinds:
            raise _bad(f"messages[{i}]: only text content parts are supported",
                       f"messages[{i}].content")  # fmt: skip
        content = "\n".join(str(p.get("text", "")) for p in content)
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
            raise _bad(f"'{name}' must be {'an integer' if kind is int else 'a number'}", name)
        options[_RENAMED.get(name, name)] = value
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _bad("'stop' must be a string or a list of strings", "stop")
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
def models():
    listed = cached_models(current_user())
    return jsonify({"object": "list", "data": [
        {"id": name, "object": "model", "created": int(at or 0), "owned_by": "flock"}
        for name, at in listed.items()
    ]})  # fmt: skip
