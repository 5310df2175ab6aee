"""The web half of a request: exact lookup, single-flight lease, dispatch, wait.

1. GET resp:<key>: a hit is answered at once (one Redis round trip).
2. Register for the key's wake-up, then check again and take the lease if nobody
   holds it (SET NX): the winner dispatches one `answer` task, everyone waits.
3. Wait for the outcome, polling the key and the lease now and then: a lease that
   lapsed with no answer means its worker died, and a waiter takes over.

Every waiter keeps its own parameters, whoever dispatched the attempt it waits for: an
outcome that does not meet them (`takes`: a semantic answer below its threshold, an answer
that is not fresh for a refresh) is not its answer; once that attempt has finished, it
dispatches its own. An exact alias is served only at the similarity it was made at
(cache.entry: Entry.serves). TTL and no-store belong to the request that dispatches: a
waiter gets the entry as that attempt stored it.

Asking without waiting (submit now, poll later) is webapp/jobs.py, on the same lease.
"""

from __future__ import annotations

import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from kombu.exceptions import OperationalError as BrokerError

from cache import CacheKey, Entry, Outcome
from cache.job import EXACT, MISS, Job, served_by, status
from webapp.errors import LLMFailed, WaitTimeout
from webapp.schemas import ChatRequest
from webapp.services import Services


@dataclass(frozen=True)
class Answer:
    entry: Entry
    status: str
    key: str
    similarity: float | None = None
    matched_prompt: str | None = None
    checks: list[dict[str, Any]] | None = None  # what decided a semantic hit


@dataclass(frozen=True)
class Question:
    """One request on its way to an answer: what it asks and how it may be served."""

    req: ChatRequest
    key: CacheKey
    user_id: int
    ttl_s: int
    threshold: float
    timeout_s: float

    def job(self) -> Job:
        """The task's arguments: everything a worker needs and nothing else."""
        req = self.req
        return Job(
            key=self.key.exact,
            namespace=self.key.namespace,
            prompt=self.key.prompt,
            model=req.model,
            messages=req.messages,
            options=req.options,
            # no-store reads the cache like `use`; the answer it causes is never stored.
            mode="use" if req.mode == "no-store" else req.mode,
            ttl=None if req.mode in ("bypass", "no-store") else self.ttl_s,
            threshold=self.threshold,
            scope=req.scope,
            owner_id=self.user_id,
        )

    @property
    def reads_cache(self) -> bool:
        return self.req.mode in ("use", "no-store")


@dataclass(frozen=True)
class Lookup:
    """The exact cache's entry for the key (None: a miss), when the caller read it already
    (webapp.call reads it in the same round trip as the rate limit)."""

    entry: Entry | None


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
    svc: Services, q: Question, progress: Progress | None = None, lookup: Lookup | None = None
) -> Answer:
    progress = progress or Progress()
    key = q.key.exact
    if q.reads_cache:
        entry = svc.store.get(key) if lookup is None else lookup.entry
        if entry is not None and entry.serves(key, q.threshold):
            return Answer(entry, EXACT, key)
    progress.looked_up.set()
    stale = svc.store.get(key) if q.req.mode == "refresh" else None
    svc.hub.start()
    with svc.hub.watch(key) as box:
        return _wait(svc, q, box, stale.id if stale else None, progress)


def _wait(
    svc: Services,
    q: Question,
    box: queue.SimpleQueue[Outcome],
    stale_id: str | None,
    progress: Progress,
) -> Answer:
    job = q.job()
    key = job.key
    mine: set[str] = set()
    seen: set[str] = set()  # attempts seen holding the lease while we waited
    deadline = time.monotonic() + q.timeout_s
    # Poll often enough to notice a lapsed lease soon after it lapses.
    poll_s = min(2.0, max(0.2, svc.lease.lease_ms / 3000))
    first = True
    while True:
        entry, holder, failure = svc.store.peek(key)
        if entry is not None and found(entry, key, job.mode, job.threshold, stale_id, mine):
            # Found by polling: a wake-up was missed, or the answer landed just now. The
            # other waiters of this key here poll rarely (below): they get it from us (and
            # judge it by their own parameters; a refresh takes no found entry from us).
            served = EXACT if first else served_by(entry.key, key)
            svc.hub.deliver(key, Outcome(attempt="", entry=entry, status=served_by(entry.key, key),
                                         similarity=entry.similarity))  # fmt: skip
            return Answer(entry, status(served, job.mode, bool(mine)), key)
        if holder is not None:
            seen.add(holder.partition(":")[2])
        elif failure is not None and failure.attempt in seen | mine:
            # (A request that joined just now may get this failure too: it is this key's.)
            svc.hub.deliver(key, failure)
            raise LLMFailed(failure.error_message or "the LLM failed", code=failure.error_code)
        else:
            take_lease(svc, job, mine)
            progress.dispatched = bool(mine)
        first = False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"no answer within {q.timeout_s:g} s")
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
        if outcome.entry is None or not takes(q, outcome, stale_id):
            continue  # not ours: once its attempt is done (it is), we poll and dispatch ours
        return Answer(
            outcome.entry,
            status(outcome.status, job.mode, outcome.attempt in mine),
            key,
            outcome.similarity,
            outcome.matched_prompt,
            outcome.checks,
        )


def takes(q: Question, outcome: Outcome, stale_id: str | None) -> bool:
    """Whether a waiter asking `q` may answer with `outcome` (published by whichever attempt
    its key had): by the waiter's own mode and threshold, not the dispatcher's."""
    entry, key = outcome.entry, q.key.exact
    if entry is None or entry.id == stale_id:
        return False
    if q.req.mode == "refresh":
        # Only a generation for this key: not a cached entry, a semantic or a follower's one.
        return entry.key == key and outcome.status == MISS and outcome.attempt != ""
    similarity = outcome.similarity if outcome.similarity is not None else entry.similarity
    return entry.key == key or (similarity is not None and similarity >= q.threshold)


def found(
    entry: Entry, key: str, mode: str, threshold: float, stale_id: str | None, mine: set[str]
) -> bool:
    """Whether an entry found at `key` by polling answers a job of `mode`: a refresh takes
    only a new entry of its own attempt (`mine`); `use`, as an exact lookup would."""
    if mode == "bypass" or entry.id == stale_id:
        return False
    if mode == "refresh":
        return bool(mine) and entry.key == key
    return entry.serves(key, threshold)


def take_lease(svc: Services, job: Job, mine: set[str]) -> None:
    """Dispatch a new attempt at `job` if nobody holds its lease; add it to `mine`."""
    attempt = uuid.uuid4().hex
    if not svc.lease.acquire(job.key, attempt):
        return
    try:
        svc.dispatch("flock.answer", replace(job, attempt=attempt).to_payload(), queue="embed")
    except BrokerError:  # a 503 (webapp.errors); nobody is left holding a lease for nothing
        svc.lease.release(job.key, attempt)
        raise
    mine.add(attempt)
