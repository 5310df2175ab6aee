"""The second stage of a semantic hit (cache/verify/), without the pair model: the guards on
clear examples (one case per blind spot closed), text.comparable, the language and window
refusals, and the Verifier's API. tests/test_pair_model.py runs the real pair model."""

from __future__ import annotations

import json

import pytest

from cache.verify import (
    Option,
    Verdict,
    Verifier,
    VerifierError,
    comparable,
    guard_direction,
    guard_entities,
    guard_negation,
    guard_numbers,
    guard_opposite,
    guard_order,
    guard_scope,
    guard_swap,
    guard_symbols,
    run_guards,
)

PASS, VETO = 0, 2  # Check.level: no difference / a conflict (a hard guard's veto)

GUARD_CASES = [
    # (guard, a, b, level)
    (guard_negation, "Why is my laptop not charging?", "Why is my laptop charging?", VETO),
    (guard_negation, "Why won't my car start?", "Why does my car start?", VETO),
    (guard_negation, "Is it safe to drink tap water?", "Is it unsafe to drink tap water?", VETO),
    (guard_negation, "How do I make bread without yeast?", "How can I bake bread with no yeast?",
     PASS),
    (guard_negation, "Why can't I sleep at night?", "Why am I unable to sleep at night?", PASS),
    (guard_numbers, "How many calories are in 2 eggs?", "How many calories are in 3 eggs?", VETO),
    (guard_numbers, "How many calories are in 2 eggs?", "How many calories do two eggs have?",
     PASS),
    (guard_numbers, "Who won the World Cup in 2014?", "Who won the World Cup in 2018?", VETO),
    (guard_numbers, "What's the forecast for Monday?", "What's the forecast for Friday?", VETO),
    (guard_numbers, "Who was the first US president?", "Who was the second US president?", VETO),
    (guard_numbers, "What is 15% of 80?", "What's 15 percent of 80?", PASS),
    (guard_numbers, "Is it 9am in London?", "Is it 9 am in London?", PASS),
    (guard_numbers, "Should I water it every day?", "Should I water it every week?", VETO),
    (guard_numbers, "Install Python 3.11", "Install Python 3.12", VETO),
    (guard_entities, "What is the capital of Australia?", "What is the capital of Austria?",
     VETO),
    (guard_entities, "How do I learn Python quickly?", "How do I learn Java quickly?", VETO),
    (guard_entities, "Who was the first president of the United States?",
     "Who was the first US president?", PASS),
    (guard_entities, "How do I migrate to PostgreSQL?", "How do I move to Postgres?", PASS),
    (guard_entities, "What does `iter_files` do?", "What does `iter_archive` do?", VETO),
    (guard_scope, "Do all birds fly?", "Do some birds fly?", VETO),
    (guard_scope, "Which foods are only found in Japan?", "Which foods are found in Japan?",
     VETO),
    (guard_scope, "Are all spiders venomous?", "Is every spider venomous?", PASS),
    (guard_direction, "How do I zoom in on a Mac?", "How do I zoom out on a Mac?", VETO),
    (guard_direction, "How do I upload files to Drive?", "How do I download files from Drive?",
     VETO),
    (guard_direction, "What should I eat before a workout?", "What should I eat after a workout?",
     VETO),
    (guard_direction, "How do I turn off Bluetooth?", "How do I disable Bluetooth?", PASS),
    (guard_direction, "How do I turn on Bluetooth on my laptop?",
     "How do I turn off Bluetooth on my laptop?", VETO),
    (guard_order, "How do I convert Celsius to Fahrenheit?",
     "How do I convert Fahrenheit to Celsius?", VETO),
    (guard_order, "Why do cats chase mice?", "Why do mice chase cats?", VETO),
    (guard_order, "How do I get from JFK to Manhattan?",
     "What's the best way to get to Manhattan from JFK?", PASS),
    # One word swapped in an otherwise identical prompt: another question, unless the two
    # words are synonyms, forms of one word or a typo, or one side only adds words.
    (guard_swap, "How long does it take to boil pasta?", "How long does it take to bake pasta?",
     VETO),
    (guard_swap, "What does a plumber charge per hour?",
     "What does an electrician charge per hour?", VETO),
    (guard_swap, "Is it cheaper to lease a car?", "Is it cheaper to buy a car?", VETO),
    (guard_swap, "How do I repair a leaking tap?", "How do I fix a leaking tap?", PASS),
    (guard_swap, "How do I recieve a parcel abroad?", "How do I receive a parcel abroad?", PASS),
    (guard_swap, "How do I learn the guitar?", "How do I start learning the guitar?", PASS),
    (guard_swap, "How much does a paint job cost?", "How much does a painter job cost?", VETO),
    (guard_swap, "How do I clean suede shoes?", "How do I clean my suede shoes?", PASS),
    (guard_swap, "Why won't my car start?", "Why does my car start?", PASS),  # negation's
    (guard_swap, "Who won the World Cup in 2014?", "Who won the World Cup in 2018?", PASS),
    (guard_swap, "How do I reset my router?", "What's the way to reset my router?", PASS),
    # The price: a rewording that swaps one word for a synonym WordNet does not list.
    (guard_swap, "What are the symptoms of diabetes?", "What are the signs of diabetes?", VETO),
    # Symbols and operators.
    (guard_symbols, "Is 5 > 3?", "Is 5 < 3?", VETO),
    (guard_symbols, "What is 2+2?", "What is 2-2?", VETO),
    (guard_symbols, "Is 5 >= 3?", "Is 5 <= 3?", VETO),
    (guard_symbols, "How do I learn C++?", "How do I learn C#?", VETO),
    (guard_symbols, "Convert $5 to euros", "Convert €5 to euros", VETO),
    (guard_symbols, "Is e-mail safe?", "Is email safe?", PASS),
    # Opposites in every word form.
    (guard_opposite, "Is smoking permitted in the park?", "Is smoking forbidden in the park?",
     VETO),
    (guard_opposite, "Can I permit guests to park here?", "Can I forbid guests to park here?",
     VETO),
    (guard_opposite, "Are dogs allowed on the beach?", "Are dogs banned on the beach?", VETO),
    (guard_opposite, "Is vaccination mandatory for students?",
     "Is vaccination voluntary for students?", VETO),
    (guard_opposite, "Is attendance required?", "Is attendance optional?", VETO),
    (guard_opposite, "Should I accept the job offer?", "Should I decline the job offer?", VETO),
    (guard_opposite, "Who accepted the invitation?", "Who declined the invitation?", VETO),
    (guard_opposite, "How do I include a file in the build?",
     "How do I exclude a file from the build?", VETO),
    (guard_opposite, "How do I start the service?", "How do I stop the service?", VETO),
    (guard_opposite, "How do I encrypt a file with GPG?", "How do I decrypt a file with GPG?",
     VETO),
    (guard_opposite, "What does the buyer pay at closing?", "What does the seller pay at closing?",
     VETO),
    (guard_opposite, "Is smoking permitted in the park?", "Is smoking allowed in the park?", PASS),
    # Possessives.
    (guard_opposite, "Where is the boys' changing room?", "Where is the girls' changing room?",
     VETO),
    (guard_opposite, "What is the teacher's salary?", "What is the student's salary?", VETO),
    (guard_opposite, "Where are the men's shoes?", "Where are the women's shoes?", VETO),
    # Hyphenated negative prefixes.
    (guard_negation, "How do I start a non-profit organization?",
     "How do I start a profit organization?", VETO),
    (guard_negation, "Is this ticket non-refundable?", "Is this ticket refundable?", VETO),
    # Numbers as a multiset, with their units.
    (guard_numbers, "How long does it take to run 5 km?", "How long does it take to run 5 miles?",
     VETO),
    (guard_numbers, "How many ml are in 5 tsp?", "How many ml are in 5 tbsp?", VETO),
    (guard_numbers, "Bake a cake with 2 eggs and 3 cups of flour",
     "Bake a cake with 2 eggs and 4 cups of flour", VETO),
    (guard_numbers, "I have 3 apples and 3 pears", "I have 3 apples and 4 pears", VETO),
    (guard_numbers, "How long does it take to run 5 km?",
     "How long does it take to run 5 kilometres?", PASS),
    (guard_numbers, "How many calories are in two eggs?", "How many calories are in 2 eggs?",
     PASS),
    # A fronted phrase is not a role swap; a real swap is.
    (guard_order, "In Python, how do I sort a list?", "How do I sort a list in Python?", PASS),
    (guard_order, "On a Mac, how do I take a screenshot?", "How do I take a screenshot on a Mac?",
     PASS),
    (guard_order, "Using pandas, how do I drop a column?", "How do I drop a column using pandas?",
     PASS),
    (guard_order, "How do I convert a list to a tuple?", "How do I convert a tuple to a list?",
     VETO),
    (guard_order, "How do I fly from London to Paris?", "How do I fly from Paris to London?",
     VETO),
    (guard_order, "Is a dog bigger than a cat?", "Is a cat bigger than a dog?", VETO),
]  # fmt: skip


