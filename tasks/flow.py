"""What the tasks do, as plain functions that tests can call directly.

Both steps are idempotent: a redelivered or duplicated job first re-checks the
cache and the lease, so it either serves what is there or steps aside.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import psycopg

from cache import Entry, Outcome
from cache.audit import choose_threshold
from cache.inflight import InFlight
from cache.job import EXACT, MISS, SEMANTIC, AuditJob, EmbedJob, Job
from cache.lease import Follower
from cache.pending import PendingPut
from cache.semantic import Candidate
from cache.verify import (
    Check,
    Option,
    Verdict,
    comparable,
    said_yes,
    same_answer,
    same_question,
)
from inference import Completion, LLMError, PermanentLLMError
from tasks.resources import Resources

log = logging.getLogger(__name__)


def answer(res: Resources, job: Job) -> Job | None:
    """Serve from the exact or semantic cache, or follow a similar prompt being generated;
    otherwise return the job for `generate`, with the prompt's embedding."""
    # Redis only: the exact key's record in PostgreSQL (when Redis lost it) is read by
    # `generate` before it calls the LLM; a semantic hit needs no PostgreSQL round trip.
    if _served_from_cache(res, job, durable=False):
        return None
    if job.mode == "bypass" or not res.embedder().fits(job.prompt):
        # Bypass asks the LLM; a prompt beyond the encoder's window is matched exactly only
        # (its vector would be the vector of its beginning).
        return job if res.lease.claim(job.key, job.attempt, "q") else None
    vector, remember = _embed(res, job.prompt)
    try:
        return _decide(res, job, vector)
    finally:
        remember()  # after the outcome is out: waiters do not wait for cache writes


def _decide(res: Resources, job: Job, vector: np.ndarray) -> Job | None:
    ns = job.namespace
    # Announce first, then look at earlier announcements, then search the index: a leader
    # that finished meanwhile is either still announced or already in the index, since it
    # adds to the index before it withdraws its announcement.
    announced = res.inflight.announce(ns, job.key, job.prompt, vector)
    bar = _Bar(max(job.threshold, res.namespace_threshold(ns)), res.score_threshold(ns))
    for _ in range(3):
        # List before searching (see above); judge the leaders only if the index has nothing.
        leaders = res.inflight.listed(ns, before=announced) if job.mode == "use" else []
        if job.mode == "use" and _served_semantically(res, job, vector, bar):
            res.inflight.withdraw(ns, announced)
            return None
        leader = _nearest_leader(res, job, vector, leaders, bar)
        if leader is None:
            break
        me = Follower(job.key, job.attempt, leader.similarity)
        if res.lease.follow(leader.key, me):
            res.inflight.withdraw(ns, announced)
            # Streaming waiters of our key read the leader's tokens from now on.
            res.tokens.follow(job.key, leader.key, leader.similarity, leader.prompt)
            return None
    # Renew the queued lease: the llm queue may hold the job a while longer.
    if not res.lease.claim(job.key, job.attempt, "q"):
        res.inflight.withdraw(ns, announced)
        return None
    return replace(job, embedding=vector.tolist(), inflight_id=announced)


def generate(res: Resources, job: Job) -> None:
    key, attempt = job.key, job.attempt
    if _served_from_cache(res, job):
        _withdraw(res, job)
        return
    if not res.lease.claim(key, attempt, "r"):
        log.info("another attempt is generating %s; %s steps aside", key[:12], attempt)
        _withdraw(res, job)
        return
    try:
        with _Heartbeat(res, key, attempt):
            completion = _complete_with_retries(res, job)
    except LLMError as exc:
        res.store.finish(
            key,
            Outcome(attempt=attempt, error_code=exc.code, error_message=str(exc)),
            ttl_s=None,
        )
        _withdraw(res, job)
        return
    entry = Entry(
        key=key,
        namespace=job.namespace,
        model=job.model,
        prompt=job.prompt,
        response=completion.content,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
    )
    if job.ttl is not None:
        # The record first (PostgreSQL), then the index, then the hot copy and the
        # wake-up: whoever no longer sees our announcement finds the entry.
        vector = np.asarray(job.embedding, dtype=np.float32) if job.embedding else None
        if _record(res, job, entry, vector) and vector is not None:
            res.index.add(job.namespace, key, job.prompt, vector)
    res.store.finish(key, Outcome(attempt=attempt, entry=entry, status=MISS), job.ttl)
    _withdraw(res, job)


