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
   ``bench/train_verifier.py``; its weights live in ``cache/verifier.json``.

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
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_WEIGHTS = Path(__file__).with_name("verifier.json")

TokenVectors = tuple[Sequence[str], np.ndarray]
# Token vectors, or a function that fetches them (called at most once, and only for a
# candidate that passes the cosine threshold).
LazyTokens = TokenVectors | Callable[[], TokenVectors | None] | None


class VerifierError(ValueError):
    """The weights file or the arguments are unusable."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Check:
    """One check that ran. `level` 0 = no difference, 1 = one-sided, 2 = conflict."""

    name: str
    passed: bool
    detail: str = ""
    score: float | None = None
    level: int = 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "passed": self.passed}
        if self.detail:
            out["detail"] = self.detail
        if self.score is not None:
            out["score"] = round(self.score, 4)
        return out


@dataclass(frozen=True)
class Verdict:
    """Decision for one candidate. `score` is the verifier's P(same question)."""

    accept: bool
    similarity: float
    score: float
    checks: tuple[Check, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accept": self.accept,
            "similarity": round(self.similarity, 4),
            "score": round(self.score, 4),
            "checks": [c.as_dict() for c in self.checks],
        }


@dataclass(frozen=True)
class Option:
    """One candidate for `Verifier.choose`: a cached prompt, its cosine to the query,
    its token vectors (or a function fetching them), and `ref`, the caller's own handle
    (an index candidate, an entry key), handed back untouched."""

    text: str
    similarity: float
    tokens: LazyTokens = None
    ref: Any = None


def _resolve(tokens: LazyTokens) -> TokenVectors | None:
    return tokens() if callable(tokens) else tokens


# --------------------------------------------------------------------------- lexicons