@pytest.mark.parametrize(("guard", "a", "b", "level"), GUARD_CASES)
def test_guard_on_clear_examples(guard, a, b, level):
    check = guard(a, b)
    assert check.level == level, check
    assert check.passed is (level == PASS)
    assert guard(b, a).level == level  # symmetric


def test_a_comparative_flipped_with_its_operands_is_the_same_question():
    checks = {c.name: c for c in run_guards("Is Mount Everest taller than K2?",
                                            "Is K2 shorter than Mount Everest?")}  # fmt: skip
    assert all(c.passed for c in checks.values()), checks  # taller/shorter: an opposite too
    flipped = run_guards("Is a cheetah faster than a lion?", "Is a lion slower than a cheetah?")
    assert all(c.passed for c in flipped), flipped
    other = run_guards("Is a cheetah faster than a lion?", "Is a cheetah slower than a lion?")
    assert any(c.level == 2 for c in other), other


def test_a_negated_opposite_is_the_same_question():
    checks = run_guards("Is it not allowed to park here?", "Is it forbidden to park here?")
    assert all(c.passed for c in checks), checks


# --- text.comparable --------------------------------------------------------------------

SAME_TEXT = [
    ("How do I reset my router?", "how do I reset my router"),
    ("hi! how do I reset my router? thanks", "How do I reset my router"),
    ("Hello there, quick question: how do I reset my router? Thanks in advance!",
     "how do I reset my router?"),
    ("Please, what is the capital of France?", "What is the capital of France? pls"),
    ("Good morning! Is it going to rain today?", "is it going to rain today"),
    ("How do I reset my router? 😀", "how do I reset my router"),
    ("Is the café open on Sunday?", "IS THE CAFÉ OPEN ON SUNDAY"),
    ("Wo ist die Straße?", "wo ist die STRASSE"),  # casefold, not lower
    ("Как сбросить роутер?", "как сбросить роутер!"),
    ("如何重置路由器？", "如何重置路由器"),
]  # fmt: skip

