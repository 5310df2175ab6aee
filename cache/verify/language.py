"""Can the models judge this prompt? English, in the Latin script.

MiniLM (the embedder and the pair model) learned English: two Russian, Chinese or German
questions land close together whatever they ask, and the pair model cannot read them
either. The semantic cache serves such prompts only when they are the same text up to
case, spacing and fillers (text.comparable); otherwise exact hits only.

`foreign(text)` names why a prompt is not judged, or returns None:

- script: more than a fifth of its letters are outside the Latin script (Cyrillic, Han,
  Kana, Hangul, Arabic, Greek, Devanagari, ...);
- language: it uses at least as many function words of German, French, Spanish, Italian,
  Portuguese or Dutch as of English, and at least two of them (data/function_words.json;
  words English shares, like "die" or "also", count for English only); or one of them and
  no English function word; or accented words and no English function word ("Router
  zurücksetzen?"). A tie refuses: a lost hit costs one LLM call, a wrong one a wrong answer.
  Words in double quotes are left out of this count.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from cache.verify.lexicon import ENGLISH_WORDS, FOREIGN_WORDS

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
_MAX_OTHER_SCRIPT = 0.2
_QUOTED = re.compile(r'"[^"]*"|“[^”]*”|«[^»]*»')


def _latin(char: str) -> bool:
    return unicodedata.name(char, "").startswith("LATIN")


@lru_cache(maxsize=8192)
def foreign(text: str) -> str | None:
    letters = [c for c in text if c.isalpha()]
    if letters:
        other = sum(not _latin(c) for c in letters)
        if other > _MAX_OTHER_SCRIPT * len(letters):
            return "not in the Latin script"
    # A quoted phrase is what is asked about, not the language asking: 'What does "per se"
    # mean?' is an English question.
    words = [w.casefold() for w in _WORD.findall(_QUOTED.sub(" ", text))]
    english = sum(w in ENGLISH_WORDS for w in words)
    for lang, vocabulary in FOREIGN_WORDS.items():
        hits = sum(w in vocabulary for w in words)
        if (hits >= 2 and hits >= english) or (hits and not english):
            return f"not English ({lang})"
    if not english and any(not w.isascii() for w in words):
        return "not English (accented words and no English function word)"
    return None