_STOPWORDS = frozenset(
    """a an the and or but if then else of at by for with about against between into
    through during to from up down in out on off over under again further once here
    there when where why how what which who whom whose this that these those am is are
    was were be been being have has had having do does did doing i me my myself we our
    ours you your yours he him his she her it its they them their theirs can could
    should would will shall may might must let s t d ll m re ve don didn doesn isn
    aren wasn weren hasn haven hadn won wouldn shouldn couldn mustn shan please also
    so such than too very just there's what's it's i'm i've i'd how's get way
    use using used one's as any some all each every only most more less no not nor
    never none own same other""".split()
)
_NEGATIONS = frozenset(
    """not no never none nobody nothing nowhere neither nor without cannot unable
    dont doesnt didnt isnt arent wasnt werent cant couldnt wont wouldnt shouldnt
    hasnt havent hadnt mustnt aint""".split()
)
_NEG_PREFIXES = ("non", "un", "in", "im", "il", "ir", "dis")
_SCOPE = {
    "all": "universal", "every": "universal", "each": "universal", "always": "universal",
    "everyone": "universal", "everybody": "universal", "everything": "universal",
    "entire": "universal", "whole": "universal",
    "some": "existential", "any": "existential", "anyone": "existential",
    "anybody": "existential", "anything": "existential", "ever": "existential",
    "sometimes": "existential", "several": "existential", "certain": "existential",
    "only": "restrictive", "solely": "restrictive", "exclusively": "restrictive",
    "most": "majority", "many": "majority", "mostly": "majority", "usually": "majority",
    "often": "majority", "few": "minority", "rarely": "minority", "seldom": "minority",
    "none": "none", "nobody": "none", "nothing": "none", "never": "none",
    "single": "one",
}  # fmt: skip
# Opposite poles; a pair differs in direction when one text uses only one pole of a
# group and the other text only the other pole.
_DIRECTION_GROUPS: tuple[tuple[str, frozenset[str], frozenset[str]], ...] = tuple(
    (name, frozenset(a.split()), frozenset(b.split()))
    for name, a, b in (
        ("magnitude",
         "increase increases increasing raise raises raising more higher highest high "
         "bigger biggest larger largest greater greatest maximum max maximize most gain",
         "decrease decreases decreasing reduce reduces reducing lower lowers lowest low "
         "less fewer fewest smaller smallest minimum min minimize least lose"),
        ("up_down", "up upward upwards", "down downward downwards"),
        ("length", "long longer longest tall taller tallest", "short shorter shortest"),
        ("speed", "fast faster fastest quick quicker quickest quickly accelerate",
         "slow slower slowest slowly decelerate"),
        ("time", "before earlier earliest beforehand", "after later latest afterwards"),
        ("age", "old older oldest", "new newer newest young younger youngest"),
        ("heat", "hot hotter hottest warm warmer warmest heat",
         "cold colder coldest cool cooler coolest"),
        ("quality", "best better good pros advantages advantage benefits benefit upsides",
         "worst worse bad cons disadvantages disadvantage drawbacks downsides risks"),
        ("price", "cheap cheaper cheapest inexpensive affordable",
         "expensive pricier priciest costly"),
        ("switch", "enable enabled enabling activate on", "disable disabled disabling "
         "deactivate off"),
        ("open", "open opened opening", "close closed closing shut"),
        ("start", "start starting begin beginning", "stop stopping end ending finish quit"),
        ("connect", "connect connected connecting", "disconnect disconnected"),
        ("lock", "lock locked", "unlock unlocked"),
        ("transfer", "upload uploading uploaded", "download downloading downloaded"),
        ("import", "import importing imported", "export exporting exported"),
        ("push", "push pushing", "pull pulling"),
        ("trade", "buy buying bought purchase", "sell selling sold"),
        ("send", "send sending sent", "receive receiving received"),
        ("edit", "add adding insert inserting create creating", "remove removing delete "
         "deleting drop dropping"),
        ("crypt", "encrypt encrypting encryption", "decrypt decrypting decryption"),
        ("compress", "compress compressing zip", "decompress decompressing unzip"),
        ("cook", "overcook overcooked", "undercook undercooked"),
        ("accept", "accept accepting approve", "decline declining reject rejecting deny"),
        ("sun", "rise rises sunrise", "set sets sunset"),
        ("side", "left", "right"),
        ("ns", "north northern", "south southern"),
        ("ew", "east eastern", "west western"),
        ("vertical", "top", "bottom"),
        ("orientation", "horizontal horizontally landscape", "vertical vertically portrait"),
        ("inout", "inside indoors indoor", "outside outdoors outdoor"),
        ("zoom", "in", "out"),
        ("win", "win winning won", "lose losing lost"),
        ("safety", "safe", "dangerous harmful unsafe"),
        ("sex", "male men man boy boys father husband", "female women woman girl girls "
         "mother wife"),
        ("day", "day daytime", "night nighttime"),
        ("include", "include including", "exclude excluding"),
        ("show", "show showing", "hide hiding"),
        ("allow", "allow allowed", "block blocked forbid forbidden"),
        ("install", "install installing", "uninstall uninstalling"),
        ("subscribe", "subscribe", "unsubscribe"),
        ("follow", "follow", "unfollow"),
        ("mount", "mount", "unmount"),
    )
)  # fmt: skip
# Particles that only carry a direction in these verb phrases ("zoom in", "turn off").
_PARTICLE_VERBS = frozenset("zoom log sign check opt plug turn switch turned switched".split())
_PARTICLES = frozenset("in out on off".split())
_SYMMETRIC = frozenset("and or vs versus between compare compared comparison difference".split())
_FLOW_MARKERS = {
    "from": "flow", "to": "flow", "into": "flow", "onto": "flow", "towards": "flow",
    "than": "than", "in": "in",
}  # fmt: skip
_ROLE_SKIP = frozenset("a an the my your our their his her its this that some".split())
# Skipped left of "than": "Everest (is) taller than" pairs Everest, not taller.
_COMPARATIVES = _ROLE_SKIP | frozenset(
    "more less taller shorter bigger smaller larger higher lower faster slower older younger "
    "better worse heavier lighter cheaper longer greater".split()
)
_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19, "dozen": 12,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6,
    "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12,
    "thirteenth": 13, "fifteenth": 15, "twentieth": 20, "hundredth": 100,
}  # fmt: skip
_MONTHS = frozenset(
    "january february march april may june july august september october november "
    "december jan feb apr jun jul aug sep sept oct nov dec".split()
)
_AMBIGUOUS_MONTHS = frozenset("march may jan sep oct nov dec".split())  # only when Capitalised
_DAYS = frozenset(
    "monday tuesday wednesday thursday friday saturday sunday today tomorrow yesterday "
    "tonight weekend weekday weekdays weekends".split()
)
_TIME_UNITS = {
    w: unit
    for unit, words in (
        ("minute", "minute minutes"), ("hour", "hour hours hourly"),
        ("day", "day days daily"), ("week", "week weeks weekly"),
        ("month", "month months monthly"), ("year", "year years yearly annually annual"),
        ("decade", "decade decades"), ("century", "century centuries"),
    )
    for w in words.split()
}  # fmt: skip
_ROMAN = {"ii": 2, "iii": 3, "iv": 4, "vi": 6, "vii": 7, "viii": 8, "ix": 9, "xi": 11}
_LEADING_ANSWER = re.compile(r"^\s*(yes|no)\s*,\s*", re.IGNORECASE)
_TOKEN = re.compile(r"`[^`]+`|v?\d+(?:\.\d+)+|[A-Za-z0-9_]+(?:['’][A-Za-z]+)?(?:\(\))?|[$%]")
_NUMERIC = re.compile(r"^(\d+(?:\.\d+)*)([a-z]*)$")


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Word:
    raw: str  # as written (case kept; code spans without backticks)
    low: str
    start: bool  # first word of a sentence
    code: bool  # inside backticks, or an identifier


def _stem(word: str) -> str:
    """Crude plural/possessive folding: enough to match 'eggs' with 'egg'."""
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is", "ps")):
        return w[:-1]
    return w


