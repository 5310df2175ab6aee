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


# What the release before aliases remembered their similarity wrote to resp:<key> and to
# done:<key>, literally.
PREVIOUS_ENTRY = {
    "key": "k" * 64, "namespace": "n" * 64, "model": "llama3.2:1b", "prompt": "why?",
    "response": "because", "prompt_tokens": 3, "completion_tokens": 5, "id": "e" * 32,
    "created": 1700000000.5,
}  # fmt: skip
PREVIOUS_OUTCOME = {
    "attempt": "a" * 32, "entry": PREVIOUS_ENTRY, "status": "miss", "similarity": None,
    "matched_prompt": None, "error_code": None, "error_message": None, "checks": None,
}  # fmt: skip


def test_entries_and_outcomes_of_either_release_are_read():
    """A reader ignores what it does not know; a writer adds the new alias fields only to
    aliases, so the previous release reads every entry that is not one as before."""
    import json

    from cache import Entry, Outcome

    entry = Entry.from_json(json.dumps({**PREVIOUS_ENTRY, "something_new": 1}))
    assert entry.similarity is None and entry.id == "e" * 32
    assert json.loads(entry.to_json()) == PREVIOUS_ENTRY
    outcome = Outcome.from_json(json.dumps({**PREVIOUS_OUTCOME, "later": True}))
    assert outcome.entry == entry and outcome.threshold is None
    assert json.loads(outcome.to_json()) == PREVIOUS_OUTCOME
    alias = json.loads(Entry(**{**PREVIOUS_ENTRY, "similarity": 0.9}).to_json())
    assert alias == {**PREVIOUS_ENTRY, "similarity": 0.9}


def test_a_waiter_takes_only_what_meets_its_own_parameters():
    """webapp.chat.takes: a coalesced waiter judges the outcome it receives by its own
    threshold and mode, not by those of the request that dispatched the attempt."""
    from cache import CacheKey, Entry, Outcome
    from webapp.chat import Question, found, takes
    from webapp.schemas import ChatRequest

    def waiter(mode: str = "use", threshold: float = 0.9) -> Question:
        req = ChatRequest.parse({"prompt": "q", "cache": {"mode": mode}}, "m", 100)
        key = CacheKey.build("m", req.messages)
        return Question(req, key, 1, 60, threshold, 10)

    key = waiter().key.exact
    own = Entry(key=key, namespace="n", model="m", prompt="q", response="r")
    other = Entry(key="other", namespace="n", model="m", prompt="p", response="r")
    semantic = Outcome("a1", other, SEMANTIC, similarity=0.85)
    assert not takes(waiter(threshold=0.9), semantic, None)
    assert takes(waiter(threshold=0.8), semantic, None)
    assert takes(waiter(threshold=0.99), Outcome("a1", own, MISS), None)
    # A refresh waits for a generation of its own key: not a cached entry, not a semantic.
    refresh = waiter("refresh")
    assert takes(refresh, Outcome("a1", own, MISS), None)
    assert not takes(refresh, Outcome("a1", own, MISS), own.id)  # the stale one
    assert not takes(refresh, Outcome("a1", own, EXACT), None)
    assert not takes(refresh, Outcome("", own, MISS), None)  # found by another's polling
    assert not takes(waiter("refresh", 0.0), semantic, None)
    assert not takes(waiter(), Outcome("a1", None, MISS, error_code="x"), None)
    # Found by polling: an alias only at its similarity; a refresh only its own attempt's.
    alias = Entry(**{**other.__dict__, "similarity": 0.85})
    assert found(alias, key, "use", 0.8, None, set())
    assert not found(alias, key, "use", 0.9, None, set())
    assert not found(own, key, "refresh", 0.9, None, set())
    assert found(own, key, "refresh", 0.9, None, {"a1"})
    assert not found(own, key, "bypass", 0.9, None, {"a1"})