def _record(res: Resources, job: Job, entry: Entry, vector: np.ndarray | None) -> bool:
    """PostgreSQL's record of the answer. When PostgreSQL is out of reach the answer is not
    lost: the put waits in Redis for the sweeper (cache/pending.py), which also indexes it,
    and the answer goes out now. An answer PostgreSQL refuses for good (text it cannot hold)
    is served and kept in Redis, unrecorded. Returns whether it was recorded."""
    assert job.ttl is not None
    put = PendingPut(entry, job.ttl, vector, job.owner_id, job.scope == "private")
    try:
        res.pg.call(res.repo.put, put.entry, put.ttl_s, put.vector, put.owner_id, put.private)
        return True
    except psycopg.OperationalError as exc:
        log.warning("PostgreSQL did not take the answer of %s (%s); recorded later",
                    job.key[:12], exc)  # fmt: skip
        res.pending.push(put)
        return False
    except psycopg.Error as exc:  # this answer it will never take (a NUL in its text)
        log.error("PostgreSQL refused the answer of %s (%s); served from Redis only",
                  job.key[:12], exc)  # fmt: skip
        return False


def embed(res: Resources, job: EmbedJob) -> None:
    """The embeddings service: vectors of the job's texts (cache first), stored under its
    id for a minute, and a wake-up on done:<id> for the waiting request."""
    key = job.id
    try:
        model = res.embedder()
        vectors, computed = res.embeddings.embed(model.name, job.texts, model.embed)
        res.redis.set(
            res.keys.embres(key),
            json.dumps({"model": model.name, "computed": computed, "vectors": vectors.tolist()}),
            ex=60,
        )
        outcome = Outcome(attempt=key)
    except Exception as exc:
        outcome = Outcome(attempt=key, error_code="embedding_failed", error_message=str(exc))
        res.store.finish(key, outcome, ttl_s=None)
        raise
    res.store.finish(key, outcome, ttl_s=None)


def _embed(res: Resources, text: str) -> tuple[np.ndarray, Callable[[], None]]:
    """The text's vector (embedding cache first), and a function that caches it if it was
    computed here."""
    model = res.embedder()
    vector = res.embeddings.get(model.name, text)
    if vector is not None:
        return vector, lambda: None
    vector = model.embed([text])[0]
    return vector, lambda: res.embeddings.put(model.name, text, vector)


def _withdraw(res: Resources, job: Job) -> None:
    if job.inflight_id:
        res.inflight.withdraw(job.namespace, job.inflight_id)


class _Bar:
    """What a candidate must pass: cosine >= `similarity` (the request's threshold, raised
    by its namespace's wrong hits), then the verifier with the pair model's score >=
    `score` (the namespace's, learned from audits: cache/audit.py)."""

    def __init__(self, similarity: float, score: float) -> None:
        self.similarity, self.score = similarity, score


def _nearest_leader(
    res: Resources, job: Job, vector: np.ndarray, announced: list[InFlight], bar: _Bar
) -> Candidate | None:
    """The most similar prompt announced before ours that passes the same test as a hit."""
    leaders = [f for f in announced if f.key != job.key]
    if not leaders:
        return None
    scores = np.vstack([f.vector for f in leaders]) @ vector
    ranked = sorted(zip(scores, leaders, strict=True), key=lambda p: -p[0])
    cands = [Candidate(leader.key, leader.prompt, float(score)) for score, leader in ranked[:3]]
    picked = _choose(res, job, cands, bar)
    return picked[0] if picked else None


