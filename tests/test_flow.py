"""tasks.flow called directly: the decision (`_decide`: lead, follow or serve), the
semantic path, the LLM's second opinion, audits, and prompts beyond the encoder's window.
Real Redis (a key prefix of this test's), real PostgreSQL, the real MiniLM model and pair
model in this process, the Ollama stand-in over HTTP; no Celery: the functions the tasks
wrap."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import redis
from psycopg_pool import ConnectionPool

from cache import (
    CacheKey,
    EmbeddingCache,
    Entry,
    ExactStore,
    InFlightPrompts,
    Keyspace,
    Lease,
    Outcome,
    SemanticIndex,
)
from cache.audit import Calibration
from cache.job import AuditJob, Job
from cache.repo import CacheRepo
from cache.semantic import Candidate
from cache.tokens import TokenWriter
from cache.verify import Verifier
from inference import OllamaClient
from inference.pair_model import PairModel
from settings import Settings
from tasks import flow
from tasks.resources import Resources
from tests.stack import ROOT

pytestmark = pytest.mark.slow  # loads MiniLM in the test process
MODEL = "llama3.2:1b"
AUDITS: list[AuditJob] = []  # what `answer` queued for the audit worker
MAX_ERROR = Settings().semantic_max_error  # the default


@pytest.fixture(scope="module")
def res(redis_client: redis.Redis, database: str, standin) -> Iterator[Resources]:
    keys = Keyspace(f"t:{uuid.uuid4().hex[:8]}:")
    lease = Lease(redis_client, keys, 5000)
    pair = PairModel()
    calibration = Calibration(*map(tuple, pair.calibration()))
    with ConnectionPool(database, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        repo = CacheRepo(pool)
        yield Resources(
            redis=redis_client,
            keys=keys,
            lease=lease,
            store=ExactStore(redis_client, keys),
            repo=repo,
            index=SemanticIndex(redis_client, keys, repo.vectors),
            inflight=InFlightPrompts(redis_client, keys),
            embeddings=EmbeddingCache(redis_client, keys),
            tokens=TokenWriter(redis_client, keys),
            llm=OllamaClient(standin.url),
            max_retries=0,
            retry_backoff_s=0.1,
            embed_cache_dir=str(ROOT / "var" / "models"),
            verifier=Verifier(pair.score, score_threshold=calibration.operating_point(MAX_ERROR)),
            calibration=calibration,
            max_error=MAX_ERROR,
            audit_rate=0.0,
            send_audit=AUDITS.append,
        )
    for key in redis_client.scan_iter(match=f"{keys.prefix}*"):
        redis_client.delete(key)


@pytest.fixture
def seed() -> int:
    """A namespace of this test's own (a random `seed` option)."""
    return uuid.uuid4().int % 2**31


def job_for(res: Resources, prompt: str, seed: int) -> Job:
    """The job the web would dispatch for `prompt`, with the lease taken as the web does."""
    messages = [{"role": "user", "content": prompt}]
    key = CacheKey.build(MODEL, messages, {"seed": seed})
    job = Job(key=key.exact, namespace=key.namespace, prompt=key.prompt, model=MODEL,
              messages=messages, options={"seed": seed}, mode="use", ttl=600, threshold=0.8,
              scope="shared", owner_id=None, attempt=uuid.uuid4().hex)  # fmt: skip
    assert res.lease.acquire(job.key, job.attempt)
    return job


def decide(res: Resources, job: Job) -> Job | None:
    vector, remember = flow._embed(res, job.prompt)
    try:
        return flow._decide(res, job, vector)
    finally:
        remember()


def outcomes(res: Resources, job: Job) -> redis.client.PubSub:
    pubsub = res.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(res.keys.done(job.key))
    pubsub.get_message(timeout=1)  # the subscription's confirmation
    return pubsub


def published(pubsub: redis.client.PubSub) -> Outcome | None:
    message = pubsub.get_message(timeout=2)
    return Outcome.from_json(message["data"]) if message else None


def test_a_new_question_leads(res, seed):
    job = job_for(res, "How do I descale a kettle with vinegar?", seed)
    led = decide(res, job)
    assert led is not None and led.key == job.key
    assert led.embedding is not None and len(led.embedding) == 384
    assert res.redis.get(res.keys.lock(job.key)) == f"q:{job.attempt}".encode()
    announced = res.inflight.listed(job.namespace)
    assert [a.id for a in announced] == [led.inflight_id]
    # What `generate` will read: the same job, through the payload, as a worker gets it.
    assert Job.from_payload(json.loads(json.dumps(led.to_payload()))) == led


