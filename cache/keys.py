"""Cache keys: what makes two requests "the same question".

The namespace hashes everything that changes the answer except the last user
message: model, output-changing options, system prompt, earlier turns and scope.
The exact key hashes the namespace with the normalised last user message, so
the semantic cache only ever compares last messages inside one namespace.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass
from typing import Any

# Ollama options that only change speed or placement, never the tokens produced.
_PERFORMANCE_OPTIONS = frozenset(
    {
        "num_thread",
        "num_gpu",
        "main_gpu",
        "low_vram",
        "use_mmap",
        "use_mlock",
        "num_batch",
        "numa",
        "vocab_only",
        "keep_alive",
    }
)


def normalise_text(text: str) -> str:
    """Unicode NFC and collapsed white space: invisible differences never split a key."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def output_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """The subset of generation options that can change the answer."""
    return {k: v for k, v in sorted((options or {}).items()) if k not in _PERFORMANCE_OPTIONS}


def _digest(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """The two hashes of one request; `prompt` is the normalised last user message."""

    namespace: str
    exact: str
    prompt: str

    @classmethod
    def build(
        cls,
        model: str,
        messages: list[dict[str, str]],
        options: dict[str, Any] | None = None,
        scope: str = "shared",
    ) -> CacheKey:
        if not messages or messages[-1]["role"] != "user":
            raise ValueError("the last message must be a user message")
        history = [
            {"role": m["role"], "content": normalise_text(m["content"])} for m in messages[:-1]
        ]
        namespace = _digest(
            {"model": model, "options": output_options(options), "history": history, "scope": scope}
        )
        prompt = normalise_text(messages[-1]["content"])
        return cls(namespace=namespace, exact=_digest([namespace, prompt]), prompt=prompt)