def _served_semantically(res: Resources, job: Job, vector: np.ndarray, bar: _Bar) -> bool:
    cands = [c for c in res.index.search(job.namespace, vector, k=3) if c.key != job.key]
    asked = False  # the LLM's second opinion: once per lookup at most
    while True:
        picked = _choose(res, job, cands, bar)
        if picked is None and not asked:
            asked, picked = True, _second_opinion(res, job, cands, bar)
        if picked is None:
            return False
        cand, verdict = picked
        try:
            entry = res.pg.call(_load, res, cand.key)
        except psycopg.OperationalError as exc:
            # Its record cannot be read now: not served, but not forgotten either.
            log.warning("PostgreSQL out of reach loading %s: %s", cand.key[:12], exc)
            entry = res.store.get(cand.key)
            if entry is None:
                cands.remove(cand)
                continue
        if entry is None:
            # Expired or invalidated: every index must forget it. (An entry still being
            # written has its record in PostgreSQL before it reaches any index.)
            res.index.remove(job.namespace, cand.key)
            cands.remove(cand)
            continue
        outcome = Outcome(
            attempt=job.attempt,
            entry=entry,
            status=SEMANTIC,
            similarity=cand.similarity,
            threshold=bar.similarity,
            matched_prompt=cand.prompt,
            checks=verdict.as_dict()["checks"],
        )
        res.store.finish(job.key, outcome, job.ttl)
        _maybe_audit(res, job, cand, entry, verdict)
        return True


def _choose(
    res: Resources, job: Job, cands: list[Candidate], bar: _Bar
) -> tuple[Candidate, Verdict] | None:
    """The nearest candidate that passes `bar`, in cosine order; the same choice as
    `python -m bench.accuracy`."""
    options = [Option(c.prompt, c.similarity, c) for c in cands]
    picked = res.verifier.choose(
        job.prompt, options, threshold=bar.similarity, score_threshold=bar.score
    )
    return (picked[0].ref, picked[1]) if picked else None


def _second_opinion(
    res: Resources, job: Job, cands: list[Candidate], bar: _Bar
) -> tuple[Candidate, Verdict] | None:
    """The uncertain band (LLM_VERIFY_BAND, off by default): the nearest candidate above
    the threshold that the verifier refused by its score alone, with a score in the band,
    is served when the LLM says both ask the same thing. At most one short LLM call."""
    if res.llm_band is None:
        return None
    above = [c for c in cands if c.similarity >= bar.similarity]
    if not above:
        return None
    cand = max(above, key=lambda c: c.similarity)
    verdict = res.verifier.verify(job.prompt, cand.prompt, cand.similarity, bar.score)
    if not res.verifier.doubtful(verdict, res.llm_band):
        return None
    try:
        reply = res.llm.chat(job.model, *same_question(job.prompt, cand.prompt)).content
    except LLMError as exc:
        log.warning("no second opinion on %s: %s", job.key[:12], exc)
        return None
    check = Check("llm", said_yes(reply), f"{job.model} said {reply.strip()[:20]!r}")
    log.info("second opinion on %s: %s", job.key[:12], check.detail)
    if not check.passed:
        return None
    return cand, replace(verdict, accept=True, checks=(*verdict.checks, check))


def _maybe_audit(res: Resources, job: Job, cand: Candidate, entry: Entry, verdict: Verdict) -> None:
    """AUDIT_RATE of the semantic hits (not the text-identical ones) go to the audit queue;
    a failure to enqueue costs the audit, never the hit."""
    if verdict.check("identical") is not None or random.random() >= res.audit_rate:
        return
    audit_job = AuditJob(
        namespace=job.namespace, prompt=job.prompt, model=job.model,
        messages=job.messages, options=job.options, entry_key=cand.key,
        matched_prompt=cand.prompt, response=entry.response,
        similarity=cand.similarity, score=verdict.score,
    )  # fmt: skip
    try:
        res.send_audit(audit_job)
    except Exception as exc:
        log.warning("audit of %s not queued: %s", job.key[:12], exc)