def _tokenise(text: str) -> list[_Word]:
    text = _LEADING_ANSWER.sub("", text)
    text = re.sub(r"(\d),(\d{3})\b", r"\1\2", text)  # 1,000 -> 1000
    words: list[_Word] = []
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
            tok = "".join(p for p in re.split(r"[^A-Za-z0-9_.]+", tok) if p).strip(".")
        tok = tok.removesuffix("()")
        if tok:
            words.append(_Word(tok, tok.lower().replace("’", "'"), start, code))
            start = False
    return words


@dataclass(frozen=True)
class _Text:
    """Everything the guards need about one prompt, computed once per text."""

    words: tuple[_Word, ...]
    lows: tuple[str, ...]
    lowset: frozenset[str]
    stems: frozenset[str]
    prefixes: Mapping[str, tuple[str, ...]]  # first 4 letters -> words (len >= 4)
    content: tuple[str, ...]  # stemmed content words, in order
    negations: tuple[str, ...]
    numbers: frozenset[str]
    bare_one: bool  # the only "1" came from a bare "one" ("one sender" = "a sender")
    entities: tuple[str, ...]
    acronyms: Mapping[str, frozenset[str]]  # "us" -> {"united", "states"}
    scope: frozenset[str]
    units: frozenset[str]
    skeleton: tuple[str, ...]  # the non-content words, sorted
    poles: Mapping[str, tuple[bool, bool]]
    flows: frozenset[tuple[str, str, str]]  # (kind, source stem, target stem)


@lru_cache(maxsize=8192)
def _analyse(text: str) -> _Text:
    words = _tokenise(text)
    lows = tuple(w.low for w in words)
    # Identifiers also contribute their parts, so `push_to_hub` matches "push to hub".
    extra = [p for w in words if w.code for p in re.split(r"[_.]+", w.low) if p]
    lowset = frozenset(lows) | frozenset(extra)
    numbers, bare_one = _numbers(words)
    return _Text(
        words=tuple(words),
        lows=lows,
        lowset=lowset,
        stems=frozenset(_stem(w) for w in lowset),
        prefixes=_prefixes(frozenset(lows)),
        content=tuple(_stem(w) for w in lows if is_content_word(w)),
        negations=tuple(w for w in lows if w in _NEGATIONS or w.endswith("n't")),
        numbers=numbers,
        bare_one=bare_one,
        entities=_entities(words),
        acronyms=_acronyms(words),
        scope=_scope(lows),
        units=frozenset(_TIME_UNITS[w] for w in lows if w in _TIME_UNITS),
        skeleton=tuple(sorted(w for w in lows if not is_content_word(w))),
        poles=_poles(lows),
        flows=_flows(lows),
    )


