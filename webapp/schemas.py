"""Validation of request bodies into frozen value objects; every refusal is a BadRequest."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from webapp.errors import BadRequest, TooLarge

ROLES = ("system", "user", "assistant")
CACHE_MODES = ("use", "refresh", "bypass", "no-store")
_CHAT_FIELDS = {"messages", "prompt", "model", "options", "cache", "stream", "wait"}
_CACHE_FIELDS = {"mode", "threshold", "scope", "ttl"}
MAX_TTL_S = 10 * 365 * 24 * 3600
SCOPES = ("shared", "private")

_INT32 = 2**31 - 1
_INT64 = 2**63 - 1
# Ollama's options (its Modelfile parameters and runner settings): kind and bounds. The
# bounds hold every value a model can use (documented ones where Ollama documents them:
# temperature 0..2, num_predict -1 infinite and -2 fill the context, repeat_last_n -1 the
# whole context, mirostat 0/1/2...). Another name is refused: Ollama would ignore it, and
# the cache would file the answer under a namespace of its own. `null` is "not given", as
# Ollama reads it. keep_alive is a request field in Ollama's API; accepted here too.
OPTIONS: dict[str, tuple[str, float, float]] = {
    "temperature": ("number", 0, 2),
    "top_p": ("number", 0, 1),
    "min_p": ("number", 0, 1),
    "typical_p": ("number", 0, 1),
    "tfs_z": ("number", 0, 100),
    "repeat_penalty": ("number", 0, 10),
    "presence_penalty": ("number", -2, 2),
    "frequency_penalty": ("number", -2, 2),
    "mirostat_tau": ("number", 0, 100),
    "mirostat_eta": ("number", 0, 10),
    "top_k": ("integer", 0, _INT32),
    "num_predict": ("integer", -2, _INT32),
    "num_ctx": ("integer", 1, 1_048_576),
    "num_keep": ("integer", -1, _INT32),
    "repeat_last_n": ("integer", -1, _INT32),
    "seed": ("integer", -_INT64 - 1, _INT64),
    "mirostat": ("integer", 0, 2),
    "num_gpu": ("integer", -1, _INT32),
    "main_gpu": ("integer", 0, _INT32),
    "num_thread": ("integer", 0, _INT32),
    "num_batch": ("integer", 1, _INT32),
    "stop": ("stop", 16, 256),  # at most 16 strings of at most 256 characters
    "penalize_newline": ("boolean", 0, 0),
    "use_mmap": ("boolean", 0, 0),
    "use_mlock": ("boolean", 0, 0),
    "low_vram": ("boolean", 0, 0),
    "numa": ("boolean", 0, 0),
    "vocab_only": ("boolean", 0, 0),
    "keep_alive": ("duration", 0, 0),
}


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, str]]
    options: dict[str, Any]
    mode: str = "use"
    threshold: float | None = None
    scope: str = "shared"
    ttl: int | None = None
    stream: bool = False
    wait: bool = True

    @classmethod
    def parse(cls, body: Any, default_model: str, max_prompt_chars: int) -> ChatRequest:
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        unknown = sorted(set(body) - _CHAT_FIELDS)
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
        messages = _messages(body)
        total = sum(len(m["content"]) for m in messages)
        if total > max_prompt_chars:
            raise TooLarge(f"the prompt has {total} characters; the limit is {max_prompt_chars}")
        model = body.get("model", default_model)
        if not isinstance(model, str) or not model.strip():
            raise BadRequest("'model' must be a non-empty string")
        options = _options(body)
        cache = body.get("cache", {})
        if not isinstance(cache, dict):
            raise BadRequest("'cache' must be an object")
        unknown = sorted(set(cache) - _CACHE_FIELDS)
        if unknown:
            raise BadRequest(f"unknown cache field(s): {', '.join(unknown)}")
        return cls(
            model=model.strip(),
            messages=messages,
            options=options,
            mode=_mode(cache),
            threshold=_threshold(cache),
            scope=_scope(cache),
            ttl=_ttl(cache),
            stream=_flag(body, "stream"),
            wait=_flag(body, "wait", default=True),
        )


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    if "prompt" in body and "messages" in body:
        raise BadRequest("give either 'prompt' or 'messages', not both")
    if "prompt" in body:
        raw: Any = [{"role": "user", "content": body["prompt"]}]
        if not isinstance(body["prompt"], str):
            raise BadRequest("'prompt' must be a string")
    elif "messages" in body:
        raw = body["messages"]
    else:
        raise BadRequest("'messages' is required (or 'prompt' for one user message)")
    if not isinstance(raw, list) or not raw:
        raise BadRequest("'messages' must be a non-empty list")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{i}] must be an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise BadRequest(f"messages[{i}].role must be one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string")
        if not content.strip():
            raise BadRequest(f"messages[{i}].content is empty")
        messages.append({"role": role, "content": content})
    if messages[-1]["role"] != "user":
        raise BadRequest("the last message must have role 'user'")
    return messages


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """The options as given (valid ones are never rewritten: they make the cache key)."""
    options = body.get("options", {})
    if not isinstance(options, dict):
        raise BadRequest("'options' must be an object")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise BadRequest(f"unknown option(s): {', '.join(unknown)} (see Ollama's options)")
    for name, value in options.items():
        problem = option_problem(name, value)
        if problem:
            raise BadRequest(f"options.{name} {problem}")
    return options


def option_problem(name: str, value: Any) -> str | None:
    """What is wrong with `value` for Ollama's option `name` ("must be ..."), or None."""
    kind, low, high = OPTIONS[name]
    if value is None:
        return None
    if kind == "boolean":
        return None if isinstance(value, bool) else "must be true or false"
    if kind == "stop":
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            return "must be a list of strings"
        if len(value) > low or any(len(s) > high for s in value):
            return f"must be at most {int(low)} strings of at most {int(high)} characters"
        return None
    if kind == "duration":  # "5m", seconds, -1
        ok = isinstance(value, str) and len(value) <= 32 or _is_number(value)
        return None if ok else 'must be a duration ("5m") or a number of seconds'
    if kind == "integer" and (not _is_number(value) or not isinstance(value, int)):
        return f"must be an integer from {int(low)} to {int(high)}"
    if not _is_number(value) or not low <= value <= high:
        a, b = (int(low), int(high)) if kind == "integer" else (low, high)
        return f"must be {'an integer' if kind == 'integer' else 'a number'} from {a} to {b}"
    return None


def _is_number(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and (isinstance(value, int) or math.isfinite(value))
    )


def _mode(cache: dict[str, Any]) -> str:
    mode = cache.get("mode", "use")
    if mode not in CACHE_MODES:
        raise BadRequest(f"cache.mode must be one of {', '.join(CACHE_MODES)}")
    return str(mode)


def _threshold(cache: dict[str, Any]) -> float | None:
    value = cache.get("threshold")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise BadRequest("cache.threshold must be a number from 0 to 1")
    return float(value)


def _scope(cache: dict[str, Any]) -> str:
    scope = cache.get("scope", "shared")
    if scope not in SCOPES:
        raise BadRequest(f"cache.scope must be one of {', '.join(SCOPES)}")
    return str(scope)


def _ttl(cache: dict[str, Any]) -> int | None:
    value = cache.get("ttl")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TTL_S:
        raise BadRequest(f"cache.ttl must be a whole number of seconds from 1 to {MAX_TTL_S}")
    return value


def _flag(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be true or false")
    return value
