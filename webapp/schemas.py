"""Validation of request bodies into frozen value objects; every refusal is a BadRequest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webapp.errors import BadRequest, TooLarge

ROLES = ("system", "user", "assistant")
CACHE_MODES = ("use", "refresh", "bypass", "no-store")
_CHAT_FIELDS = {"messages", "prompt", "model", "options", "cache", "stream", "wait"}
_CACHE_FIELDS = {"mode", "threshold", "scope", "ttl"}
MAX_TTL_S = 10 * 365 * 24 * 3600
SCOPES = ("shared", "private")


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
        options = body.get("options", {})
        if not isinstance(options, dict):
            raise BadRequest("'options' must be an object")
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
