"""What the guards know about one prompt (`Text`), computed once per text (`analyse`):
its words, content words, negations, numbers, named entities, quantifiers, direction
words and directed pairs (from A to B, X than Y)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from cache.verify.lexicon import (
    ANYWHERE_FILLERS,
    COMPARATIVES,
    DAYS,
    DIRECTION_GROUPS,
    FILLERS,
    FLOW_MARKERS,
    MONTHS,
    NEGATIONS,
    ORDINALS,
    PARTICLE_VERBS,
    PARTICLES,
    ROLE_SKIP,
    SCOPE,
    STOPWORDS,
    TENS,
    TIME_UNITS,
    UNITS,
)
from cache.verify.numbers import counted, find_numbers, find_quantities
from cache.verify.words import Word, is_content_word, stem, tokenise


@dataclass(frozen=True)
class Text:
    """Everything the guards need about one prompt, computed once per text."""

    words: tuple[Word, ...]
    lows: tuple[str, ...]
    lowset: frozenset[str]
    stems: frozenset[str]
    prefixes: Mapping[str, tuple[str, ...]]  # first 4 letters -> words (len >= 4)
    content: tuple[str, ...]  # stemmed content words, in order
    negations: tuple[str, ...]
    numbers: frozenset[str]
    quantities: tuple[str, ...]  # every number with its unit, a sorted multiset
    counted: Mapping[str, tuple[str, ...]]  # what each number counts (numbers.counted)
    bare_one: bool  # the only "1" came from a bare "one" ("one sender" = "a sender")
    entities: tuple[str, ...]
    acronyms: Mapping[str, frozenset[str]]  # "us" -> {"united", "states"}
    scope: frozenset[str]
    units: frozenset[str]
    skeleton: tuple[str, ...]  # the non-content words, sorted
    poles: Mapping[str, tuple[bool, bool]]
    flows: frozenset[tuple[str, str, str]]  # (kind, source stem, target stem)


# "un-safe", "un-install": a negation; a lone "un" is not (the UN).
_HYPHENATED_UN = re.compile(r"(?<![\w-])un-(?=[^\W\d_])")


@lru_cache(maxsize=8192)
def analyse(text: str) -> Text:
    words = tokenise(text)
    lows = tuple(w.low for w in words)
    # Identifiers also contribute their parts, so `push_to_hub` matches "push to hub".
    extra = [p for w in words if w.code for p in re.split(r"[_.]+", w.low) if p]
    lowset = frozenset(lows) | frozenset(extra)
    numbers, bare_one = find_numbers(words)
    return Text(
        words=tuple(words),
        lows=lows,
        lowset=lowset,
        stems=frozenset(stem(w) for w in lowset),
        prefixes=_prefixes(frozenset(lows)),
        content=tuple(stem(w) for w in lows if is_content_word(w)),
        negations=tuple(w for w in lows if w in NEGATIONS or w.endswith("n't"))
        + tuple("un-" for _ in _HYPHENATED_UN.finditer(text.casefold())),
        numbers=numbers,
        quantities=find_quantities(words),
        counted=counted(words),
        bare_one=bare_one,
        entities=_entities(words),
        acronyms=_acronyms(words),
        scope=_scope(lows),
        units=frozenset(TIME_UNITS[w] for w in lows if w in TIME_UNITS),
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


def _is_entity(w: Word) -> bool:
    raw = w.raw
    if w.code:
        return True
    if raw == "I" or w.low in STOPWORDS or w.low in MONTHS or w.low in DAYS:
        return False
    if w.low in ORDINALS or w.low in UNITS or w.low in TENS:
        return False
    if raw[:1].isdigit():
        return bool(re.search(r"[a-z]\d|\d[a-z]{1,2}\d", w.low))  # 3D is not, 2k22 is
    upper = sum(c.isupper() for c in raw)
    if upper >= 2 or (upper and not raw[:1].isupper()) or any(c.isdigit() for c in raw):
        return True  # NASA, iPhone, TypeScript, PS5
    return raw[:1].isupper() and not w.start


def _entities(words: Sequence[Word]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for w in words:
        if _is_entity(w):
            seen[w.low.removesuffix("'s")] = None
    return tuple(seen)


def _acronyms(words: Sequence[Word]) -> dict[str, frozenset[str]]:
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
        elif w in SCOPE:
            found.add(SCOPE[w])
    return frozenset(found)


def _poles(lows: Sequence[str]) -> dict[str, tuple[bool, bool]]:
    # "zoom in", "turn off", "turn Bluetooth off": bare in/on/off are everyday
    # prepositions, so they count only right after (or two after) such a verb.
    particles = {
        lows[j]
        for i in range(len(lows) - 1)
        if lows[i] in PARTICLE_VERBS
        for j in (i + 1, i + 2)
        if j < len(lows) and lows[j] in PARTICLES
    }
    plain = set(lows) - PARTICLES
    out = {}
    for name, pos, neg in DIRECTION_GROUPS:
        pool = particles if name == "zoom" else plain | particles if name == "switch" else plain
        hit = (bool(pool & pos), bool(pool & neg))
        if any(hit):
            out[name] = hit
    return out


def _run(lows: Sequence[str], i: int, step: int, skip: frozenset[str]) -> list[str]:
    """The content words next to position i (left: step -1, right: step +1)."""

    def skipped(j: int) -> bool:
        # "more acidic than": the adjective after more/less is part of the comparison.
        after_more = skip is COMPARATIVES and j > 0 and lows[j - 1] in ("more", "less")
        return lows[j] in skip or not is_content_word(lows[j]) or after_more

    j = i + step
    while 0 <= j < len(lows) and skipped(j):
        j += step
    out: list[str] = []
    while 0 <= j < len(lows) and is_content_word(lows[j]) and len(out) < 3:
        out.append(stem(lows[j]))
        j += step
    return out


def _flows(lows: Sequence[str]) -> frozenset[tuple[str, str, str]]:
    """Directed pairs: 'X to Y', 'Y from X', 'from X to Y' give ('flow', X, Y);
    'X taller than Y' gives ('than', X, Y); '100 dollars in euros' gives ('in', ...)."""
    out: set[tuple[str, str, str]] = set()
    comparatives = COMPARATIVES
    for i, w in enumerate(lows):
        kind = FLOW_MARKERS.get(w)
        if kind is None:
            continue
        right = _run(lows, i, 1, ROLE_SKIP)
        left = _run(lows, i, -1, comparatives if kind == "than" else ROLE_SKIP)
        if w == "from":
            # "from X to Y" pairs X with Y; otherwise "Y from X" is X -> Y.
            k = next((k for k in range(i + 1, min(i + 8, len(lows))) if lows[k] == "to"), None)
            if k is not None:
                left = right
                right = _run(lows, k, 1, ROLE_SKIP)
            else:
                left, right = right, left
        out.update((kind, x, y) for x in left for y in right if x != y)
    return frozenset(out)


def jaccard(ta: Text, tb: Text) -> float:
    ca, cb = set(ta.content), set(tb.content)
    return len(ca & cb) / len(ca | cb) if ca | cb else 1.0


_FILLER_PATTERN = "|".join(re.escape(f) for f in FILLERS)
_LEADING = re.compile(rf"^(?:(?:{_FILLER_PATTERN})\b[\s,.!:;—-]*)+", re.IGNORECASE)
_TRAILING = re.compile(rf"(?:[\s,.!:;—-]*\b(?:{_FILLER_PATTERN}))+[\s.!?:)(;]*$", re.IGNORECASE)
_ANYWHERE = re.compile(rf"\b(?:{'|'.join(sorted(ANYWHERE_FILLERS))})\b[\s,]*", re.IGNORECASE)
# Emoji and pictographs, which carry tone, not the question.
_EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\ufe0f]")
# Punctuation that does not change a question; symbols (+ - * / < > = % $ € ...) stay.
# Brackets stay ("2 * (3 + 4)"), "!" stays in "!=" and after a digit or ")" (factorial),
# an apostrophe before "(" stays (f'(x)).
_SOFT_PUNCT = re.compile(r"(?:[\s.,;:?¿¡…\"“”‘’—–]|(?<![\d)])!(?!=)|'(?!\())+")


@lru_cache(maxsize=8192)
def without_fillers(text: str) -> str:
    """The text with its greetings, fillers and sign-offs removed (case and punctuation
    kept), for the guards: "If you don't mind me asking, ..." holds no negation of the
    question. The text itself when nothing else would be left."""
    t = _ANYWHERE.sub("", text)
    for _ in range(3):
        t = _LEADING.sub("", t.strip())
        t = _TRAILING.sub("", t.strip())
    return t.strip() or text


@lru_cache(maxsize=8192)
def comparable(text: str) -> str:
    """The text two prompts are compared by: Unicode-normalised (NFKC, casefold), greetings,
    fillers, sign-offs and emoji removed, punctuation and spacing collapsed; symbols and
    operators kept ("Is 5 > 3" != "Is 5 < 3"), and every script kept."""
    t = unicodedata.normalize("NFKC", text).casefold()
    t = _EMOJI.sub(" ", t)
    t = _ANYWHERE.sub(" ", t)
    for _ in range(3):  # "Hi! Quick question: ..." peels one filler at a time
        t = _LEADING.sub("", t.strip())
        t = _TRAILING.sub("", t.strip())
    return _SOFT_PUNCT.sub(" ", t).strip()
