"""The web half of a request: exact lookup, single-flight lease, dispatch, wait.

1. GET resp:<key>: a hit is answered at once (one Redis round trip).
2. Register for the key's wake-up, then check again and take the lease if nobody
   holds it (SET NX): the winner dispatches one `answer` task, everyone waits.
3. Wait for the outcome, polling the key and the lease now and then: a lease that
   lapsed with no answer means its worker died, and a waiter takes over.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from kombu.exceptions import OperationalError

from cache import CacheKey, Entry, Outcome
from webapp.errors import ApiError, LLMFailed, NotFound, WaitTimeout
from webapp.schemas import ChatRequest
from webapp.services import Services


class BrokerUnavailable(ApiError):
    status = 503
    code = "broker_unavailable"


@dataclass(frozen=True)
class Answer:
    entry: Entry
    status: str
    key: str
    similarity: float | None = None
    matched_prompt: str | None = None
    checks: list[dict[str, Any]] | None = None  # what decided a semantic hit


@dataclass
class Progress:
    """What a streaming reader may learn before the answer: has the exact cache been
    looked up (a finished generation's stream lingers: a cached answer must not be
    taken for a live one), and did this request dispatch?"""

    looked_up: threading.Event = field(default_factory=threading.Event)
    dispatched: bool = False


def request_key(req: ChatRequest, user_id: int) -> CacheKey:
    # A private entry lives in a namespace of its owner's: it can never match anyone else.
    scope = f"private:{user_id}" if req.scope == "private" else "shared"
    key = CacheKey.build(req.model, req.messages, req.options, scope)
    if req.mode == "bypass":
        # A key of its own: single-flight and wake-ups work as usual, nothing is stored.
        key = replace(key, exact=f"bypass-{uuid.uuid4().hex}")
    return key


def ask(
    svc: Services,
    req: ChatRequest,
    key: CacheKey,
    user_id: int,
    ttl_s: int,
    threshold: float,
    timeout_s: float,
    progress: Progress | None = None,
    cached: Entry | None | bool = False,
) -> Answer:
    """`cached`: the exact lookup's result when the caller already made it (False: not)."""
    progress = progress or Progress()
    if req.mode in ("use", "no-store"):
        entry = svc.store.get(key.exact) if cached is False else cached
        if isinstance(entry, Entry):
            return Answer(entry, "exact", key.exact)
    progress.looked_up.set()
    stale = svc.store.get(key.exact) if req.mode == "refresh" else None
    job = _job(req, key, user_id, ttl_s, threshold)
    svc.hub.start()
    with svc.hub.watch(key.exact) as box:
        return _wait(svc, job, box, stale.id if stale else None, timeout_s, progress)


def _job(
    req: ChatRequest, key: CacheKey, user_id: int, ttl_s: int, threshold: float
) -> dict[str, Any]:
    """The task's arguments: small JSON, everything a worker needs and nothing else."""
    return {
        "key": key.exact,
        "namespace": key.namespace,
        "prompt": key.prompt,
        "model": req.model,
        "messages": req.messages,
        "options": req.options,
        # no-store reads the cache like `use`; the answer it causes is never stored.
        "mode": "use" if req.mode == "no-store" else req.mode,
        "ttl": None if req.mode in ("bypass", "no-store") else ttl_s,
        "threshold": threshold,
        "scope": req.scope,
        "owner_id": user_id,
    }


# --- asynchronous use: submit now, poll later ----------------------------------------

JOB_TTL_S = 24 * 3600


def submit(
    svc: Services, req: ChatRequest, key: CacheKey, user_id: int, ttl_s: int, threshold: float
) -> str:
    """Dispatch (or join) the answer of `req` without waiting; returns a job id."""
    job = _job(req, key, user_id, ttl_s, threshold)
    record = {"job": job, "user_id": user_id, "mine": [], "seen": [], "exact": False}
    if req.mode in ("use", "no-store") and svc.store.get(key.exact) is not None:
        record["exact"] = True
    else:
        _advance(svc, record)
    job_id = uuid.uuid4().hex
    _save(svc, job_id, record)
    return job_id


