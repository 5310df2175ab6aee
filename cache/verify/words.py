"""Words of a prompt: the tokeniser, the crude stemmer, content words."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cache.verify.lexicon import NEGATIONS, STOPWORDS

_LEADING_ANSWER = re.compile(r"^\s*(yes|no)\s*,\s*", re.IGNORECASE)
# Unicode words (Cyrillic, Greek, CJK are words too), "C++" and "C#" whole, code spans,
# versions; currency and percent signs as words of their own.
_TOKEN = re.compile(r"`[^`]+`|v?\d+(?:\.\d+)+|\w+(?:['’]\w+)?(?:\+\+|#(?!\w))?(?:\(\))?|[$%€£¥₹‰]")


@dataclass(frozen=True)
class Word:
    raw: str  # as written (case kept; code spans without backticks)
    low: str
    start: bool  # first word of a sentence
    code: bool  # inside backticks, or an identifier


def stem(word: str) -> str:
    """Crude plural/possessive folding: enough to match 'eggs' with 'egg'."""
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is", "ps")):
        return w[:-1]
    return w


def tokenise(text: str) -> list[Word]:
    text = _LEADING_ANSWER.sub("", text)
    text = re.sub(r"(\d),(\d{3})\b", r"\1\2", text)  # 1,000 -> 1000
    words: list[Word] = []
    last_end = 0
    start = True
    for m in _TOKEN.finditer(text):
        gap = text[last_end : m.start()]
        if any(c in gap for c in ".?!:;"):
            start = True
        last_end = m.end()
        tok = m.group(0)
        code = tok.startswith("`") or "_" in tok or tok.endswith("()")
        if tok.startswith("`"):
            tok = "".join(p for p in re.split(r"[^\w.]+", tok) if p).strip(".")
        tok = tok.removesuffix("()")
        if tok:
            words.append(Word(tok, tok.casefold().replace("’", "'"), start, code))
            start = False
    return words


def is_content_word(word: str) -> bool:
    return (
        word not in STOPWORDS
        and word not in NEGATIONS
        and ((len(word) > 1 and any(c.isalpha() for c in word)) or word.isdigit())
    )