def audit(res: Resources, job: AuditJob) -> bool:
    """Answer the audited request with the LLM, judge the served answer against it, record
    the verdict and move the namespace's score threshold (cache/audit.py). Returns whether
    the hit was right."""
    fresh = res.llm.chat(job.model, job.messages, job.options).content
    if comparable(fresh) == comparable(job.response):
        correct, how = True, "same answer"
    else:
        reply = res.llm.chat(job.model, *same_answer(job.prompt, job.response, fresh)).content
        correct, how = said_yes(reply), f"judge said {reply.strip()[:20]!r}"
    res.repo.add_audit(job.namespace, job.entry_key, job.prompt, job.matched_prompt,
                       job.similarity, job.score, correct, how)  # fmt: skip
    res.redis.hincrby(res.keys.auditcounts, "right" if correct else "wrong")
    audits = res.repo.audits(job.namespace)
    threshold = choose_threshold(audits, res.max_error, res.calibration)
    res.redis.hset(res.keys.scorethreshold, job.namespace, str(threshold))
    log.info("audit of %s: %s (%s); score threshold now %.3f",
             job.entry_key[:12], "right" if correct else "wrong", how, threshold)  # fmt: skip
    return correct


@contextmanager
def errors_reach_waiters(res: Resources, job: Job) -> Iterator[None]:
    """A bug (or a lost database) must not leave waiters hanging until their timeout:
    publish the error to them, then let Celery record the failure."""
    try:
        yield
    except Exception as exc:
        log.exception("task failed for %s", job.key[:12])
        outcome = Outcome(attempt=job.attempt, error_code="internal_error", error_message=str(exc))
        res.store.finish(job.key, outcome, ttl_s=None)
        _withdraw(res, job)
        raise


def _load(res: Resources, key: str) -> Entry | None:
    """The entry of `key` from Redis, else from PostgreSQL (Redis may have lost it: the
    hot copy is put back)."""
    entry = res.store.get(key)
    if entry is None:
        found = res.repo.live(key)
        if found is not None:
            entry, ttl_s = found
            res.store.put(key, entry, ttl_s)
    return entry


def _served_from_cache(res: Resources, job: Job, durable: bool = True) -> bool:
    """Serve the exact key's entry if there is one (`durable`: also from PostgreSQL).

    An alias made for a request that accepted less similarity than this job does is no
    answer for it: the job goes on as a miss for its key, and its answer replaces the
    alias. The outcome carries an alias's similarity, for the waiters to judge it too."""
    if job.mode != "use":
        return False
    try:
        entry = res.pg.call(_load, res, job.key) if durable else res.store.get(job.key)
    except psycopg.OperationalError as exc:  # no record to read: the LLM answers
        log.warning("PostgreSQL out of reach looking up %s: %s", job.key[:12], exc)
        entry = res.store.get(job.key)
    if entry is None or not entry.serves(job.key, job.threshold):
        return False
    outcome = Outcome(attempt=job.attempt, entry=entry, status=EXACT,
                      similarity=entry.similarity, threshold=entry.threshold)  # fmt: skip
    res.store.finish(job.key, outcome, None)
    return True


def _complete_with_retries(res: Resources, job: Job) -> Completion:
    key = job.key
    for retry in range(res.max_retries + 1):
        if retry:
            res.tokens.reset(key)
        try:
            completion = res.llm.chat(
                job.model, job.messages, job.options,
                on_token=lambda text: res.tokens.token(key, text),
            )  # fmt: skip
            res.tokens.end(key)
            return completion
        except PermanentLLMError:
            raise
        except LLMError as exc:
            if retry == res.max_retries:
                raise
            delay = res.retry_backoff_s * 2**retry
            log.warning("LLM call failed (%s); retry %d in %.1fs", exc, retry + 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


class _Heartbeat:
    """Keeps the running lease alive while the LLM works, from a side thread."""

    def __init__(self, res: Resources, key: str, attempt: str) -> None:
        self.res, self.key, self.attempt = res, key, attempt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        interval = self.res.lease.lease_ms / 3000
        while not self._stop.wait(interval):
            try:
                if not self.res.lease.extend(self.key, self.attempt):
                    log.warning("lost the lease of %s; finishing anyway", self.key[:12])
                    return
            except Exception as exc:  # a failed beat must not kill the answer
                log.warning("heartbeat failed: %s", exc)
