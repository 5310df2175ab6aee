"""Asking without waiting: submit now, poll later (POST /api/v1/chat with "wait": false).

A submitted question is a record in Redis (`job:<id>`): while pending, the job (to
dispatch it again), its owner, the attempts it dispatched (`mine`) and the ones it saw
hold the lease (`seen`), for JOB_PENDING_TTL_S after the last poll. Each poll looks at the
key like a waiting request does: the answer, a failure of an attempt it knows, or a free
lease, which it takes (a dead worker's job is dispatched again). Once answered or failed,
the record shrinks to what the poller shows: the owner and the answer (or a reference to
it, when large) or the error, for JOB_DONE_TTL_S. A record is at most JOB_MAX_BYTES: a
question whose job is larger is refused (413) rather than kept.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from cache import Entry
from cache.job import EXACT, SEMANTIC, Job, served_by, status
from webapp.chat import Answer, Question, found, take_lease
from webapp.errors import LLMFailed, NotFound, TooLarge
from webapp.services import Services

JOB_PENDING_TTL_S = 3600  # after the last poll: a job nobody polls for an hour is dropped
JOB_DONE_TTL_S = 3600  # an answer (or error) waits this long to be read
JOB_MAX_BYTES = 256 * 1024
_MAX_ERROR_CHARS = 1000


def submit(svc: Services, q: Question) -> str:
    """Dispatch (or join) the answer of `q` without waiting; returns a job id."""
    record: dict[str, Any] = {
        "job": q.job().to_payload(), "user_id": q.user_id, "mine": [], "seen": [], "exact": False,
    }  # fmt: skip
    if len(json.dumps(record)) > JOB_MAX_BYTES:
        raise TooLarge(f"a question submitted without waiting is at most {JOB_MAX_BYTES} bytes")
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
    if "job" not in record:
        return _finished(svc, record)
    job = Job.from_payload(record["job"])
    entry, holder, failure = svc.store.peek(job.key)
    stale, mine = record.get("stale"), set(record["mine"])
    if entry is not None and found(entry, job.key, job.mode, job.threshold, stale, mine):
        served = EXACT if record["exact"] else served_by(entry.key, job.key)
        said = status(served, job.mode, bool(record["mine"]))
        matched = entry.prompt if said == SEMANTIC else None
        answer = Answer(entry, said, job.key, matched_prompt=matched)
        _finish(svc, job_id, user_id, {"status": said, "key": job.key, "matched": matched,
                                       "entry": entry.to_dict()})  # fmt: skip
        return answer
    if (
        holder is None
        and failure is not None
        and failure.attempt in record["seen"] + record["mine"]
    ):
        message = (failure.error_message or "the LLM failed")[:_MAX_ERROR_CHARS]
        _finish(svc, job_id, user_id, {"error": {"code": failure.error_code, "message": message}})
        raise LLMFailed(message, code=failure.error_code)
    _advance(svc, record, holder)
    _save(svc, job_id, record)
    return None


def _finish(svc: Services, job_id: str, user_id: int, result: dict[str, Any]) -> None:
    """Keep only what the poller shows; the answer itself only while it is small (else the
    poller reads it from the cache, where it is)."""
    record = {"user_id": user_id, **result}
    raw = json.dumps(record)
    if len(raw) > JOB_MAX_BYTES:
        record.pop("entry", None)
        raw = json.dumps(record)
    svc.redis.set(svc.keys.job(job_id), raw, ex=JOB_DONE_TTL_S)


def _finished(svc: Services, record: dict[str, Any]) -> Answer:
    if "error" in record:
        error = record["error"]
        raise LLMFailed(error["message"], code=error["code"])
    raw = record.get("entry")
    entry = Entry.from_dict(raw) if raw is not None else svc.store.get(record["key"])
    if entry is None:
        raise NotFound("the job's answer is no longer cached; ask again")
    return Answer(entry, record["status"], record["key"], matched_prompt=record["matched"])


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
    svc.redis.set(svc.keys.job(job_id), json.dumps(record), ex=JOB_PENDING_TTL_S)
