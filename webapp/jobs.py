"""Asking without waiting: submit now, poll later (POST /api/v1/chat with "wait": false).

A submitted question is a record in Redis (`job:<id>`, a day): the job, its owner, the
attempts it dispatched (`mine`) and the ones it saw hold the lease (`seen`). Each poll
looks at the key like a waiting request does: the answer, a failure of an attempt it
knows, or a free lease, which it takes (a dead worker's job is dispatched again).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from cache.job import EXACT, SEMANTIC, Job, served_by, status
from webapp.chat import Answer, Question, found, take_lease
from webapp.errors import LLMFailed, NotFound
from webapp.services import Services

JOB_TTL_S = 24 * 3600


def submit(svc: Services, q: Question) -> str:
    """Dispatch (or join) the answer of `q` without waiting; returns a job id."""
    record: dict[str, Any] = {
        "job": q.job().to_payload(), "user_id": q.user_id, "mine": [], "seen": [], "exact": False,
    }  # fmt: skip
    cached = svc.store.get(q.key.exact) if q.reads_cache or q.req.mode == "refresh" else None
    if q.req.mode == "refresh" and cached is not None:
        record["stale"] = cached.id  # a refresh waits for a new entry, not this one
    if q.reads_cache and cached is not None and cached.serves(q.key.exact, q.threshold):
        record["exact"] = True
    else:
        _advance(svc, record)
    job_id = uuid.uuid4().hex
    _save(svc, job_id, record)
    return job_id


def poll(svc: Services, job_id: str, user_id: int) -> Answer | None:
    """The job's answer, None while pending; raises its error."""
    raw = svc.redis.get(svc.keys.job(job_id))
    record = json.loads(raw) if raw else None
    if record is None or record["user_id"] != user_id:
        raise NotFound("no such job of yours")
    job = Job.from_payload(record["job"])
    entry, holder, failure = svc.store.peek(job.key)
    stale, mine = record.get("stale"), set(record["mine"])
    if entry is not None and found(entry, job.key, job.mode, job.threshold, stale, mine):
        served = EXACT if record["exact"] else served_by(entry.key, job.key)
        said = status(served, job.mode, bool(record["mine"]))
        matched = entry.prompt if said == SEMANTIC else None
        return Answer(entry, said, job.key, matched_prompt=matched)
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
    job = Job.from_payload(record["job"])
    if holder is None:
        _, holder, _ = svc.store.peek(job.key)
    if holder is not None:
        record["seen"] = sorted({*record["seen"], holder.partition(":")[2]})
        return
    mine: set[str] = set(record["mine"])
    take_lease(svc, job, mine)
    record["mine"] = sorted(mine)


def _save(svc: Services, job_id: str, record: dict[str, Any]) -> None:
    svc.redis.set(svc.keys.job(job_id), json.dumps(record), ex=JOB_TTL_S)