DIFFERENT_TEXT = [
    ("Как сбросить роутер?", "Как сбросить принтер?"),
    ("Ποιος είναι ο Δίας;", "Ποιος είναι ο Άρης;"),
    ("如何重置路由器？", "如何重置打印机？"),
    ("東京の人口は?", "大阪の人口は?"),
    ("Is 5 > 3?", "Is 5 < 3?"),
    ("What is 2+2?", "What is 2-2?"),
    ("How do I learn C++?", "How do I learn C#?"),
    ("Convert $5 to euros", "Convert €5 to euros"),
    ("How do I say café in Spanish?", "How do I say cafe in Spanish?"),
]


@pytest.mark.parametrize(("a", "b"), SAME_TEXT)
def test_comparable_drops_case_fillers_greetings_and_punctuation(a, b):
    assert comparable(a) == comparable(b)


@pytest.mark.parametrize(("a", "b"), DIFFERENT_TEXT)
def test_comparable_keeps_every_script_and_the_symbols(a, b):
    assert comparable(a) != comparable(b)
    assert comparable(a) and comparable(b)


# Bugs found while writing these tests (reported, not fixed here): comparable() strips "!",
# brackets and apostrophes as punctuation, so the texts below compare identical and the
# verifier accepts them at once, before the guards run (guard_symbols vetoes the first and
# the third; no guard sees the brackets).
COMPARABLE_BUGS = [
    ("Is x != y?", "Is x = y?"),
    ("What is 2 * (3 + 4)?", "What is 2 * 3 + 4?"),
    ("What is f'(x) for f(x) = x^2?", "What is f(x) for f(x) = x^2?"),
]


