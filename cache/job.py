"""The work a web process hands to the workers, and the rule that names an answer's status.

A `Job` is one attempt at answering one exact key. The web builds it (webapp/chat.py) and
sends it as the Celery task `flock.answer` (queue embed); `answer` either serves it from
the cache or returns it with the prompt's embedding and in-flight announcement for
`flock.generate` (queue llm). On the wire it is small JSON: `to_payload()`,
`from_payload()`. `EmbedJob` is the embeddings service's (`flock.embed`); `AuditJob`
checks a semantic hit off the request path (`flock.audit`, queue audit: cache/audit.py).

Versions: a payload carries `v`. During a rolling deploy web processes and workers of two
releases exchange jobs, so

- a reader accepts the previous version too (v0, the untyped dict of the release before
  `v` existed, has the same field names) and ignores fields it does not know;
- a writer keeps every field the previous release reads, under its name and meaning. A new
  field gets a default. Renaming or dropping one takes a new version, and a reader of the
  old one for a release.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

VERSION = 1
# How a key was served, and what a request reports (README: "Status").
EXACT, SEMANTIC, COALESCED, MISS = "exact", "semantic", "coalesced", "miss"
# What a job asks; the web sends the request mode no-store as "use" with `ttl` None.
MODES = ("use", "refresh", "bypass")
SCOPES = ("shared", "private")


@dataclass(frozen=True)
class Job:
    key: str  # the exact key
    namespace: str
    prompt: str  # the normalised last user message
    model: str
    messages: list[dict[str, str]]
    options: dict[str, Any]
    mode: str  # one of MODES
    ttl: int | None  # seconds to keep the answer; None: store nothing
    threshold: float  # the request's semantic threshold
    scope: str  # one of SCOPES
    owner_id: int | None  # who asked: the owner of a private entry
    attempt: str = ""  # this attempt's lease token, set when it is dispatched
    embedding: list[float] | None = None  # set by `answer` for `generate`
    inflight_id: str | None = None  # the announcement `generate` withdraws when done

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {self.scope!r}")

    def to_payload(self) -> dict[str, Any]:
        return {"v": VERSION, **asdict(self)}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Job:
        """A job of this version or the previous one (see the module's docstring)."""
        return cls(**_known(cls, payload))


@dataclass(frozen=True)
class EmbedJob:
    """Vectors of `texts`, stored under `id` for the waiting request."""

    id: str
    texts: list[str]

    def to_payload(self) -> dict[str, Any]:
        return {"v": VERSION, **asdict(self)}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> EmbedJob:
        return cls(**_known(cls, payload))


@dataclass(frozen=True)
class AuditJob:
    """Was a semantic hit right? The LLM answers the request itself (`model`, `messages`,
    `options`) and a judge compares its answer with the one served (`response`, the
    answer of `matched_prompt`, the entry `entry_key`). `score`: the pair model's."""

    namespace: str
    prompt: str
    model: str
    messages: list[dict[str, str]]
    options: dict[str, Any]
    entry_key: str
    matched_prompt: str
    response: str
    similarity: float
    score: float

    def to_payload(self) -> dict[str, Any]:
        return {"v": VERSION, **asdict(self)}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> AuditJob:
        return cls(**_known(cls, payload))


def describe(payload: Mapping[str, Any]) -> str:
    """What monitoring may show of a task's argument (Celery's `argsrepr`, which workers put
    in their events and Flower displays): ids and modes, never a prompt or a text."""
    if "texts" in payload:
        return f"[embed id={payload.get('id')} texts={len(payload.get('texts') or ())}]"
    if "entry_key" in payload:
        return f"[audit entry={str(payload.get('entry_key'))[:16]}]"
    key, attempt = str(payload.get("key"))[:16], str(payload.get("attempt"))[:12]
    mode, scope = payload.get("mode"), payload.get("scope")
    return f"[job key={key} mode={mode} scope={scope} attempt={attempt}]"


def _known(cls: type, payload: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {name: value for name, value in payload.items() if name in names}


def status(served: str, mode: str, dispatched: bool) -> str:
    """The status a request reports for its answer: exact | semantic | coalesced | miss.

    `served`: how its key got the answer, as the worker that served it says (or, for a
    reader that only found the entry, `served_by`): exact (it was in the cache), semantic
    (a similar prompt's entry), coalesced (the generation of a similar prompt the key
    followed: cache.store), miss (generated for this key). `mode`: the job's.
    `dispatched`: this request dispatched the attempt that served it.
    """
    if mode != "use":
        return MISS  # refresh and bypass always ask the LLM themselves
    if served == MISS and not dispatched:
        return COALESCED  # it waited for a generation another request dispatched
    return served


def served_by(entry_key: str, key: str) -> str:
    """How `key` was served, judged from the entry it holds: a copy of another key's entry
    (an alias) is a semantic hit, its own entry was generated for it."""
    return SEMANTIC if entry_key != key else MISS
