"""The semantic cache end to end: real MiniLM in real embedder workers.

Each test asks within a namespace of its own (a random `seed` option), so one test's
questions can never be semantic hits for another's.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import conversation, nonsense_word, post_chat, post_many


def topic() -> str:
    # A word, not hex: "489e28" reads as a number to the guards and the pair model, and a
    # few such topics made the paraphrases "different" at random.
    return nonsense_word()


def ask(stack, ns: dict, prompt: str, **extra):
    return post_chat(stack.url, {"prompt": prompt, **ns, **extra})


def test_a_paraphrase_is_served_from_the_earlier_answer(stack, standin, ns):
    t = topic()
    first = ask(stack, ns, f"How do I reset the password of my {t} account?")
    assert first.json()["cache"]["status"] == "miss"

    second = ask(stack, ns, f"How can I reset my {t} account password?")
    body = second.json()
    assert second.status_code == 200
    assert body["cache"]["status"] == "semantic"
    assert second.headers["X-Cache"] == "semantic"
    assert body["cache"]["matched_prompt"] == f"How do I reset the password of my {t} account?"
    assert body["cache"]["threshold"] <= body["cache"]["similarity"] < 1
    checks = {c["name"]: c["passed"] for c in body["cache"]["checks"]}
    assert checks["pair_model"] and checks["negation"] and checks["numbers"]  # what decided it
    assert body["message"] == first.json()["message"]
    assert standin.calls()["chat"] == 1

    again = ask(stack, ns, f"How can I reset my {t} account password?").json()
    assert again["cache"]["status"] == "exact"  # the semantic hit left an exact alias
    assert again["message"] == first.json()["message"]


@pytest.mark.parametrize(
    "variant",
    [
        {"model": "smollm2:135m"},
        {"system": "Answer in French."},
        {"history": ["Let us talk about cooking.", "Sure, what would you like to cook?"]},
    ],
    ids=["model", "system", "earlier-turns"],
)
def test_nothing_matches_across_namespaces(stack, standin, ns, variant):
    question = f"How do I bake bread with {topic()} flour?"
    ask(stack, ns, question)
    messages = conversation(question, variant.get("system"), variant.get("history", []))
    body = {
        "messages": messages,
        **ns,
        **({"model": variant["model"]} if "model" in variant else {}),
    }
    resp = post_chat(stack.url, body).json()
    assert resp["cache"]["status"] == "miss"
    assert standin.calls()["chat"] == 2


@pytest.mark.parametrize(
    ("asked", "trap"),
    [
        (
            "How do I enable two-factor authentication on {t}?",
            "How do I disable two-factor authentication on {t}?",
        ),
        (
            "What was the population of {t} city in 1990?",
            "What was the population of {t} city in 2010?",
        ),
        ("Who did Alice {t} marry?", "Who did Bob {t} marry?"),
    ],
    ids=["negation-ish", "number", "name"],
)
def test_near_miss_traps_are_not_served(stack, standin, ns, asked, trap):
    t = topic()
    ask(stack, ns, asked.format(t=t))
    resp = ask(stack, ns, trap.format(t=t)).json()
    assert resp["cache"]["status"] == "miss"
    assert standin.calls()["chat"] == 2


def test_per_request_threshold(stack, standin, ns):
    t = topic()
    ask(stack, ns, f"What is the boiling point of {t} water?")
    strict = ask(stack, ns, f"At what temperature does {t} water boil?", cache={"threshold": 1})
    strict = strict.json()
    assert strict["cache"]["status"] == "miss"
    assert strict["cache"]["threshold"] == 1
    assert standin.calls()["chat"] == 2


@pytest.mark.slow
def test_an_entry_stored_through_one_embedder_is_served_through_another(stack, standin, ns):
    """Two embedder processes: each request's task may land on either; read-your-writes
    across them must hold for every paraphrase."""
    second = stack.start_worker("embedder2", "embed", concurrency=1)
    try:
        t = topic()
        ask(stack, ns, f"How long should I boil a {t} egg?")
        wordings = [
            f"How long do I need to boil a {t} egg?",
            f"For how long should a {t} egg be boiled?",
            f"How long must I boil a {t} egg?",
            f"How long to boil a {t} egg?",
        ]
        statuses = [ask(stack, ns, w).json()["cache"]["status"] for w in wordings]
        assert statuses == ["semantic"] * 4
        assert standin.calls()["chat"] == 1
        assert "flock.answer" in second.log.read_text()  # the second embedder did serve some
    finally:
        second.stop()
        del stack.procs["embedder2"]


PARAPHRASES = [
    "How do I make my {t} houseplants grow faster?",
    "How can I make my {t} houseplants grow faster?",
    "What can I do to make my {t} houseplants grow faster?",
    "How do I get my {t} houseplants to grow faster?",
    "How to make {t} houseplants grow faster?",
    "Ways to make my {t} houseplants grow faster?",
    "How do I help my {t} houseplants grow faster?",
    "How can my {t} houseplants grow faster?",
    "What makes {t} houseplants grow faster?",
    "How do I make my {t} house plants grow faster?",
]


def test_similar_prompts_in_flight_share_one_llm_call(stack, standin, ns):
    standin.configure(latency_s=2.0)
    t = topic()
    bodies = [{"prompt": p.format(t=t), **ns} for p in PARAPHRASES for _ in range(5)]  # 50
    responses = post_many(stack.url, bodies)
    assert [r.status_code for r in responses] == [200] * 50
    statuses = Counter(r.json()["cache"]["status"] for r in responses)
    assert standin.calls()["chat"] <= 2, (statuses, standin.calls()["prompts"])
    assert statuses["coalesced"] + statuses["semantic"] >= 40


def test_followers_get_the_leader_s_error_promptly(stack, standin, ns):
    standin.configure(latency_s=1.5, fail_status=500)
    t = topic()
    bodies = [{"prompt": p.format(t=t), **ns} for p in PARAPHRASES[:6]]
    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda b: post_chat(stack.url, b), bodies))
    elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [502] * 6
    assert elapsed < 15  # three tries of 1.5 s and backoff, far from the 30 s timeout
    assert standin.calls()["chat"] <= 6  # at most 2 leaders, 3 tries each
