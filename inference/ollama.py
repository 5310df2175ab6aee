"""Ollama client for `/api/chat`, on requests, streaming NDJSON.

Errors:
    LLMError                 base; `code` names it in the API's error body
    ├── TransientLLMError    connection errors, timeouts, 5xx, a mid-stream error line:
    │                        worth retrying with backoff
    └── PermanentLLMError    4xx such as 404 "model not found": retrying cannot help
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests


class LLMError(Exception):
    code = "llm_error"


class TransientLLMError(LLMError):
    code = "llm_unavailable"


class PermanentLLMError(LLMError):
    code = "llm_rejected"


@dataclass(frozen=True)
class Completion:
    content: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    done_reason: str | None = None


class OllamaClient:
    def __init__(
        self,
        base_url: str,
        connect_timeout_s: float = 3.05,
        read_timeout_s: float = 120.0,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # The read timeout bounds the gap between two chunks, not the whole answer.
        self.timeout = (connect_timeout_s, read_timeout_s)
        self.session = session or requests.Session()

    def chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        options: dict[str, Any] | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> Completion:
        """Stream one chat answer, handing each token to `on_token` as it arrives."""
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
        if options:
            body["options"] = options
        try:
            with self.session.post(
                f"{self.base_url}/api/chat", json=body, stream=True, timeout=self.timeout
            ) as resp:
                _raise_for_status(resp)
                return _read_stream(resp, model, on_token)
        except requests.RequestException as exc:
            raise TransientLLMError(f"Ollama at {self.base_url} unreachable: {exc}") from exc

    def version(self) -> str:
        try:
            resp = self.session.get(f"{self.base_url}/api/version", timeout=self.timeout)
            _raise_for_status(resp)
            return str(resp.json().get("version", ""))
        except (requests.RequestException, ValueError) as exc:
            raise TransientLLMError(f"Ollama at {self.base_url} unreachable: {exc}") from exc


def _raise_for_status(resp: requests.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        message = resp.json().get("error") or resp.reason
    except ValueError:
        message = resp.text[:200] or resp.reason
    text = f"Ollama answered {resp.status_code}: {message}"
    if resp.status_code >= 500 or resp.status_code == 429:
        raise TransientLLMError(text)
    raise PermanentLLMError(text)


def _read_stream(
    resp: requests.Response, model: str, on_token: Callable[[str], None] | None
) -> Completion:
    parts: list[str] = []
    for line in resp.iter_lines():
        if not line:
            continue
        try:
            chunk = json.loads(line)
        except ValueError as exc:
            raise TransientLLMError(f"Ollama sent a line that is not JSON: {line[:80]!r}") from exc
        if "error" in chunk:
            raise TransientLLMError(f"Ollama failed mid-answer: {chunk['error']}")
        token = chunk.get("message", {}).get("content", "")
        if token:
            parts.append(token)
            if on_token is not None:
                on_token(token)
        if chunk.get("done"):
            return Completion(
                content="".join(parts),
                model=chunk.get("model", model),
                prompt_tokens=int(chunk.get("prompt_eval_count") or 0),
                completion_tokens=int(chunk.get("eval_count") or 0),
                done_reason=chunk.get("done_reason"),
            )
    raise TransientLLMError("Ollama closed the stream before it was done")