@pytest.mark.parametrize(("a", "b"), COMPARABLE_BUGS)
def test_comparable_keeps_operators_written_with_punctuation(a, b):
    assert comparable(a) != comparable(b)


def test_numbers_swapped_between_units_are_vetoed():
    a = "Can I bake a cake with 2 eggs and 3 cups of flour?"
    b = "Can I bake a cake with 3 eggs and 2 cups of flour?"
    assert guard_numbers(a, b).level == VETO


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Is this toy un-safe for kids?", "Is this toy safe for kids?"),
        ("How do I un-install the app?", "How do I install the app?"),
    ],
)
def test_a_hyphenated_un_prefix_is_vetoed(a, b):
    assert guard_negation(a, b).level == VETO


# --- the Verifier, with a scripted pair model ---------------------------------------------


class Scripted:
    """A pair scorer with fixed answers per candidate text (default `score`), recording
    the candidates it was asked about, in order."""

    def __init__(self, score: float | None = 0.99, **by_text: float | None) -> None:
        self.score = score
        self.by_text = by_text
        self.calls: list[str] = []

    def __call__(self, query: str, candidate: str) -> float | None:
        self.calls.append(candidate)
        return self.by_text.get(candidate, self.score)


def _failed(verdict: Verdict) -> list[str]:
    return [c.name for c in verdict.checks if not c.passed]


@pytest.mark.parametrize(("a", "b"), SAME_TEXT)
def test_the_same_text_is_accepted_without_the_pair_model(a, b):
    pair = Scripted(score=0.0)
    verdict = Verifier(pair, score_threshold=0.5).verify(a, b, 0.9)
    assert verdict.accept and verdict.score == 1.0
    assert [c.name for c in verdict.checks] == ["cosine", "identical"]
    assert pair.calls == []


VETOED = [
    ("Is 5 > 3?", "Is 5 < 3?", "symbols"),
    ("What is 2+2?", "What is 2-2?", "symbols"),
    ("How many calories are in 2 eggs?", "How many calories are in 3 eggs?", "numbers"),
    ("How long does it take to run 5 km?", "How long does it take to run 5 miles?", "numbers"),
    ("Is smoking permitted in the park?", "Is smoking forbidden in the park?", "opposite"),
    ("Where is the boys' changing room?", "Where is the girls' changing room?", "opposite"),
    ("How do I start a non-profit organization?", "How do I start a profit organization?",
     "negation"),
    ("How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?",
     "order"),
]  # fmt: skip


@pytest.mark.parametrize(("a", "b", "guard"), VETOED)
def test_a_guard_conflict_vetoes_whatever_the_model_says(a, b, guard):
    pair = Scripted(score=1.0)
    verdict = Verifier(pair, score_threshold=0.5).verify(a, b, 0.99)
    assert not verdict.accept and verdict.score == 0.0
    assert guard in _failed(verdict)
    assert pair.calls == []


