"""Second-stage check of a semantic-cache candidate: is it the *same* question?

MiniLM cosine alone cannot tell "reset my router" from "reset my printer", or
"Celsius to Fahrenheit" from "Fahrenheit to Celsius" (cosine 0.99). Serving the
answer of a different question is the worst thing the cache can do, so every
candidate above the cosine threshold goes through the `Verifier` (verifier.py):
language and window checks, precise guards as hard vetoes, and a learned pair model
(a cross-encoder that reads both prompts together) with a score threshold.

Usage::

    verifier = Verifier(pair_model.score, score_threshold=0.9)
    verdict = verifier.verify(query, candidate_prompt, cosine)
    if verdict.accept: ...serve...
    verdict.as_dict()  # JSON-ready: accept, similarity, score, checks

    # The index's k nearest entries: serve the nearest accepted one, or none.
    picked = verifier.choose(query, [Option(text, cosine, ref=key), ...], threshold=0.8)

Pure Python + stdlib; reads no environment; the pair model is passed in (cache/ imports
nothing of ours).

Errors: ``VerifierError`` (bad arguments).

The modules, each read in one sitting:

    lexicon.py    word lists, loaded from data/ (stopwords, negations, opposites, fillers...)
    words.py      tokeniser (Unicode words, symbols), stemmer, content words
    numbers.py    numbers and dates as canonical strings; numbers with their units
    text.py       `analyse`: everything the guards need about one prompt, cached;
                  `comparable`: the text two prompts are compared by
    language.py   `foreign`: is a prompt one the models cannot judge?
    guards.py     one function per guard, and `run_guards`
    verifier.py   `Verifier`: verify one candidate, choose among the nearest
    llm_band.py   the uncertain band's yes/no question to the LLM
    results.py    Check, Verdict, Option, PairScorer, VerifierError
"""

from cache.verify.guards import (
    GUARDS,
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
from cache.verify.language import foreign
from cache.verify.llm_band import SAME_ANSWER, SAME_QUESTION, said_yes, same_answer, same_question
from cache.verify.results import Check, Option, PairScorer, Verdict, VerifierError
from cache.verify.text import comparable
from cache.verify.verifier import HARD_GUARDS, Verifier
from cache.verify.words import is_content_word

__all__ = [
    "GUARDS",
    "HARD_GUARDS",
    "SAME_ANSWER",
    "SAME_QUESTION",
    "Check",
    "Option",
    "PairScorer",
    "Verdict",
    "Verifier",
    "VerifierError",
    "comparable",
    "foreign",
    "guard_direction",
    "guard_entities",
    "guard_negation",
    "guard_numbers",
    "guard_opposite",
    "guard_order",
    "guard_scope",
    "guard_swap",
    "guard_symbols",
    "is_content_word",
    "run_guards",
    "said_yes",
    "same_answer",
    "same_question",
]