def poll(svc: Services, job_id: str, user_id: int) -> Answer | None:
    """The job's answer, None while pending; raises its error. Watches the lease like a
    waiting request: a dead worker's job is dispatched again."""
    raw = svc.redis.get(f"{svc.store.prefix}job:{job_id}")
    record = json.loads(raw) if raw else None
    if record is None or record["user_id"] != user_id:
        raise NotFound("no such job of yours")
    key = record["job"]["key"]
    entry, holder, failure = svc.store.peek(key)
    if entry is not None and record["job"]["mode"] != "bypass":
        if record["exact"]:
            return Answer(entry, "exact", key)
        if entry.key != key:  # an alias: a similar prompt's answer
            return Answer(entry, "semantic", key, matched_prompt=entry.prompt)
        return Answer(entry, "miss" if record["mine"] else "coalesced", key)
    if (
        holder is None
        and failure is not None
        and failure.attempt in record["seen"] + record["mine"]
    ):
        raise LLMFailed(failure.error_message or "the LLM failed", code=failure.error_code)
    _advance(svc, record, holder)
    _save(svc, job_id, record)
    return None


def _advance(svc: Services, record: dict[str, Any], holder: str | None = None) -> None:
    if holder is None:
        _, holder, _ = svc.store.peek(record["job"]["key"])
    if holder is not None:
        record["seen"] = sorted({*record["seen"], holder.partition(":")[2]})
        return
    mine: set[str] = set(record["mine"])
    _take_lease(svc, record["job"], mine)
    record["mine"] = sorted(mine)


def _save(svc: Services, job_id: str, record: dict[str, Any]) -> None:
    svc.redis.set(f"{svc.store.prefix}job:{job_id}", json.dumps(record), ex=JOB_TTL_S)


def _wait(
    svc: Services,
    job: dict[str, Any],
    box: queue.SimpleQueue[Outcome],
    stale_id: str | None,
    timeout_s: float,
    progress: Progress,
) -> Answer:
    key = job["key"]
    mine: set[str] = set()
    seen: set[str] = set()  # attempts seen holding the lease while we waited
    deadline = time.monotonic() + timeout_s
    # Poll often enough to notice a lapsed lease soon after it lapses.
    poll_s = min(2.0, max(0.2, svc.lease.lease_ms / 3000))
    first = True
    while True:
        entry, holder, failure = svc.store.peek(key)
        if entry is not None and entry.id != stale_id and job["mode"] != "bypass":
            # Found by polling: a wake-up was missed, or the answer landed just now. The
            # other waiters of this key here poll rarely (below): they get it from us.
            svc.hub.deliver(key, Outcome(attempt="", entry=entry))
            if first and job["mode"] == "use":
                return Answer(entry, "exact", key)
            status = "miss" if mine or job["mode"] != "use" else "coalesced"
            return Answer(entry, status, key)
        if holder is not None:
            seen.add(holder.partition(":")[2])
        elif failure is not None and failure.attempt in seen | mine:
            # (A request that joined just now may get this failure too: it is this key's.)
            svc.hub.deliver(key, failure)
            raise LLMFailed(failure.error_message or "the LLM failed", code=failure.error_code)
        else:
            _take_lease(svc, job, mine)
            progress.dispatched = bool(mine)
        first = False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"no answer within {timeout_s:g} s")
        # The k waiters of this key in this process share the polling: each waits k poll
        # periods, so together they poll about once a period whatever their number (10,000
        # parked requests would otherwise make 5,000 Redis reads a second).
        sharing = max(1, svc.hub.waiting(key))
        try:
            outcome = box.get(
                timeout=min(remaining, poll_s * sharing * random.uniform(0.8, 1.2))
            )
        except queue.Empty:
            continue
        if outcome.error_code is not None:
            raise LLMFailed(outcome.error_message or "the LLM failed", code=outcome.error_code)
        if outcome.entry is None or outcome.entry.id == stale_id:
            continue
        status = outcome.status
        if job["mode"] != "use":
            status = "miss"  # refresh and bypass always ask the LLM themselves
        elif status == "miss" and outcome.attempt not in mine:
            status = "coalesced"
        return Answer(
            outcome.entry, status, key, outcome.similarity, outcome.matched_prompt, outcome.checks
        )


def _take_lease(svc: Services, job: dict[str, Any], mine: set[str]) -> None:
    attempt = uuid.uuid4().hex
    if not svc.lease.acquire(job["key"], attempt):
        return
    try:
        svc.dispatch("flock.answer", {**job, "attempt": attempt}, queue="embed")
    except OperationalError as exc:
        svc.lease.release(job["key"], attempt)
        raise BrokerUnavailable(f"cannot reach the task broker: {exc}") from exc
    mine.add(attempt)