def test_a_fronted_phrase_goes_on_to_the_pair_model():
    pair = Scripted(score=0.9)
    verdict = Verifier(pair, score_threshold=0.5).verify(
        "In Python, how do I sort a list?", "How do I sort a list in Python?", 0.95
    )
    order = verdict.check("order")
    assert verdict.accept and verdict.score == 0.9
    assert order is not None and order.passed and order.detail == "a phrase moved to the front"
    assert pair.calls == ["How do I sort a list in Python?"]


FOREIGN_PARAPHRASES = [
    ("Wie setze ich meinen Router zurück?", "Wie kann ich meinen Router zurücksetzen?"),
    ("Comment réinitialiser mon routeur ?", "Comment est-ce que je réinitialise mon routeur ?"),
    ("Как сбросить роутер?", "Как мне сбросить роутер?"),
    ("如何重置路由器？", "怎么重置路由器？"),
    ("How do I reset my router?", "Как сбросить роутер?"),
    ("Hoe oud is de Dom in Utrecht?", "Hoe hoog is de Dom in Utrecht?"),
    ("Router zurücksetzen?", "Drucker zurücksetzen?"),
]  # fmt: skip
FOREIGN_SAME = [
    ("Wie setze ich meinen Router zurück?", "wie setze ich meinen router zurück"),
    ("Comment réinitialiser mon routeur ?", "comment réinitialiser mon routeur"),
    ("Как сбросить роутер?", "как сбросить роутер"),
    ("如何重置路由器？", "如何重置路由器"),
]


@pytest.mark.parametrize(("a", "b"), FOREIGN_PARAPHRASES)
def test_prompts_the_models_cannot_read_are_refused(a, b):
    pair = Scripted(score=1.0)
    verdict = Verifier(pair, score_threshold=0.5).verify(a, b, 0.99)
    assert not verdict.accept
    assert _failed(verdict) == ["language"]
    assert pair.calls == []


@pytest.mark.parametrize(("a", "b"), FOREIGN_SAME)
def test_prompts_the_models_cannot_read_are_served_when_identical(a, b):
    verdict = Verifier(Scripted(score=0.0), score_threshold=0.5).verify(a, b, 0.99)
    assert verdict.accept and verdict.check("identical") is not None


def test_english_with_a_foreign_name_is_not_refused():
    pair = Scripted(score=0.9)
    verdict = Verifier(pair, score_threshold=0.5).verify(
        "What is the capital of Côte d'Ivoire?", "Which city is the capital of Côte d'Ivoire?", 0.9
    )
    assert verdict.check("language") is None and verdict.accept


def test_a_quoted_foreign_phrase_does_not_make_the_question_foreign():
    pair = Scripted(score=0.9)
    verdict = Verifier(pair, score_threshold=0.5).verify(
        'What does "sur le champ" mean?', 'What is the meaning of "sur le champ"?', 0.9
    )
    assert verdict.check("language") is None and verdict.accept
    refused = Verifier(pair, score_threshold=0.5).verify(
        'Que veut dire "deadline" ?', 'Que signifie "deadline" ?', 0.9
    )
    assert _failed(refused) == ["language"]


def test_the_guards_do_not_read_the_fillers():
    """"If you don't mind me asking" holds a negation the question does not."""
    pair = Scripted(score=0.9)
    verdict = Verifier(pair, score_threshold=0.5).verify(
        "If you don't mind me asking, how much does a passport renewal cost?",
        "How much does it cost to renew a passport?",
        0.9,
    )
    assert verdict.accept and _failed(verdict) == []
    negated = Verifier(pair, score_threshold=0.5).verify(
        "Why don't cats like water?", "Why do cats like water?", 0.9
    )
    assert "negation" in _failed(negated)


def test_a_pair_beyond_the_window_is_refused():
    verdict = Verifier(Scripted(score=None), score_threshold=0.5).verify(
        "How do I reset my router?", "How can I reset my router?", 0.95
    )
    assert not verdict.accept and verdict.score == 0.0
    assert verdict.checks[-1].name == "window" and not verdict.checks[-1].passed


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_a_score_threshold_outside_0_1_is_an_error(bad):
    with pytest.raises(VerifierError):
        Verifier(Scripted(), score_threshold=bad)


