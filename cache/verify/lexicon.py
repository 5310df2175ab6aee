"""The word lists the text analysis and the guards use, loaded once from data/.

stopwords.txt, negations.txt  function words; negating words
lexicon.json                  negation prefixes, quantifier scopes, direction particles,
                              words of comparison and of order (from/to/than/in)
directions.json               groups of opposite poles: [name, "pole words", "other pole"]
numbers.json                  number words, ordinals, Roman numerals
dates.json                    months, weekdays, time units
opposites.txt                 direct antonyms from WordNet 3.0, every word form
                              (bench/build_lexicon.py; WordNet's licence in its header)
opposites_extra.txt           opposites and roles WordNet lacks (buyer/seller, ...)
synonyms.txt                  WordNet's synsets of two or more words, every word form, one a
                              line (bench/build_lexicon.py); read when a Verifier is built
fillers.txt                   greetings, fillers and sign-offs (text.comparable)
function_words.json           frequent function words of English and six other languages
                              (language.foreign)

A pair differs in direction when one text uses only one pole of a group and the other
text only the other pole (guards.guard_direction).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("data")


def _words(name: str) -> frozenset[str]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return frozenset(w for line in lines if not line.startswith("#") for w in line.split())


def _lines(name: str) -> list[str]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _json(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


_lexicon, _numbers, _dates = _json("lexicon.json"), _json("numbers.json"), _json("dates.json")

STOPWORDS = _words("stopwords.txt")
NEGATIONS = _words("negations.txt")
NEG_PREFIXES: tuple[str, ...] = tuple(_lexicon["negation_prefixes"])
SCOPE: dict[str, str] = _lexicon["scope"]
DIRECTION_GROUPS: tuple[tuple[str, frozenset[str], frozenset[str]], ...] = tuple(
    (name, frozenset(pos.split()), frozenset(neg.split()))
    for name, pos, neg in _json("directions.json")
)
# Particles that only carry a direction in these verb phrases ("zoom in", "turn off").
PARTICLE_VERBS = frozenset(_lexicon["particle_verbs"].split())
PARTICLES = frozenset(_lexicon["particles"].split())
SYMMETRIC = frozenset(_lexicon["symmetric"].split())
FLOW_MARKERS: dict[str, str] = _lexicon["flow_markers"]
ROLE_SKIP = frozenset(_lexicon["role_skip"].split())
# Skipped left of "than": "Everest (is) taller than" pairs Everest, not taller.
COMPARATIVES = ROLE_SKIP | frozenset(_lexicon["comparatives"].split())
# Units of measure and currencies, each spelling -> one name ("dollars" -> "$"): a number
# is compared together with its unit.
MEASURES: dict[str, str] = {
    alias.replace("_", " "): group.split()[0]
    for group in _lexicon["measures"]
    for alias in group.split()
}

UNITS: dict[str, int] = _numbers["units"]
TENS: dict[str, int] = _numbers["tens"]
SCALES: dict[str, int] = _numbers["scales"]
ORDINALS: dict[str, int] = _numbers["ordinals"]
ROMAN: dict[str, int] = _numbers["roman"]

MONTHS = frozenset(_dates["months"].split())
AMBIGUOUS_MONTHS = frozenset(_dates["ambiguous_months"].split())  # only when Capitalised
DAYS = frozenset(_dates["days"].split())
TIME_UNITS: dict[str, str] = {
    word: unit for unit, words in _dates["time_units"].items() for word in words.split()
}


def _opposites() -> dict[str, frozenset[str]]:
    """Word form -> the forms of its opposites ("permitted" -> {"forbid", "forbids", ...})."""
    out: dict[str, set[str]] = {}
    for name in ("opposites.txt", "opposites_extra.txt"):
        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            a, b = (frozenset(side.split()) for side in line.split("|"))
            for x, y in ((a, b), (b, a)):
                for form in x:
                    out.setdefault(form, set()).update(y)
    return {form: frozenset(others - {form}) for form, others in out.items()}


OPPOSITES = _opposites()


@lru_cache(maxsize=1)
def synonym_groups() -> dict[str, tuple[int, ...]]:
    """Word form -> the numbers of the synonyms.txt lines holding it (~15 MB, 0.1 s: read
    when a Verifier is built, not by every importer)."""
    out: dict[str, list[int]] = {}
    lines = (DATA / "synonyms.txt").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            for form in line.split():
                out.setdefault(form, []).append(i)
    return {form: tuple(ids) for form, ids in out.items()}


def synonyms(x: str, y: str) -> bool:
    """x and y (lowercase word forms) share a WordNet synset: buy/purchased, fix/repair."""
    groups = synonym_groups()
    return not set(groups.get(x, ())).isdisjoint(groups.get(y, ()))


FILLERS: tuple[str, ...] = tuple(
    sorted((w for w in _lines("fillers.txt")), key=lambda p: (-len(p.split()), p))
)
# Fillers that are removed wherever they stand, not only at the start or the end.
ANYWHERE_FILLERS = frozenset({"please", "pls", "plz", "kindly"})
_function_words = _json("function_words.json")
ENGLISH_WORDS = frozenset(_function_words["en"].split())
FOREIGN_WORDS: dict[str, frozenset[str]] = {
    lang: frozenset(words.split()) - ENGLISH_WORDS
    for lang, words in _function_words.items()
    if lang not in ("en", "_comment")
}
