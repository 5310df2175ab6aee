"""The cached answer and the wake-up message that carries it to waiters."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Entry:
    """One stored answer. `key` is the exact key it was generated for."""

    key: str
    namespace: str
    model: str
    prompt: str
    response: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Entry:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class Outcome:
    """What a worker publishes on `done:<key>`: the entry served, or an error.

    `attempt` is the lease token of the attempt that produced it, so the request
    that dispatched that attempt can tell it caused the LLM call (status `miss`).
    """

    attempt: str
    entry: Entry | None = None
    status: str = "miss"
    similarity: float | None = None
    matched_prompt: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    checks: list[dict[str, Any]] | None = None  # what decided a semantic hit

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Outcome:
        data = json.loads(raw)
        entry = data.pop("entry")
        return cls(entry=Entry(**entry) if entry else None, **data)