def test_the_score_threshold_decides_and_may_be_set_per_call():
    verifier = Verifier(Scripted(score=0.7), score_threshold=0.5)
    a, b = "How do I reset my router?", "What's the way to reset my router?"
    assert verifier.verify(a, b, 0.9).accept
    refused = verifier.verify(a, b, 0.9, score_threshold=0.8)
    assert not refused.accept and refused.score == 0.7
    assert _failed(refused) == ["pair_model"]
    assert verifier.doubtful(refused, 0.6) and not verifier.doubtful(refused, 0.75)
    assert Verifier(Scripted(score=0.0), score_threshold=0.0).verify(a, b, 0.9).accept
    assert not Verifier(Scripted(score=0.99), score_threshold=1.0).verify(a, b, 0.9).accept


def test_a_veto_is_never_doubtful():
    verifier = Verifier(Scripted(score=1.0), score_threshold=0.5)
    vetoed = verifier.verify("Is 5 > 3?", "Is 5 < 3?", 0.99)
    assert not verifier.doubtful(vetoed, 0.0)


def test_verdict_reports_every_check_as_json():
    verdict = Verifier(Scripted(score=0.123456), score_threshold=0.5).verify(
        "How do I reset my router?", "What is the way to reset a router?", 0.987654
    )
    payload = json.loads(json.dumps(verdict.as_dict()))
    assert payload.keys() == {"accept", "similarity", "score", "checks"}
    assert payload["accept"] is False
    assert payload["similarity"] == 0.9877 and payload["score"] == 0.1235
    names = [c["name"] for c in payload["checks"]]
    assert names[0] == "cosine" and names[-1] == "pair_model"
    assert {"negation", "numbers", "entities", "order", "opposite", "symbols", "swap"} <= set(names)
    assert all({"name", "passed"} <= c.keys() for c in payload["checks"])
    assert payload["checks"][-1]["score"] == 0.1235


QUERY = "Who won the World Cup in 2014?"


def test_choose_serves_the_first_accepted_in_cosine_order():
    pair = Scripted(score=0.9, **{"Which team won the 2014 World Cup?": 0.2})
    options = [
        Option("Who won the World Cup in 2014 ?", 0.5, ref="below"),
        Option("Who won the World Cup in 2018?", 0.97, ref="2018"),  # numbers: a veto
        Option("Who was the winner of the World Cup in 2014?", 0.91, ref="second"),
        Option("Which team won the 2014 World Cup?", 0.95, ref="low score"),
        Option("Who won the 2014 World Cup?", 0.85, ref="third"),
    ]
    picked = Verifier(pair, score_threshold=0.5).choose(QUERY, options, threshold=0.8)
    assert picked is not None
    option, verdict = picked
    assert option.ref == "second" and verdict.accept and verdict.similarity == 0.91
    # The vetoed one never reached the model; nothing after the first accepted ran.
    assert pair.calls == ["Which team won the 2014 World Cup?",
                          "Who was the winner of the World Cup in 2014?"]  # fmt: skip


def test_choose_stops_below_the_threshold():
    pair = Scripted(score=0.9)
    options = [Option("Who was the winner of the World Cup in 2014?", 0.79, ref=1)]
    assert Verifier(pair, score_threshold=0.5).choose(QUERY, options, threshold=0.8) is None
    assert pair.calls == []


def test_choose_returns_none_when_none_is_accepted():
    pair = Scripted(score=0.3)
    options = [
        Option("Who won the World Cup in 2018?", 0.97),
        Option("Who was the winner of the World Cup in 2014?", 0.91),
    ]
    verifier = Verifier(pair, score_threshold=0.5)
    assert verifier.choose(QUERY, options, threshold=0.8) is None
    assert verifier.choose(QUERY, options, threshold=0.8, score_threshold=0.2) is not None
    assert verifier.choose(QUERY, [], threshold=0.8) is None
