"""The job between web and workers: typed, versioned, readable by either release of a
rolling deploy; and the one rule that names an answer's status."""

from __future__ import annotations

import pytest

from cache.job import COALESCED, EXACT, MISS, SEMANTIC, VERSION, EmbedJob, Job, status

# What the release before cache.job sent to `flock.answer` (webapp.chat._job plus the
# attempt), literally: an untyped dict without "v".
PREVIOUS_ANSWER_JOB = {
    "key": "0" * 64,
    "namespace": "1" * 64,
    "prompt": "Why is the sky blue?",
    "model": "llama3.2:1b",
    "messages": [{"role": "user", "content": "Why is the  sky blue?"}],
    "options": {"seed": 7},
    "mode": "use",
    "ttl": 604800,
    "threshold": 0.8,
    "scope": "private",
    "owner_id": 3,
    "attempt": "a" * 32,
}
# ... and to `flock.generate`: the same with the embedding and the announcement.
PREVIOUS_GENERATE_JOB = {
    **PREVIOUS_ANSWER_JOB,
    "embedding": [0.25, -0.5],
    "inflight_id": "1700000000000-0",
}


def test_a_job_of_the_previous_release_is_read():
    job = Job.from_payload(PREVIOUS_ANSWER_JOB)
    assert (job.key, job.mode, job.ttl, job.scope, job.owner_id, job.attempt) == (
        "0" * 64, "use", 604800, "private", 3, "a" * 32,
    )  # fmt: skip
    assert job.messages == PREVIOUS_ANSWER_JOB["messages"]
    assert job.embedding is None and job.inflight_id is None
    later = Job.from_payload(PREVIOUS_GENERATE_JOB)
    assert later.embedding == [0.25, -0.5] and later.inflight_id == "1700000000000-0"


def test_the_previous_release_reads_our_jobs():
    """Its workers read the payload by these names: every one is there, meaning the same;
    what is new (`v`) is extra."""
    for previous in (PREVIOUS_ANSWER_JOB, PREVIOUS_GENERATE_JOB):
        payload = Job.from_payload(previous).to_payload()
        assert {k: payload[k] for k in previous} == previous
        assert payload["v"] == VERSION


def test_a_payload_round_trips_and_unknown_fields_are_ignored():
    job = Job.from_payload(PREVIOUS_GENERATE_JOB)
    assert Job.from_payload(job.to_payload()) == job
    newer = {**job.to_payload(), "v": VERSION + 1, "something_new": {"x": 1}}
    assert Job.from_payload(newer) == job
    assert EmbedJob.from_payload({"id": "embed-1", "texts": ["a", "b"]}) == EmbedJob(
        "embed-1", ["a", "b"]
    )


@pytest.mark.parametrize("field, value", [("mode", "no-store"), ("scope", "everyone")])
def test_a_job_refuses_what_no_worker_can_do(field, value):
    with pytest.raises(ValueError, match=field):
        Job.from_payload({**PREVIOUS_ANSWER_JOB, field: value})


@pytest.mark.parametrize(
    "served, mode, dispatched, reported",
    [
        (EXACT, "use", False, EXACT),
        (SEMANTIC, "use", True, SEMANTIC),
        (MISS, "use", True, MISS),  # this request's attempt called the LLM
        (MISS, "use", False, COALESCED),  # it waited for another request's attempt
        (COALESCED, "use", True, COALESCED),  # its attempt followed a similar prompt
        (MISS, "refresh", False, MISS),  # refresh and bypass always report miss
        (SEMANTIC, "bypass", True, MISS),
    ],
)
def test_the_status_rule(served, mode, dispatched, reported):
    assert status(served, mode, dispatched) == reported