def test_a_similar_question_follows_the_one_being_generated(res, seed):
    leader = decide(res, job_for(res, "How do I descale my kettle with vinegar?", seed))
    assert leader is not None
    assert res.lease.claim(leader.key, leader.attempt, "r")  # `generate` has started
    follower = job_for(res, "How can I descale a kettle using vinegar?", seed)
    assert decide(res, follower) is None  # nothing to send to the llm queue
    assert res.redis.get(res.keys.lock(follower.key)) == f"r:{follower.attempt}".encode()
    # The follower withdrew its announcement: only the leader is being generated.
    assert [a.key for a in res.inflight.listed(follower.namespace)] == [leader.key]

    listening = outcomes(res, follower)
    entry = Entry(key=leader.key, namespace=leader.namespace, model=MODEL,
                  prompt=leader.prompt, response="Boil a 1:1 mix, rinse twice.")  # fmt: skip
    answered = res.store.finish(leader.key, Outcome(leader.attempt, entry=entry), ttl_s=60)
    assert [f.key for f in answered] == [follower.key]
    got = published(listening)
    assert got is not None and got.status == "coalesced" and got.attempt == follower.attempt
    alias = res.store.get(follower.key)  # an alias of the leader's answer, at its similarity
    assert replace(alias, similarity=None) == entry and alias.similarity == got.similarity


def test_the_semantic_path_serves_a_paraphrase_and_refuses_a_trap(res, standin, seed):
    first = job_for(res, "How many calories are in 2 boiled eggs?", seed)
    led = flow.answer(res, first)
    assert led is not None
    flow.generate(res, led)  # the stand-in answers; PostgreSQL, the index, Redis
    stored = res.store.get(first.key)
    assert stored is not None and standin.calls()["chat"] == 1

    reworded = job_for(res, "How many calories do 2 boiled eggs have?", seed)
    listening = outcomes(res, reworded)
    assert flow.answer(res, reworded) is None
    got = published(listening)
    assert got is not None and got.status == "semantic", got
    assert got.matched_prompt == first.prompt and got.similarity >= 0.8
    assert {c["name"]: c["passed"] for c in got.checks or []}["pair_model"] is True
    alias = res.store.get(reworded.key)  # an exact alias, at the similarity it was made at
    assert replace(alias, similarity=None, threshold=None) == stored
    assert (alias.similarity, alias.threshold) == (got.similarity, 0.8)
    assert res.redis.get(res.keys.lock(reworded.key)) is None  # released

    trap = job_for(res, "How many calories are in 3 boiled eggs?", seed)
    listening = outcomes(res, trap)
    sent_on = flow.answer(res, trap)
    assert sent_on is not None and sent_on.key == trap.key  # to the LLM, not served
    assert published(listening) is None
    assert res.store.get(trap.key) is None
    assert standin.calls()["chat"] == 1


def band_case(res: Resources, query: str, cached: str, seed: int) -> tuple[Job, list[Candidate]]:
    job = job_for(res, query, seed)
    model = res.embedder()
    vectors = model.embed([query, cached])
    similarity = float(np.dot(vectors[0], vectors[1]))
    return job, [Candidate(f"entry-{uuid.uuid4().hex}", cached, similarity)]


def second_opinion(res: Resources, job: Job, cands: list[Candidate]):
    # A score threshold no pair reaches: every candidate the guards let through is refused
    # by its score alone.
    return flow._second_opinion(res, job, cands, flow._Bar(0.8, 1.0))