def _prefixes(words: frozenset[str]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for w in words:
        if len(w) >= 4:
            out.setdefault(w[:4], []).append(w)
    return {k: tuple(v) for k, v in out.items()}


def is_content_word(word: str) -> bool:
    return (
        word not in _STOPWORDS
        and word not in _NEGATIONS
        and ((len(word) > 1 and any(c.isalpha() for c in word)) or word.isdigit())
    )


def _number_value(words: Sequence[_Word], i: int) -> tuple[str | None, int]:
    """The number starting at words[i] (canonical string) and how many words it used."""
    w = words[i]
    low = w.low
    if low.startswith("0x") and len(low) > 2:
        return low, 1
    m = _NUMERIC.match(low)
    if m:
        digits, suffix = m.groups()
        if suffix == "s" and len(digits) in (2, 4):
            return digits + "s", 1  # decades: 1990s
        if "." in digits:
            return digits, 1  # versions and decimals compare as written: 3.10 != 3.1
        return str(int(digits)), 1
    if low[:1] == "v" and _NUMERIC.match(low[1:]):
        return low[1:], 1  # versions: v2.10.0
    if low in _ORDINALS:
        return str(_ORDINALS[low]), 1
    if low in _ROMAN and w.raw.isupper():
        return str(_ROMAN[low]), 1
    if w.raw == "I" and i > 0 and words[i - 1].raw[:1].isupper() and not words[i - 1].start:
        nxt = words[i + 1].low if i + 1 < len(words) else ""
        if nxt in ("", "and", "or", "in", "was", "is"):
            return "1", 1  # World War I
    value, used = 0, 0
    while i + used < len(words):
        x = words[i + used].low
        if x in _UNITS:
            value += _UNITS[x]
        elif x in _TENS:
            value += _TENS[x]
        elif x in _SCALES and used:
            value *= _SCALES[x]
        else:
            break
        used += 1
    if used:
        return str(value), used
    return None, 1


def _numbers(words: Sequence[_Word]) -> tuple[frozenset[str], bool]:
    """Numbers and date words (months, weekdays, today/tomorrow, am/pm)."""
    found: set[str] = set()
    ones = 0
    i = 0
    while i < len(words):
        w = words[i]
        if w.low in _MONTHS and (w.low not in _AMBIGUOUS_MONTHS or w.raw[:1].isupper()):
            found.add(w.low[:3])
        elif w.low in _DAYS:
            found.add(w.low)
        elif w.low in ("am", "pm") and i and words[i - 1].low.isdigit():
            found.add(w.low)
        m = _NUMERIC.match(w.low)
        if m and m.group(2) in ("am", "pm"):
            found.add(m.group(2))
        value, used = _number_value(words, i)
        if value is not None:
            ones += w.low == "one" and used == 1
            found.add(value)
        i += used
    return frozenset(found), ones > 0 and "1" in found


def _is_entity(w: _Word) -> bool:
    raw = w.raw
    if w.code:
        return True
    if raw == "I" or w.low in _STOPWORDS or w.low in _MONTHS or w.low in _DAYS:
        return False
    if w.low in _ORDINALS or w.low in _UNITS or w.low in _TENS:
        return False
    if raw[:1].isdigit():
        return bool(re.search(r"[a-z]\d|\d[a-z]{1,2}\d", w.low))  # 3D is not, 2k22 is
    upper = sum(c.isupper() for c in raw)
    if upper >= 2 or (upper and not raw[:1].isupper()) or any(c.isdigit() for c in raw):
        return True  # NASA, iPhone, TypeScript, PS5
    return raw[:1].isupper() and not w.start


def _entities(words: Sequence[_Word]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for w in words:
        if _is_entity(w):
            seen[w.low.removesuffix("'s")] = None
    return tuple(seen)


def _acronyms(words: Sequence[_Word]) -> dict[str, frozenset[str]]:
    """Initials of runs of Capitalised words: {'us': {'united', 'states'}}."""
    out: dict[str, set[str]] = {}
    run: list[str] = []
    for w in (*words, None):
        if w is not None and w.raw[:1].isupper() and w.raw.isalpha():
            run.append(w.low)
            continue
        for i in range(len(run)):
            for j in range(i + 2, min(len(run), i + 5) + 1):
                out.setdefault("".join(x[0] for x in run[i:j]), set()).update(run[i:j])
        run = []
    return {k: frozenset(v) for k, v in out.items()}


def _scope(lows: Sequence[str]) -> frozenset[str]:
    found = set()
    for i, w in enumerate(lows):
        if w == "least" and i and lows[i - 1] == "at":
            found.add("existential")  # "at least one"
        elif w == "few" and i and lows[i - 1] == "a":
            found.add("existential")
        elif w == "one" and i + 1 < len(lows) and lows[i + 1] == "of":
            found.add("one")  # "one of my subscriptions" vs "all my subscriptions"
        elif w in _SCOPE:
            found.add(_SCOPE[w])
    return frozenset(found)


def _poles(lows: Sequence[str]) -> dict[str, tuple[bool, bool]]:
    # "zoom in", "turn off", "turn Bluetooth off": bare in/on/off are everyday
    # prepositions, so they count only right after (or two after) such a verb.
    particles = {
        lows[j]
        for i in range(len(lows) - 1)
        if lows[i] in _PARTICLE_VERBS
        for j in (i + 1, i + 2)
        if j < len(lows) and lows[j] in _PARTICLES
    }
    plain = set(lows) - _PARTICLES
    out = {}
    for name, pos, neg in _DIRECTION_GROUPS:
        pool = particles if name == "zoom" else plain | particles if name == "switch" else plain
        hit = (bool(pool & pos), bool(pool & neg))
        if any(hit):
            out[name] = hit
    return out


def _run(lows: Sequence[str], i: int, step: int, skip: frozenset[str]) -> list[str]:
    """The content words next to position i (left: step -1, right: step +1)."""

    def skipped(j: int) -> bool:
        # "more acidic than": the adjective after more/less is part of the comparison.
        after_more = skip is _COMPARATIVES and j > 0 and lows[j - 1] in ("more", "less")
        return lows[j] in skip or not is_content_word(lows[j]) or after_more

    j = i + step
    while 0 <= j < len(lows) and skipped(j):
        j += step
    out: list[str] = []
    while 0 <= j < len(lows) and is_content_word(lows[j]) and len(out) < 3:
        out.append(_stem(lows[j]))
        j += step
    return out


def _flows(lows: Sequence[str]) -> frozenset[tuple[str, str, str]]:
    """Directed pairs: 'X to Y', 'Y from X', 'from X to Y' give ('flow', X, Y);
    'X taller than Y' gives ('than', X, Y); '100 dollars in euros' gives ('in', ...)."""
    out: set[tuple[str, str, str]] = set()
    comparatives = _COMPARATIVES
    for i, w in enumerate(lows):
        kind = _FLOW_MARKERS.get(w)
        if kind is None:
            continue
        right = _run(lows, i, 1, _ROLE_SKIP)
        left = _run(lows, i, -1, comparatives if kind == "than" else _ROLE_SKIP)
        if w == "from":
            # "from X to Y" pairs X with Y; otherwise "Y from X" is X -> Y.
            k = next((k for k in range(i + 1, min(i + 8, len(lows))) if lows[k] == "to"), None)
            if k is not None:
                left = right
                right = _run(lows, k, 1, _ROLE_SKIP)
            else:
                left, right = right, left
        out.update((kind, x, y) for x in left for y in right if x != y)
    return frozenset(out)


# --------------------------------------------------------------------------- guards


def guard_negation(a: str, b: str) -> Check:
    """Different number of negations, or 'safe' vs 'unsafe'."""
    ta, tb = _analyse(a), _analyse(b)
    detail = []
    if len(ta.negations) != len(tb.negations):
        detail.append(f"{'/'.join(ta.negations) or '-'} vs {'/'.join(tb.negations) or '-'}")
    for x, y in ((ta, tb), (tb, ta)):
        for w in x.lowset - y.lowset:
            for pre in _NEG_PREFIXES:
                rest = w[len(pre) :]
                if w.startswith(pre) and len(rest) >= 4 and rest in y.lowset - x.lowset:
                    detail.append(f"{w} vs {rest}")
    # In a heavy rewrite negation moves around ("zero-copy" / "without a copy"); it
    # is decisive only when the two prompts otherwise share most of their words.
    level = 0
    if detail:
        level = 2 if _jaccard(ta, tb) >= 0.4 else 1
    return Check("negation", not detail, "; ".join(detail), level=level)


def _jaccard(ta: _Text, tb: _Text) -> float:
    ca, cb = set(ta.content), set(tb.content)
    return len(ca & cb) / len(ca | cb) if ca | cb else 1.0


def guard_numbers(a: str, b: str) -> Check:
    """Digits, number words, ordinals, months, weekdays must agree."""
    ta, tb = _analyse(a), _analyse(b)
    only_a, only_b = ta.numbers - tb.numbers, tb.numbers - ta.numbers
    # A lone "one" against no number at all is an article, not a quantity.
    if ta.bare_one and only_a == {"1"} and not tb.numbers:
        only_a = frozenset()
    if tb.bare_one and only_b == {"1"} and not ta.numbers:
        only_b = frozenset()
    # Time units: "every day" vs "every week"; only a clash counts, since "how long"
    # is often rephrased as "how many minutes".
    ua, ub = ta.units - tb.units, tb.units - ta.units
    if ua and ub:
        only_a, only_b = only_a | ua, only_b | ub
    level = 2 if only_a and only_b else 1 if only_a or only_b else 0
    detail = f"{sorted(only_a)} vs {sorted(only_b)}" if level else ""
    return Check("numbers", level == 0, detail, level=level)


def _present(entity: str, other: _Text) -> bool:
    if entity in other.lowset or _stem(entity) in other.stems:
        return True
    if "_" in entity or "." in entity:
        return False  # identifiers match exactly: `iter_files` is not `iter_archive`
    if len(entity) >= 4:  # postgres / postgresql, german / germany
        candidates = other.prefixes.get(entity[:4], ())
        return any(w.startswith(entity) or entity.startswith(w) for w in candidates)
    return False


def guard_entities(a: str, b: str) -> Check:
    """Names, acronyms and code identifiers of one prompt must appear in the other."""
    ta, tb = _analyse(a), _analyse(b)
    missing: list[list[str]] = []
    for x, y in ((ta, tb), (tb, ta)):
        # "United States" is present if the other side says "US", and vice versa.
        spelled = {w for acr, ws in x.acronyms.items() if acr in y.lowset for w in ws}
        gone = [
            e for e in x.entities if e not in spelled and e not in y.acronyms and not _present(e, y)
        ]
        missing.append(gone)
    only_a, only_b = missing
    level = 2 if only_a and only_b else 1 if only_a or only_b else 0
    detail = f"{only_a} vs {only_b}" if level else ""
    return Check("entities", level == 0, detail, level=level)


def guard_scope(a: str, b: str) -> Check:
    """Quantifiers (all/some/only/most/none...) must agree."""
    sa, sb = _analyse(a).scope, _analyse(b).scope
    if sa == sb:
        return Check("scope", True)
    # "only" narrows the question even when the other side has no quantifier at all.
    level = 2 if (sa and sb) or ("restrictive" in sa) != ("restrictive" in sb) else 1
    return Check("scope", False, f"{sorted(sa)} vs {sorted(sb)}", level=level)


def guard_direction(a: str, b: str) -> Check:
    """Opposite poles: more/less, before/after, upload/download, zoom in/out..."""
    pa, pb = _analyse(a).poles, _analyse(b).poles
    both = (True, True)
    flips = [n for n in pa.keys() & pb.keys() if pa[n] != pb[n] and both not in (pa[n], pb[n])]
    level = 2 if flips else 0
    return Check("direction", not flips, ",".join(sorted(flips)), level=level)


def guard_order(a: str, b: str) -> Check:
    """Swapped roles: 'from A to B' vs 'from B to A', 'X than Y' vs 'Y than X'."""
    ta, tb = _analyse(a), _analyse(b)
    swapped = sorted(f"{x}<->{y}" for kind, x, y in ta.flows if (kind, y, x) in tb.flows)
    if swapped:
        return Check("order", False, ", ".join(swapped), level=2)
    # Same content words in another order ("cats chase mice" / "mice chase cats"):
    # one-sided evidence, because free reordering also happens in paraphrases.
    ca, cb = ta.content, tb.content
    symmetric = _SYMMETRIC & (ta.lowset | tb.lowset)
    if len(ca) >= 2 and ca != cb and sorted(ca) == sorted(cb) and not symmetric:
        # With the same function words too, nothing but the roles moved (no passive
        # voice, no "use X to"): "Is a square a rectangle" / "Is a rectangle a square".
        level = 2 if ta.skeleton == tb.skeleton else 1
        return Check("order", False, "same words, other order", level=level)
    return Check("order", True)


GUARDS = (guard_negation, guard_numbers, guard_entities, guard_scope, guard_direction,
          guard_order)  # fmt: skip


def run_guards(a: str, b: str) -> list[Check]:
    """All guards. A comparative flipped together with its operands cancels out
    ('Is A taller than B' == 'Is B shorter than A')."""
    checks = [g(a, b) for g in GUARDS]
    by = {c.name: c for c in checks}
    if by["direction"].level == 2 and by["order"].level >= 1:
        if "than" in _analyse(a).lowset | _analyse(b).lowset:
            checks = [
                Check(c.name, True, "double flip: " + c.detail)
                if c.name in ("direction", "order")
                else c
                for c in checks
            ]
    return checks


# --------------------------------------------------------------------------- alignment


@dataclass(frozen=True)
class Alignment:
    """Best match (max cosine) of each content word of one prompt in the other."""

    a: tuple[tuple[str, float], ...]  # (stemmed word, score) for the content words of a
    b: tuple[tuple[str, float], ...]
    all_words: float = 1.0  # mean best match over all words (function words too), both ways

    def scores(self) -> list[float]:
        return [s for _, s in self.a] + [s for _, s in self.b]


def word_vectors(tokens: Sequence[str], vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Merge WordPiece continuations ('route', '##r') into one averaged word vector."""
    words: list[str] = []
    starts: list[int] = []
    for i, tok in enumerate(tokens):
        if tok.startswith("##") and starts:
            words[-1] += tok[2:]
        else:
            words.append(tok)
            starts.append(i)
    mat = np.asarray(vectors, dtype=np.float32)
    if len(starts) < len(tokens):
        # Summing the pieces of a word and renormalising gives the direction of their mean.
        mat = np.add.reduceat(mat, np.asarray(starts), axis=0)
        mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-9)
    return words, mat


def align(a: TokenVectors, b: TokenVectors) -> Alignment:
    """BERTScore-like alignment over content words, both directions."""
    wa, ma = word_vectors(*a)
    wb, mb = word_vectors(*b)
    if not wa or not wb:
        return Alignment((), ())
    sim = ma @ mb.T
    best_a, best_b = sim.max(axis=1), sim.max(axis=0)
    return Alignment(
        tuple((_stem(w), float(s)) for w, s in zip(wa, best_a, strict=True) if is_content_word(w)),
        tuple((_stem(w), float(s)) for w, s in zip(wb, best_b, strict=True) if is_content_word(w)),
        float((best_a.mean() + best_b.mean()) / 2),
    )


def _alignment_features(a: str, b: str, al: Alignment, bound: float) -> dict[str, float]:
    scores = al.scores()
    if not scores:
        return {"align_min": 1.0, "align_mean": 1.0, "align_low": 0.0, "align_low_frac": 0.0,
                "novel_min": 1.0, "one_for_one": 0.0, "swap_score": 1.0, "align_low2": 1.0,
                "novel_mean": 1.0, "novel_frac": 0.0, "align_all": al.all_words}  # fmt: skip
    low = sum(s < bound for s in scores)
    # Words that one prompt has and the other lacks: how close is their best stand-in?
    ca, cb = set(_analyse(a).content), set(_analyse(b).content)
    novel_a = [s for w, s in al.a if w not in cb]
    novel_b = [s for w, s in al.b if w not in ca]
    novel = novel_a + novel_b
    # A minimal pair (one content word swapped for one other): "reset my router" vs
    # "reset my printer". The swapped pair's score separates synonyms from siblings.
    one_for_one = len(ca - cb) == 1 and len(cb - ca) == 1 and novel_a and novel_b
    return {
        "align_min": min(scores),
        "align_mean": sum(scores) / len(scores),
        "align_low": min(low, 4) / 4,
        "align_low_frac": low / len(scores),
        "novel_min": min(novel) if novel else 1.0,
        "one_for_one": float(bool(one_for_one)),
        "swap_score": (min(novel_a) + min(novel_b)) / 2 if one_for_one else 1.0,
        # Heavy rewrites: many novel words that all have a close stand-in are a paraphrase;
        # one novel word without any is a different question.
        "align_low2": sum(sorted(scores)[:2]) / min(2, len(scores)),
        "novel_mean": sum(novel) / len(novel) if novel else 1.0,
        "novel_frac": len(novel) / len(scores),
        "align_all": al.all_words,
    }


# --------------------------------------------------------------------------- features


def features(
    a: str,
    b: str,
    similarity: float,
    a_tokens: TokenVectors | None = None,
    b_tokens: TokenVectors | None = None,
    align_bound: float = 0.5,
    checks: Sequence[Check] | None = None,
) -> dict[str, float]:
    """The verifier's inputs. Shared by serving and training so both see the same."""
    if checks is None:
        checks = run_guards(a, b)
    ta, tb = _analyse(a), _analyse(b)
    ca, cb = set(ta.content), set(tb.content)
    union = ca | cb
    feats: dict[str, float] = {
        "cosine": float(similarity),
        "jaccard": _jaccard(ta, tb),
        "length_ratio": (min(len(ca), len(cb)) / max(len(ca), len(cb))) if union else 1.0,
        "content_len": math.log1p(len(ca) + len(cb)),
    }
    for c in checks:
        feats[f"g_{c.name}_soft"] = float(c.level == 1)
        feats[f"g_{c.name}_hard"] = float(c.level == 2)
    if a_tokens is not None and b_tokens is not None:
        feats.update(_alignment_features(a, b, align(a_tokens, b_tokens), align_bound))
    return feats


# --------------------------------------------------------------------------- verifier


@dataclass(frozen=True)
class _Model:
    """Logistic regression over standardised features, or, when `hidden` is given, a
    one-hidden-layer perceptron (tanh units, then the logistic output)."""

    names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float
    hidden: tuple[np.ndarray, np.ndarray] | None = None  # (weights (h, n), biases (h,))

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> _Model:
        try:
            names = tuple(raw["features"])
            mean, scale, coef = (
                np.asarray(raw[k], dtype=np.float64) for k in ("mean", "scale", "coef")
            )
            hidden = None
            if raw.get("hidden") is not None:
                w = np.asarray(raw["hidden"]["w"], dtype=np.float64)
                b = np.asarray(raw["hidden"]["b"], dtype=np.float64)
                hidden = (w, b)
            model = cls(names, mean, scale, coef, float(raw["intercept"]),
                        float(raw["threshold"]), hidden)  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise VerifierError(f"bad model entry: {exc}") from exc
        if not len(mean) == len(scale) == len(names):
            raise VerifierError("feature, mean and scale lengths differ")
        if hidden is None and len(coef) != len(names):
            raise VerifierError("feature and coef lengths differ")
        if hidden is not None and not (
            hidden[0].shape == (len(coef), len(names)) and hidden[1].shape == (len(coef),)
        ):
            raise VerifierError("hidden layer shapes do not match features and coef")
        return model

    def with_threshold(self, threshold: float) -> _Model:
        return _Model(self.names, self.mean, self.scale, self.coef, self.intercept, threshold,
                      self.hidden)  # fmt: skip

    def score(self, feats: Mapping[str, float]) -> float:
        x = np.array([feats.get(n, 0.0) for n in self.names], dtype=np.float64) - self.mean
        x /= self.scale
        if self.hidden is not None:
            x = np.tanh(self.hidden[0] @ x + self.hidden[1])
        z = float(x @ self.coef) + self.intercept
        return 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))


class Verifier:
    """Decides whether a cached prompt asks the same question as the query.

    `lower_bound`: candidates with cosine below it are rejected without further
    work (the first stage should not send them). `hard_guards` names the guards
    whose conflicts (level 2) veto on their own, whatever the model says. `margin`
    (default from the weights file): see `choose`.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        lower_bound: float | None = None,
        threshold: float | None = None,
        use_model: bool = True,
        hard_guards: Sequence[str] | None = None,
        margin: float | None = None,
    ) -> None:
        path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise VerifierError(f"cannot read verifier weights {path}: {exc}") from exc
        try:
            self.lower_bound = float(raw["lower_bound"] if lower_bound is None else lower_bound)
            self.align_bound = float(raw["align_bound"])
            models = raw["models"]
            self._models = {k: _Model.from_json(v) for k, v in models.items()}
            guards = raw["hard_guards"] if hard_guards is None else hard_guards
            self.hard_guards = frozenset(str(g) for g in guards)
            choice = raw.get("choose", {})
            self.margin = float(choice.get("margin", 0.0) if margin is None else margin)
            self.rank_score = float(choice.get("rank_score", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise VerifierError(f"bad verifier weights {path}: {exc}") from exc
        if not 0.0 <= self.lower_bound <= 1.0:
            raise VerifierError(f"lower_bound {self.lower_bound} outside 0..1")
        if not {"tokens", "text"} <= self._models.keys():
            raise VerifierError("weights need a 'tokens' and a 'text' model")
        if threshold is not None:
            if not 0.0 <= threshold <= 1.0:
                raise VerifierError(f"threshold {threshold} outside 0..1")
            self._models = {k: m.with_threshold(threshold) for k, m in self._models.items()}
        self.use_model = use_model

    def choose(
        self,
        query: str,
        query_tokens: LazyTokens,
        candidates: Iterable[Option],
        *,
        threshold: float | None = None,
    ) -> tuple[Option, Verdict] | None:
        """The candidate to serve among the index's nearest entries, or None.

        Every candidate with similarity >= `threshold` (and >= the lower bound) is
        verified; among those accepted the highest rank wins, rank = similarity +
        `rank_score` * verifier score (weights file, "choose"; 0 = cosine order, which
        measured best: the verifier score is no better than cosine at telling the
        query's own entry from another entry stating the same thing). When the
        runner-up is accepted too and ranks within `margin` of the winner, the query is
        ambiguous between two entries and nothing is served (margin 0: never).
        Candidates may come in any order; tokens (lazy or not) are fetched only for
        candidates above the threshold.
        """
        bound = max(self.lower_bound, float(threshold) if threshold is not None else 0.0)
        accepted: list[tuple[float, float, int, Option, Verdict]] = []
        q_tokens: TokenVectors | None = None
        fetched = False
        for i, option in enumerate(candidates):
            if option.similarity < bound:
                continue
            if not fetched:
                q_tokens, fetched = _resolve(query_tokens), True
            verdict = self.verify(
                query, option.text, option.similarity, q_tokens, _resolve(option.tokens)
            )
            if verdict.accept:
                rank = verdict.similarity + self.rank_score * verdict.score
                accepted.append((rank, verdict.similarity, -i, option, verdict))
        if not accepted:
            return None
        accepted.sort(key=lambda x: (x[0], x[1], x[2]), reverse=True)
        if len(accepted) > 1 and accepted[0][0] - accepted[1][0] < self.margin:
            # Two accepted entries about as close: serving either is a coin toss.
            return None
        return accepted[0][3], accepted[0][4]

    def doubtful(self, verdict: Verdict, low: float) -> bool:
        """Refused by the model's score alone, with a score in [low, the model's threshold):
        the band where a second opinion (the LLM's yes/no) may accept. A hard guard's veto
        or a failed first stage is never doubtful."""
        if verdict.accept or self._vetoed(verdict.checks):
            return False
        return any(c.name == "verifier" for c in verdict.checks) and low <= verdict.score

    def _vetoed(self, checks: Sequence[Check]) -> bool:
        """A hard guard found a conflict: refused whatever the model says."""
        return any(c.level == 2 and c.name in self.hard_guards for c in checks)

    def threshold(self, with_tokens: bool = True) -> float:
        return self._models["tokens" if with_tokens else "text"].threshold

    def verify(
        self,
        query: str,
        candidate: str,
        similarity: float,
        query_tokens: TokenVectors | None = None,
        candidate_tokens: TokenVectors | None = None,
    ) -> Verdict:
        similarity = float(similarity)
        first = Check("cosine", similarity >= self.lower_bound,
                      f">= {self.lower_bound}", score=similarity)  # fmt: skip
        if not first.passed:
            return Verdict(False, similarity, 0.0, (first,))
        if _normalised(query) == _normalised(candidate):
            return Verdict(True, similarity, 1.0, (first, Check("identical", True)))
        checks = run_guards(query, candidate)
        vetoed = self._vetoed(checks)
        with_tokens = query_tokens is not None and candidate_tokens is not None
        feats = features(query, candidate, similarity, query_tokens, candidate_tokens,
                         self.align_bound, checks)  # fmt: skip
        all_checks = [first, *checks]
        if with_tokens:
            low = feats["align_low"] > 0
            all_checks.append(Check("alignment", not low, f"min {feats['align_min']:.2f}",
                                    score=feats["align_min"]))  # fmt: skip
        model = self._models["tokens" if with_tokens else "text"]
        score = model.score(feats)
        if self.use_model:
            all_checks.append(Check("verifier", score >= model.threshold,
                                    f">= {model.threshold:.3f}", score=score))  # fmt: skip
            accept = not vetoed and score >= model.threshold
        else:
            accept = not vetoed
        return Verdict(accept, similarity, score, tuple(all_checks))


def _normalised(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


# --------------------------------------------------------------------------- LLM band

SAME_QUESTION = (
    "Do these two questions ask for the same thing, so that one answer serves both? "
    "Reply with yes or no only.\n\nQuestion 1: {a}\nQuestion 2: {b}"
)


def same_question(a: str, b: str) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The messages and options of the uncertain band's yes/no question to the LLM."""
    content = SAME_QUESTION.format(a=a, b=b)
    return [{"role": "user", "content": content}], {"temperature": 0, "num_predict": 3}


def said_yes(reply: str) -> bool:
    return reply.strip().lower().startswith("yes")
