"""The API's OpenAPI 3 document, served at GET /openapi.json.

Hand-written, next to the validation it describes (webapp/schemas.py: the options'
names, kinds and ranges come from `OPTIONS` itself). tests/test_openapi.py checks that
every Flask route is here and nothing else is, and fuzzes every operation (schemathesis)
against a running stack: no 5xx, every 4xx in its surface's error shape.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from settings import Settings
from webapp.entries import MAX_AGE_S
from webapp.schemas import CACHE_MODES, MAX_TTL_S, OPTIONS, ROLES, SCOPES

bp = Blueprint("openapi", __name__)

Schema = dict[str, Any]
_STR: Schema = {"type": "string"}
_BOOL: Schema = {"type": "boolean"}
_INT: Schema = {"type": "integer"}
_NUM: Schema = {"type": "number"}
_OBJ: Schema = {"type": "object"}
_TEXT: Schema = {"type": "string", "minLength": 1, "pattern": "\\S"}  # not blank


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Schema], required: tuple[str, ...] = (), **more: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **more}
    if required:
        schema["required"] = list(required)
    return schema


def _option(kind: str, low: float, high: float) -> Schema:
    if kind == "boolean":
        schema: Schema = {"type": "boolean"}
    elif kind == "stop":
        schema = {"type": "array", "maxItems": int(low),
                  "items": {"type": "string", "maxLength": int(high)}}  # fmt: skip
    elif kind == "duration":
        schema = {"oneOf": [{"type": "string", "maxLength": 32}, {"type": "number"}]}
    else:
        schema = {"type": kind, "minimum": low, "maximum": high}
        if kind == "integer":
            schema.update(minimum=int(low), maximum=int(high))
    return {**schema, "nullable": True}


_MESSAGE = _obj({"role": {"type": "string", "enum": list(ROLES)},
                 "content": _TEXT}, ("role", "content"))  # fmt: skip
_CACHE = _obj(
    {
        "mode": {"type": "string", "enum": list(CACHE_MODES)},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1},
        "scope": {"type": "string", "enum": list(SCOPES)},
        "ttl": {"type": "integer", "minimum": 1, "maximum": MAX_TTL_S},
    },
    additionalProperties=False,
)
_MESSAGES = {"type": "array", "minItems": 1, "items": _ref("Message")}

SCHEMAS: dict[str, Schema] = {
    "Error": _obj(
        {"error": _obj({"code": _STR, "message": _STR}, ("code", "message"))}, ("error",)
    ),
    "OpenAIError": _obj(
        {
            "error": _obj(
                {
                    "message": _STR,
                    "type": _STR,
                    "param": {"type": "string", "nullable": True},
                    "code": _STR,
                },
                ("message", "type", "code"),
            )
        },
        ("error",),
    ),  # fmt: skip
    "OllamaError": _obj({"error": _STR}, ("error",)),
    "Message": _MESSAGE,
    "Cache": _CACHE,
    "Options": _obj(
        {name: _option(*spec) for name, spec in OPTIONS.items()}, additionalProperties=False
    ),  # fmt: skip
    "ChatRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "messages": _MESSAGES,
            "prompt": _TEXT,
            "model": _TEXT,
            "options": _ref("Options"),
            "cache": _ref("Cache"),
            "stream": _BOOL,
            "wait": _BOOL,
        },
        "oneOf": [{"required": ["messages"]}, {"required": ["prompt"]}],
    },
    "Answer": _obj(
        {
            "id": _STR,
            "model": _STR,
            "message": _MESSAGE,
            "cache": _obj(
                {
                    "status": {
                        "type": "string",
                        "enum": ["exact", "semantic", "coalesced", "miss"],
                    },
                    "similarity": {"type": "number", "nullable": True},
                    "matched_prompt": {"type": "string", "nullable": True},
                    "threshold": _NUM,
                    "checks": {"type": "array"},
                    "scope": _STR,
                    "entry_id": _STR,
                }
            ),  # fmt: skip
            "usage": _obj({"prompt_tokens": _INT, "completion_tokens": _INT}),
            "timings": _obj({"total_ms": _NUM}),
        },
        ("id", "model", "message", "cache"),
    ),
    "Job": _obj(
        {
            "id": _STR,
            "state": {"type": "string", "enum": ["pending", "done", "error"]},
            "url": _STR,
            "answer": _ref("Answer"),
            "error": _OBJ,
        },
        ("id", "state"),
    ),  # fmt: skip
    "Embeddings": _obj(
        {
            "model": _STR,
            "embeddings": {"type": "array", "items": {"type": "array", "items": _NUM}},
            "computed": _INT,
        },
        ("model", "embeddings"),
    ),  # fmt: skip
    "EmbedRequest": _obj(
        {
            "input": {
                "oneOf": [
                    _STR,
                    # the default of EMBED_MAX_TEXTS
                    {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": Settings.embed_max_texts,
                        "items": _STR,
                    },
                ]
            },  # fmt: skip
            "model": _STR,
        },
        ("input",),
    ),
    "Credentials": _obj(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 64},
            "password": {"type": "string", "minLength": 8, "maxLength": 1024},
        },
        ("name", "password"),
    ),  # fmt: skip
    "OpenAIChatRequest": _obj(
        {
            "model": _TEXT,
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": _obj(
                    {
                        "role": {"type": "string", "enum": [*ROLES, "developer"]},
                        "content": {
                            "oneOf": [
                                _TEXT,
                                {
                                    "type": "array",
                                    "items": _obj(
                                        {"type": {"type": "string", "enum": ["text"]}, "text": _STR}
                                    ),
                                },
                            ]
                        },
                    },
                    ("role", "content"),
                ),
            },
            "temperature": _option("number", *OPTIONS["temperature"][1:]),
            "top_p": _option("number", *OPTIONS["top_p"][1:]),
            "presence_penalty": _option("number", *OPTIONS["presence_penalty"][1:]),
            "frequency_penalty": _option("number", *OPTIONS["frequency_penalty"][1:]),
            "seed": _option("integer", *OPTIONS["seed"][1:]),
            "max_tokens": _option("integer", *OPTIONS["num_predict"][1:]),
            "max_completion_tokens": _option("integer", *OPTIONS["num_predict"][1:]),
            "stop": {"oneOf": [_STR, _option(*OPTIONS["stop"])]},
            "n": {"type": "integer", "enum": [1]},
            "stream": _BOOL,
            "stream_options": _obj({"include_usage": _BOOL}),
            "cache": _ref("Cache"),
        },
        ("model", "messages"),
    ),  # fmt: skip
    "OllamaChatRequest": _obj(
        {
            "model": _TEXT,
            "messages": _MESSAGES,
            "options": _ref("Options"),
            "stream": _BOOL,
            "cache": _ref("Cache"),
            "keep_alive": {"oneOf": [_STR, _NUM]},
        },
        ("model", "messages"),
    ),  # fmt: skip
    "OllamaGenerateRequest": _obj(
        {
            "model": _TEXT,
            "prompt": _TEXT,
            "system": _STR,
            "options": _ref("Options"),
            "stream": _BOOL,
            "cache": _ref("Cache"),
            "keep_alive": {"oneOf": [_STR, _NUM]},
        },
        ("model", "prompt"),
    ),  # fmt: skip
    "Feedback": _obj({"id": _STR, "good": _BOOL}, ("id", "good")),
    "Invalidate": _obj(
        {"model": _STR, "older_than_s": {"type": "number", "minimum": 0, "maximum": MAX_AGE_S}}
    ),
    "KeyRequest": _obj({"name": {"type": "string", "minLength": 1, "maxLength": 64}}),
}

_STATUS_TEXT = {
    200: "OK", 201: "created", 202: "accepted: poll the job", 400: "bad input",
    401: "no or unknown credentials", 403: "not allowed", 404: "not found",
    409: "conflict", 413: "too large", 429: "over the rate limit (Retry-After)",
    502: "the LLM failed", 503: "a backing service is unreachable",
    504: "no answer in time",
}  # fmt: skip


def _json(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _op(
    summary: str,
    ok: Schema | None = None,
    errors: tuple[int, ...] = (401,),
    body: Schema | None = None,
    shape: str = "Error",
    params: list[dict[str, Any]] | None = None,
    ok_status: int = 200,
    public: bool = False,
    extra: dict[int, Any] | None = None,
) -> dict[str, Any]:
    """One operation: `errors` in the error shape `shape` (Error, OpenAIError, OllamaError)."""
    responses: dict[str, Any] = {
        str(ok_status): {"description": _STATUS_TEXT[ok_status],
                         "content": _json(ok if ok is not None else _OBJ)},
    }  # fmt: skip
    for status, content in (extra or {}).items():
        responses[str(status)] = {"description": _STATUS_TEXT[status], "content": content}
    for status in errors:
        error = _json(_ref(shape))
        responses[str(status)] = {"description": _STATUS_TEXT[status], "content": error}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    if params:
        op["parameters"] = params
    if public:
        op["security"] = []
    return op


def _path_param(name: str, schema: Schema = _STR) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: Schema) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


_CHAT_ERRORS = (400, 401, 413, 429, 502, 503, 504)
_SSE = {"text/event-stream": {"schema": _STR}}
_NDJSON = {"application/x-ndjson": {"schema": _STR}}

PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/chat": {"post": _op(
        "Ask (JSON; SSE with stream: true; 202 and a job with wait: false)", _ref("Answer"),
        _CHAT_ERRORS, _ref("ChatRequest"), extra={202: _json(_ref("Job"))},
    )},
    "/api/v1/jobs/{job_id}": {"get": _op(
        "An async job's state", _ref("Job"), (400, 401, 404, 429), params=[_path_param("job_id")],
    )},
    "/api/v1/entries": {"get": _op(
        "List and search the cache entries you may see", _obj({"entries": {"type": "array"},
        "limit": _INT, "offset": _INT}), (400, 401),
        params=[_query("q", _STR), _query("model", _STR),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                _query("offset", {"type": "integer", "minimum": 0, "maximum": 10**9})],
    )},
    "/api/v1/entries/{entry_id}": {
        "get": _op("One entry", _OBJ, (400, 401, 404), params=[_path_param("entry_id")]),
        "delete": _op("Invalidate your entry (admins: any)", _OBJ, (400, 401, 403, 404),
                      params=[_path_param("entry_id")]),
    },
    "/api/v1/entries/invalidate": {"post": _op(
        "Invalidate by model or age (admins)", _OBJ, (400, 401, 403), _ref("Invalidate"),
    )},
    "/api/v1/stats": {"get": _op(
        "Counts, hit rate, savings, latency, audits", _OBJ, (400, 401),
        params=[_query("window", {"type": "integer", "minimum": 1, "maximum": 366 * 86400})],
    )},
    "/api/v1/feedback": {"post": _op(
        "Report an answer you received as good or wrong", _OBJ, (400, 401, 404, 429),
        _ref("Feedback"),
    )},
    "/api/v1/admin/namespaces": {"get": _op(
        "Namespaces' earned thresholds and their votes (admins)", _OBJ, (401, 403),
    )},
    "/api/v1/admin/namespaces/{namespace}/threshold": {"delete": _op(
        "Reset a namespace's threshold (admins)", _OBJ, (400, 401, 403, 404),
        params=[_path_param("namespace")],
    )},
    "/api/v1/auth/register": {"post": _op(
        "Create an account and a session", _OBJ, (400, 403, 409, 429), _ref("Credentials"),
        ok_status=201, public=True,
    )},
    "/api/v1/auth/login": {"post": _op(
        "Start a browser session", _OBJ, (400, 401, 429), _ref("Credentials"), public=True,
    )},
    "/api/v1/auth/logout": {"post": _op("End this session for good", _OBJ, (), public=True)},
    "/api/v1/auth/me": {"get": _op("Who is signed in, and the CSRF token", _OBJ)},
    "/api/v1/keys": {
        "get": _op("Your API keys", _OBJ),
        "post": _op("A new API key (browser sessions only)", _OBJ, (400, 401, 403, 409),
                    _ref("KeyRequest"), ok_status=201),
    },
    "/api/v1/keys/{key_id}": {"delete": _op(
        "Revoke one of your API keys", _OBJ, (401, 404), params=[_path_param("key_id", _INT)],
    )},
    "/api/v1/embed": {"post": _op(
        "Embeddings (native)", _ref("Embeddings"), (400, 401, 413, 429, 503, 504),
        _ref("EmbedRequest"),
    )},
    "/api/embed": {"post": _op(
        "Embeddings (Ollama's shape)", _ref("Embeddings"), (400, 401, 413, 429, 503, 504),
        _ref("EmbedRequest"),
    )},
    "/v1/embeddings": {"post": _op(
        "Embeddings (OpenAI's shape)", _OBJ, (400, 401, 413, 429, 503, 504),
        _ref("EmbedRequest"),
    )},
    "/v1/chat/completions": {"post": _op(
        "OpenAI-compatible chat (SSE with stream: true)", _OBJ, _CHAT_ERRORS,
        _ref("OpenAIChatRequest"), "OpenAIError", extra={200: {**_json(_OBJ), **_SSE}},
    )},
    "/v1/models": {"get": _op("The default and the cached models", _OBJ, (401,),
                              shape="OpenAIError")},
    "/api/chat": {"post": _op(
        "Ollama-compatible chat (NDJSON unless stream: false)", _OBJ, _CHAT_ERRORS,
        _ref("OllamaChatRequest"), "OllamaError", extra={200: {**_json(_OBJ), **_NDJSON}},
    )},
    "/api/generate": {"post": _op(
        "Ollama-compatible generate (NDJSON unless stream: false)", _OBJ, _CHAT_ERRORS,
        _ref("OllamaGenerateRequest"), "OllamaError", extra={200: {**_json(_OBJ), **_NDJSON}},
    )},
    "/api/tags": {"get": _op("Ollama's models, or the cached ones", _OBJ, shape="OllamaError")},
    "/api/version": {"get": _op("Ollama's version", _OBJ, shape="OllamaError")},
    "/api/v1/config": {"get": _op("What the browser UI shows", _OBJ, (), public=True)},
    "/healthz": {"get": _op("Liveness", _OBJ, (), public=True)},
    "/readyz": {"get": _op(
        "Readiness (details with the OPS_TOKEN)", _OBJ, (), public=True,
        extra={503: _json(_OBJ)},
    )},
    "/metrics": {"get": _op(
        "Prometheus metrics (OPS_TOKEN)", _STR, (401,), public=True,
    )},
    "/openapi.json": {"get": _op("This document", _OBJ, (), public=True)},
}  # fmt: skip

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "Flock",
        "version": "1",
        "description": "An LLM request cache: native, OpenAI-compatible and Ollama-compatible "
        'surfaces. Errors: {"error": {"code", "message"}} (OpenAI\'s and Ollama\'s shapes '
        "on their surfaces).",
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": "session"},
        },
    },
    "security": [{"apiKey": []}, {"session": []}],
}


@bp.get("/openapi.json")
def document() -> ResponseReturnValue:
    return jsonify(DOCUMENT)