def test_the_second_opinion_asks_the_llm_about_a_score_refusal_only(res, standin, seed):
    banded = replace(res, llm_band=0.0)
    job, cands = band_case(res, "Is it safe for dogs to eat grapes?", "Can dogs eat grapes?", seed)
    assert second_opinion(res, job, cands) is None  # the band is off: nobody asks
    assert standin.calls()["chat"] == 0

    standin.configure(reply="Yes")
    picked = second_opinion(banded, job, cands)
    assert picked is not None and picked[0] == cands[0]
    cand, verdict = picked
    checks = {c.name: c for c in verdict.checks}
    assert verdict.accept and checks["pair_model"].passed is False and checks["llm"].passed
    assert standin.calls()["chat"] == 1
    assert "Can dogs eat grapes?" in standin.calls()["prompts"][-1]

    standin.configure(reply="No")
    assert second_opinion(banded, job, cands) is None
    assert standin.calls()["chat"] == 2

    # A guard's veto (a negation) is never put to the LLM.
    vetoed, cands = band_case(res, "Can dogs not eat grapes?", "Can dogs eat grapes?", seed)
    assert second_opinion(banded, vetoed, cands) is None
    assert standin.calls()["chat"] == 2


def test_the_exact_re_check_serves_an_alias_only_at_its_similarity(res, seed):
    """`answer` re-reads the exact key first: an alias made at a similarity below this
    job's threshold is no answer for it (the job goes on, a miss for its key)."""
    original = Entry(key="elsewhere", namespace="n", model=MODEL, prompt="p", response="r")
    res.store.put(original.key, original, 600)
    strict = replace(job_for(res, "Is this alias good enough for me?", seed), threshold=0.9)
    semantic = Outcome(attempt="earlier", entry=original, status="semantic", similarity=0.85)
    res.store.finish(strict.key, semantic, 600)  # the alias a laxer request left
    pubsub = outcomes(res, strict)
    assert not flow._served_from_cache(res, strict, durable=False)
    assert published(pubsub) is None

    lax = replace(strict, threshold=0.8)
    assert flow._served_from_cache(res, lax, durable=False)
    served = published(pubsub)
    assert served is not None and served.status == "exact"
    assert (served.entry.id, served.similarity) == (original.id, 0.85)


def test_a_prompt_beyond_the_window_is_matched_exactly_only(res, standin, seed):
    """The encoder reads 254 word pieces: a longer prompt's vector would be its beginning's,
    so two long prompts with the same context and another last instruction would match.
    Such a prompt is never embedded, announced or indexed; its exact key still caches."""
    context = "Here is the text of our meeting notes. " + "We discussed the budget. " * 60
    long_job = job_for(res, context + "Summarise it in one sentence.", seed)
    sent_on = flow.answer(res, long_job)
    assert sent_on is not None and sent_on.embedding is None and sent_on.inflight_id is None
    flow.generate(res, sent_on)
    assert res.store.get(long_job.key) is not None

    other = job_for(res, context + "Translate it into French.", seed)
    listening = outcomes(res, other)
    assert flow.answer(res, other) is not None  # to the LLM: no semantic hit
    assert published(listening) is None
    assert standin.calls()["chat"] == 1


def test_an_audit_judges_a_hit_and_moves_its_namespace(res, standin, seed):
    """AUDIT_RATE of semantic hits are queued (here: all); the audit answers the request
    again, asks the judge when the answers differ, records the verdict in PostgreSQL and
    puts the namespace's learned score threshold in Redis."""
    audited = replace(res, audit_rate=1.0)
    first = job_for(res, "How long should I boil an egg for a runny yolk?", seed)
    flow.generate(res, flow.answer(res, first))
    AUDITS.clear()
    reworded = job_for(res, "How long do I boil an egg for a runny yolk?", seed)
    assert flow.answer(audited, reworded) is None  # a semantic hit
    [job] = AUDITS
    assert job.entry_key == first.key and job.matched_prompt == first.prompt
    assert job.namespace == reworded.namespace and 0.0 < job.score <= 1.0
    calls = standin.calls()["chat"]

    standin.configure(reply="No")  # a fresh answer unlike the served one, then the judge
    assert flow.audit(res, job) is False
    assert standin.calls()["chat"] == calls + 2
    assert "Answer A:" in standin.calls()["prompts"][-1]
    [row] = res.repo.audits(job.namespace)
    assert (row.score, row.correct) == (pytest.approx(job.score, abs=1e-6), False)
    learned = float(res.redis.hget(res.keys.scorethreshold, job.namespace))
    assert learned > res.verifier.score_threshold  # one wrong hit: stricter here
    assert res.score_threshold(job.namespace) == learned
    assert res.score_threshold("another namespace") == res.verifier.score_threshold

    res.redis.delete(res.keys.scorethreshold)  # Redis lost it: rebuilt from PostgreSQL
    assert res.score_threshold(job.namespace) == pytest.approx(learned)
