"""The cached answer and the wake-up message that carries it to waiters.

Both travel as JSON between processes of two releases during a rolling deploy: a reader
ignores fields it does not know, and a writer leaves out the newer optional fields while
they are None, so what the previous release wrote and reads stays exactly as it was
(only an alias, below, carries them).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Entry:
    """One stored answer. `key` is the exact key it was generated for.

    A copy held under another exact key is an alias (a semantic hit, a follower's answer):
    it records the similarity of that key's prompt to this entry's and the threshold it
    passed, so that it is served only to requests that accept that much (`serves`)."""

    key: str
    namespace: str
    model: str
    prompt: str
    response: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)
    similarity: float | None = None  # an alias only
    threshold: float | None = None  # an alias only, when its maker said

    def serves(self, key: str, threshold: float) -> bool:
        """Whether this copy, found at exact key `key`, may answer a request requiring
        `threshold`: the key's own entry always; an alias only when it was made at that
        similarity or more (one made before aliases said so: never)."""
        if self.key == key:
            return True
        return self.similarity is not None and self.similarity >= threshold

    def to_dict(self) -> dict[str, Any]:
        return _without_none(asdict(self), ("similarity", "threshold"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entry:
        return cls(**_known(cls, data))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Entry:
        return cls.from_dict(json.loads(raw))


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
    threshold: float | None = None  # the threshold a semantic hit passed, when known

    def to_json(self) -> str:
        data: dict[str, Any] = _without_none(asdict(self), ("threshold",))
        data["entry"] = self.entry.to_dict() if self.entry else None
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Outcome:
        data = _known(cls, json.loads(raw))
        entry = data.pop("entry", None)
        return cls(entry=Entry.from_dict(entry) if entry else None, **data)


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _without_none(data: dict[str, Any], optional: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not (k in optional and v is None)}
