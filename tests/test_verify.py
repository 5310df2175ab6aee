"""The second stage of a semantic hit (cache/verify/): guards on clear examples, the
verifier's API, and -- with the real MiniLM model -- traps rejected, paraphrases kept."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cache.verify import (
    DEFAULT_WEIGHTS,
    Verifier,
    VerifierError,
    guard_direction,
    guard_entities,
    guard_negation,
    guard_numbers,
    guard_order,
    guard_scope,
    run_guards,
)

GUARD_CASES = [
    # (guard, a, b, passes)
    (guard_negation, "Why is my laptop not charging?", "Why is my laptop charging?", False),
    (guard_negation, "Why won't my car start?", "Why does my car start?", False),
    (guard_negation, "Is it safe to drink tap water?", "Is it unsafe to drink tap water?", False),
    (guard_negation, "How do I make bread without yeast?", "How can I bake bread with no yeast?",
     True),
    (guard_negation, "Why can't I sleep at night?", "Why am I unable to sleep at night?", True),
    (guard_numbers, "How many calories are in 2 eggs?", "How many calories are in 3 eggs?", False),
    (guard_numbers, "How many calories are in 2 eggs?", "How many calories do two eggs have?",
     True),
    (guard_numbers, "Who won the World Cup in 2014?", "Who won the World Cup in 2018?", False),
    (guard_numbers, "What's the forecast for Monday?", "What's the forecast for Friday?", False),
    (guard_numbers, "Who was the first US president?", "Who was the second US president?", False),
    (guard_numbers, "What is 15% of 80?", "What's 15 percent of 80?", True),
    (guard_numbers, "Is it 9am in London?", "Is it 9 am in London?", True),
    (guard_numbers, "Should I water it every day?", "Should I water it every week?", False),
    (guard_numbers, "Install Python 3.11", "Install Python 3.12", False),
    (guard_entities, "What is the capital of Australia?", "What is the capital of Austria?",
     False),
    (guard_entities, "How do I learn Python quickly?", "How do I learn Java quickly?", False),
    (guard_entities, "Who was the first president of the United States?",
     "Who was the first US president?", True),
    (guard_entities, "How do I migrate to PostgreSQL?", "How do I move to Postgres?", True),
    (guard_entities, "What does `iter_files` do?", "What does `iter_archive` do?", False),
    (guard_scope, "Do all birds fly?", "Do some birds fly?", False),
    (guard_scope, "Which foods are only found in Japan?", "Which foods are found in Japan?",
     False),
    (guard_scope, "Are all spiders venomous?", "Is every spider venomous?", True),
    (guard_direction, "How do I zoom in on a Mac?", "How do I zoom out on a Mac?", False),
    (guard_direction, "How do I upload files to Drive?", "How do I download files from Drive?",
     False),
    (guard_direction, "What should I eat before a workout?", "What should I eat after a workout?",
     False),
    (guard_direction, "How do I turn off Bluetooth?", "How do I disable Bluetooth?", True),
    (guard_direction, "How do I turn on Bluetooth on my laptop?",
     "How do I turn off Bluetooth on my laptop?", False),
    (guard_order, "How do I convert Celsius to Fahrenheit?",
     "How do I convert Fahrenheit to Celsius?", False),
    (guard_order, "Why do cats chase mice?", "Why do mice chase cats?", False),
    (guard_order, "How do I get from JFK to Manhattan?",
     "What's the best way to get to Manhattan from JFK?", True),
]  # fmt: skip


@pytest.mark.parametrize(("guard", "a", "b", "passes"), GUARD_CASES)
def test_guard_on_clear_examples(guard, a, b, passes):
    check = guard(a, b)
    assert check.passed is passes, check
    assert check.passed is guard(b, a).passed  # symmetric
    assert (check.level == 0) is passes


def test_a_comparative_flipped_with_its_operands_is_the_same_question():
    checks = {c.name: c for c in run_guards("Is Mount Everest taller than K2?",
                                            "Is K2 shorter than Mount Everest?")}  # fmt: skip
    assert checks["direction"].passed and checks["order"].passed


def _tokens(words: list[str], seed: int, replaced: dict[int, int] | None = None):
    """Fake token vectors: one random unit vector per distinct word."""
    rng = np.random.default_rng(seed)
    table: dict[str, np.ndarray] = {}
    vecs = []
    for w in words:
        if w not in table:
            v = rng.normal(size=384).astype(np.float32)
            table[w] = v / np.linalg.norm(v)
        vecs.append(table[w])
    return words, np.stack(vecs)


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier()


def test_default_weights_load_and_are_json(verifier):
    raw = json.loads(DEFAULT_WEIGHTS.read_text())
    assert {"tokens", "text"} <= raw["models"].keys()
    assert 0 < verifier.lower_bound < 1
    assert 0 < verifier.threshold(True) < 1 and 0 < verifier.threshold(False) < 1


def test_below_the_lower_bound_nothing_else_runs(verifier):
    verdict = verifier.verify("How do I reset my router?", "What is a router?", 0.3)
    assert not verdict.accept
    assert [c.name for c in verdict.checks] == ["cosine"]


def test_same_text_modulo_case_and_punctuation_is_accepted(verifier):
    verdict = verifier.verify("How do I reset my router?", "how do i reset my router", 0.99)
    assert verdict.accept


def test_a_guard_conflict_vetoes_whatever_the_model_says(verifier):
    verdict = verifier.verify("How many calories are in 2 eggs?",
                              "How many calories are in 3 eggs?", 0.99)  # fmt: skip
    assert not verdict.accept
    failed = [c.name for c in verdict.checks if not c.passed]
    assert "numbers" in failed


def test_verdict_reports_every_check_as_json(verifier):
    a = "How do I reset my router ?".split()
    b = "how do i reset my printer ?".split()
    verdict = verifier.verify(" ".join(a), " ".join(b), 0.9, _tokens(a, 1), _tokens(b, 2))
    payload = json.loads(json.dumps(verdict.as_dict()))
    names = [c["name"] for c in payload["checks"]]
    assert names[:1] == ["cosine"] and "alignment" in names and names[-1] == "verifier"
    assert {"name", "passed"} <= payload["checks"][0].keys()


def test_unaligned_content_words_lower_the_score(verifier):
    words = "how do i reset my router ?".split()
    other = "how do i reset my printer ?".split()
    same = verifier.verify(" ".join(words), " ".join(words) + " please", 0.95,
                           _tokens(words, 3), _tokens(words, 3))  # fmt: skip
    diff = verifier.verify(" ".join(words), " ".join(other), 0.95,
                           _tokens(words, 3), _tokens(other, 4))  # fmt: skip
    assert diff.score < same.score


def test_bad_weights_and_arguments_are_errors(tmp_path):
    with pytest.raises(VerifierError):
        Verifier(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"lower_bound": 0.7}))
    with pytest.raises(VerifierError):
        Verifier(bad)
    with pytest.raises(VerifierError):
        Verifier(threshold=1.5)


TRAPS = [
    ("How do I reset my router?", "How do I reset my printer?"),
    ("How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?"),
    ("Why is my laptop not charging?", "Why is my laptop charging?"),
    ("Who won the World Cup in 2014?", "Who won the World Cup in 2018?"),
    ("What is the capital of Australia?", "What is the capital of Austria?"),
    ("How do I increase the font size in Chrome?", "How do I decrease the font size in Chrome?"),
    ("Do all birds fly?", "Do some birds fly?"),
    ("What are the symptoms of diabetes?", "What are the symptoms of hypertension?"),
]
PARAPHRASES = [
    ("How do I reset my router?", "What's the way to reset my router?"),
    ("What are the symptoms of diabetes?", "What are the signs of diabetes?"),
    ("How tall is the Eiffel Tower?", "What is the height of the Eiffel Tower?"),
    ("How many calories are in 2 eggs?", "How many calories do two eggs have?"),
    ("How do I turn off Bluetooth on my laptop?", "How do I disable Bluetooth on my laptop?"),
    ("Who wrote Pride and Prejudice?", "Who is the author of Pride and Prejudice?"),
]


@pytest.mark.slow
def test_real_model_rejects_traps_and_keeps_paraphrases(verifier):
    from inference.embeddings import load_embedder

    embedder = load_embedder()

    def decide(a: str, b: str) -> bool:
        va, vb = embedder.embed([a, b])
        cos = float(np.dot(va, vb))
        ta, tb = embedder.token_embeddings(a), embedder.token_embeddings(b)
        return verifier.verify(a, b, cos, ta, tb).accept

    served = [pair for pair in TRAPS if decide(*pair)]
    kept = [pair for pair in PARAPHRASES if decide(*pair)]
    assert served == []
    assert len(kept) >= len(PARAPHRASES) - 1, set(PARAPHRASES) - set(kept)


def test_choose_serves_the_nearest_accepted_candidate_or_none(verifier):
    from cache.verify import Option

    query = "Who won the World Cup in 2014?"
    refused = Option("Who won the World Cup in 2018?", 0.97, ref="2018")  # numbers: a veto
    same = Option("who won the world cup in 2014", 0.93, ref="router")  # identical modulo case
    below = Option("Who won the World Cup in 2014 ?", 0.5, ref="low")
    picked = verifier.choose(query, None, [below, refused, same], threshold=0.8)
    assert picked is not None
    option, verdict = picked
    assert option.ref == "router" and verdict.accept
    assert verifier.choose(query, None, [below], threshold=0.8) is None
    assert verifier.choose(query, None, [], threshold=0.8) is None


def test_choose_fetches_lazy_tokens_only_above_the_threshold(verifier):
    from cache.verify import Option

    calls: list[str] = []

    def fetch(name: str):
        def get():
            calls.append(name)
            return None

        return get

    options = [Option("What is a router?", 0.3, fetch("low"))]
    assert verifier.choose("How do I reset my router?", fetch("query"), options,
                           threshold=0.8) is None  # fmt: skip
    assert calls == []


def test_choose_refuses_two_equally_close_accepted_entries():
    from cache.verify import Option

    ambiguous = Verifier(margin=0.05)
    options = [Option("how do i reset my router", 0.95, ref=1),
               Option("How do I reset my router", 0.94, ref=2)]  # fmt: skip
    assert ambiguous.choose("How do I reset my router?", None, options, threshold=0.8) is None
    assert Verifier().choose("How do I reset my router?", None, options, threshold=0.8)[0].ref == 1
