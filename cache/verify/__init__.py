"""Second-stage check of a semantic-cache candidate: is it the *same* question?

MiniLM cosine alone cannot tell "reset my router" from "reset my printer", or
"Celsius to Fahrenheit" from "Fahrenheit to Celsius" (cosine 0.99). Serving the
answer of a different question is the worst thing the cache can do, so every
candidate above a lower cosine bound goes through:

1. cheap guards on the raw texts: negation, numbers and dates, named entities,
   scope words (all/some/only...), comparison direction (more/less, before/after,
   upload/download...) and swapped roles (from A to B / from B to A);
2. a token alignment (BERTScore-like) over the MiniLM token vectors: a content
   word of one prompt without a close counterpart in the other is evidence of a
   different question;
3. a logistic-regression verifier over all of the above, trained offline by
   ``bench/train_verifier.py``; its weights live in ``cache/verify/verifier.json``.

Usage::

    verifier = Verifier()                     # or Verifier("path/to/weights.json")
    verdict = verifier.verify(query, candidate_prompt, cosine,
                              query_tokens=(tokens, vectors),      # optional
                              candidate_tokens=(tokens, vectors))  # optional
    if verdict.accept: ...serve...
    verdict.as_dict()  # JSON-ready: accept, similarity, score, checks

    # The index's k nearest entries: serve the best accepted one, or none.
    picked = verifier.choose(query, query_tokens,
                             [Option(text, cosine, tokens, ref=key), ...],
                             threshold=0.8)
    if picked is not None:
        option, verdict = picked                # option.ref is the caller's handle

Token vectors are ``(wordpiece tokens, float array (n_tokens, dim))`` without
CLS/SEP, L2-normalised. Without them the verifier falls back to a text-only model
with a stricter threshold. Pure numpy + stdlib; reads no environment.

Errors: ``VerifierError`` (bad weights file or arguments).

The modules, each read in one sitting:

    lexicon.py    word lists, loaded from data/ (stopwords, negations, poles, numbers...)
    words.py      tokeniser, stemmer, content words
    numbers.py    numbers and dates as canonical strings
    text.py       `analyse`: everything the guards need about one prompt, cached
    guards.py     one function per guard, and `run_guards`
    alignment.py  the token alignment and its features
    features.py   the model's inputs (serving and training share them)
    model.py      the learned model (logistic regression or a small MLP) from JSON
    verifier.py   `Verifier`: verify one candidate, choose among the nearest
    llm_band.py   the uncertain band's yes/no question to the LLM
    results.py    Check, Verdict, Option, token vectors, VerifierError

A new kind of check (a learned pair model, say) is a module beside these, a feature or a
check in features.py/verifier.py, and a line here if others need it.
"""

from cache.verify.alignment import Alignment, align, word_vectors
from cache.verify.features import features
from cache.verify.guards import (
    GUARDS,
    guard_direction,
    guard_entities,
    guard_negation,
    guard_numbers,
    guard_order,
    guard_scope,
    run_guards,
)
from cache.verify.llm_band import SAME_QUESTION, said_yes, same_question
from cache.verify.model import DEFAULT_WEIGHTS
from cache.verify.results import Check, LazyTokens, Option, TokenVectors, Verdict, VerifierError
from cache.verify.verifier import Verifier
from cache.verify.words import is_content_word

__all__ = [
    "DEFAULT_WEIGHTS",
    "GUARDS",
    "SAME_QUESTION",
    "Alignment",
    "Check",
    "LazyTokens",
    "Option",
    "TokenVectors",
    "Verdict",
    "Verifier",
    "VerifierError",
    "align",
    "features",
    "guard_direction",
    "guard_entities",
    "guard_negation",
    "guard_numbers",
    "guard_order",
    "guard_scope",
    "is_content_word",
    "run_guards",
    "said_yes",
    "same_question",
    "word_vectors",
]
