"""The pair model (inference/pair_model.py), the real int8 MiniLM cross-encoder shipped in
inference/models: clear paraphrases score high and different questions low, one pair's
score is stable, a pair beyond the window is not scored, and the Verifier built on it
refuses the traps the first stage's cosine cannot see."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cache.verify import Verifier
from inference.pair_model import PairModel, PairModelError


@pytest.fixture(scope="module")
def pair() -> PairModel:
    return PairModel()


@pytest.fixture(scope="module")
def line(pair: PairModel) -> float:
    """The score the shipped operating point accepts from (bench.accuracy --calibrate)."""
    return float(pair.manifest["operating_point"]["score"])


# Quora-style pairs, far from the line (the model was fine-tuned on Quora question pairs).
PARAPHRASES = [
    ("How do I reset my router?", "How can I reset my router?"),
    ("What are the symptoms of diabetes?", "What are the signs of diabetes?"),
    ("How can I lose weight fast?", "What is the fastest way to lose weight?"),
    ("How can I improve my English?", "What are some ways to improve my English?"),
    ("How do I get rid of acne?", "What is the best way to get rid of acne?"),
    ("How do I boil an egg?", "What is the way to boil an egg?"),
]
DIFFERENT = [
    ("What are the symptoms of diabetes?", "What are the symptoms of hypertension?"),
    ("How do I reset my router?", "How do I reset my printer?"),
    ("How do I learn Python?", "How do I uninstall Python?"),
    ("What is the capital of France?", "What is the capital of Germany?"),
    ("How do I boil an egg?", "How do I fry an egg?"),
    ("What is the best laptop for students?", "What is the best phone for students?"),
    ("How do I reset my router?", "What is the best pizza topping?"),
]


@pytest.mark.parametrize(("a", "b"), PARAPHRASES)
def test_clear_paraphrases_score_high(pair, line, a, b):
    score = pair.score(a, b)
    assert score is not None and score > line, score


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_different_questions_score_low(pair, line, a, b):
    score = pair.score(a, b)
    assert score is not None and score < line, score


@pytest.mark.parametrize(("a", "b"), PARAPHRASES + DIFFERENT)
def test_the_score_is_nearly_symmetric_and_deterministic(pair, a, b):
    ab, ba = pair.score(a, b), pair.score(b, a)
    assert ab is not None and ba is not None
    # One order is scored (the query first). Measured on the validation candidates with the
    # six-layer model: |P(a, b) - P(b, a)| p50 0.03, p95 0.22; the lose-weight pair is 0.24.
    assert abs(ab - ba) < 0.3, (ab, ba)
    assert pair.score(a, b) == ab
    assert 0.0 <= ab <= 1.0


# Two long prompts with the same context and a different last instruction: no guard sees a
# difference, and a model reading a truncated pair would see two identical texts.
CONTEXT = (
    "Our team runs a small online shop that sells handmade ceramic mugs, bowls and plates. "
    "Orders come in through the website, are packed by two part-time workers in a rented "
    "workshop, and are shipped with a regional courier that collects parcels every weekday "
    "afternoon. Last quarter we had more broken items than usual, several customers "
    "complained that their parcels arrived late, and the courier raised its prices by ten "
    "percent. We also started selling at two weekend markets, which takes stock away from the "
    "online shop, and our supplier of clay has warned us that deliveries may be delayed "
    "during the winter months. The owner wants a short plan for the next six months that "
    "keeps customers happy without hiring anyone new."
)
LONG_A = CONTEXT + " Given all this, what are the biggest risks to the business?"
LONG_B = CONTEXT + " Given all this, write a polite email apologising to a customer."


def test_a_pair_beyond_the_window_is_not_scored(pair):
    assert not pair.fits(LONG_A, LONG_B)
    assert pair.score(LONG_A, LONG_B) is None
    assert pair.logit(LONG_A, LONG_B) is None
    # Each prompt is short enough on its own: it is the pair that does not fit.
    assert pair.fits(LONG_A, "What are the biggest risks?")
    assert pair.score(LONG_A, "What are the biggest risks?") is not None


def test_the_verifier_refuses_a_pair_beyond_the_window(pair):
    verdict = Verifier(pair.score, score_threshold=0.5).verify(LONG_A, LONG_B, 0.98)
    assert not verdict.accept and verdict.score == 0.0
    assert all(c.passed for c in verdict.checks[:-1])  # no guard saw the difference
    assert verdict.checks[-1].name == "window" and not verdict.checks[-1].passed


# The first stage's blind spots (cosine about 0.9 or more) and paraphrases it must keep.
TRAPS = [
    ("How do I reset my router?", "How do I reset my printer?"),
    ("How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?"),
    ("Why is my laptop not charging?", "Why is my laptop charging?"),
    ("Who won the World Cup in 2014?", "Who won the World Cup in 2018?"),
    ("What is the capital of Australia?", "What is the capital of Austria?"),
    ("How do I increase the font size in Chrome?", "How do I decrease the font size in Chrome?"),
    ("Do all birds fly?", "Do some birds fly?"),
    ("What are the symptoms of diabetes?", "What are the symptoms of hypertension?"),
    ("Is smoking permitted in the park?", "Is smoking forbidden in the park?"),
    ("Is 5 > 3?", "Is 5 < 3?"),
]
# (Rewordings that swap a single word for a synonym WordNet does not list, "symptoms" /
# "signs", are refused by the swap guard: tests/test_verify.py.)
KEPT = [
    ("How do I reset my router?", "What's the way to reset my router?"),
    ("What are the symptoms of diabetes?", "What are the typical signs of having diabetes?"),
    ("How tall is the Eiffel Tower?", "What is the height of the Eiffel Tower?"),
    ("How many calories are in 2 eggs?", "How many calories do two eggs have?"),
    ("How do I turn off Bluetooth on my laptop?", "How can I disable my laptop's Bluetooth?"),
    ("Who wrote Pride and Prejudice?", "Who is the author of Pride and Prejudice?"),
    ("In Python, how do I sort a list?", "How do I sort a list in Python?"),
    ("hi! how do I reset my router? thanks", "How do I reset my router"),
]


def test_the_verifier_refuses_traps_and_keeps_paraphrases(pair, line):
    verifier = Verifier(pair.score, score_threshold=line)
    served = [p for p in TRAPS if verifier.verify(*p, 0.95).accept]
    kept = [p for p in KEPT if verifier.verify(*p, 0.95).accept]
    assert served == []
    assert len(kept) >= len(KEPT) - 1, set(KEPT) - set(kept)


def test_a_missing_or_bad_model_is_an_error(tmp_path: Path):
    with pytest.raises(PairModelError):
        PairModel(tmp_path)  # no manifest
    (tmp_path / "pair-model.json").write_text(json.dumps({"file": "missing.onnx"}))
    with pytest.raises(PairModelError):
        PairModel(tmp_path)  # no max_length
    (tmp_path / "pair-model.json").write_text(json.dumps({"file": "x.onnx", "max_length": 128}))
    (tmp_path / "x.onnx").write_bytes(b"not a model")
    with pytest.raises(PairModelError):
        PairModel(tmp_path)
