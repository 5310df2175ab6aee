"""Numbers and dates in a prompt: digits, number words, ordinals, Roman numerals, months,
weekdays, am/pm, each as one canonical string ("two" and "2" are both "2")."""

from __future__ import annotations

import re
from collections.abc import Sequence

from cache.verify.lexicon import (
    AMBIGUOUS_MONTHS,
    DAYS,
    MEASURES,
    MONTHS,
    ORDINALS,
    ROMAN,
    SCALES,
    TENS,
    UNITS,
)
from cache.verify.words import Word, stem

_NUMERIC = re.compile(r"^(\d+(?:\.\d+)*)([a-z]*)$")


def _number_value(words: Sequence[Word], i: int) -> tuple[str | None, int]:
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
    if low in ORDINALS:
        return str(ORDINALS[low]), 1
    if low in ROMAN and w.raw.isupper():
        return str(ROMAN[low]), 1
    if w.raw == "I" and i > 0 and words[i - 1].raw[:1].isupper() and not words[i - 1].start:
        nxt = words[i + 1].low if i + 1 < len(words) else ""
        if nxt in ("", "and", "or", "in", "was", "is"):
            return "1", 1  # World War I
    value, used = 0, 0
    while i + used < len(words):
        x = words[i + used].low
        if x in UNITS:
            value += UNITS[x]
        elif x in TENS:
            value += TENS[x]
        elif x in SCALES and used:
            value *= SCALES[x]
        else:
            break
        used += 1
    if used:
        return str(value), used
    return None, 1


def find_numbers(words: Sequence[Word]) -> tuple[frozenset[str], bool]:
    """Numbers and date words (months, weekdays, today/tomorrow, am/pm)."""
    found: set[str] = set()
    ones = 0
    i = 0
    while i < len(words):
        w = words[i]
        if w.low in MONTHS and (w.low not in AMBIGUOUS_MONTHS or w.raw[:1].isupper()):
            found.add(w.low[:3])
        elif w.low in DAYS:
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


_FUSED = re.compile(r"^(\d+(?:\.\d+)?)([a-zµ°/]+)$")


def find_quantities(words: Sequence[Word]) -> tuple[str, ...]:
    """Every number with its unit, as a sorted multiset: "5 mg and 5 g" -> ("5 g", "5 mg");
    "$5" -> ("5 $",); a number without a unit stands alone ("3")."""
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        fused = _FUSED.match(w.low)
        if fused and fused.group(2) in MEASURES:
            out.append(f"{_canonical(fused.group(1))} {MEASURES[fused.group(2)]}")
            i += 1
            continue
        value, used = _number_value(words, i) if w.low not in ORDINALS else (None, 1)
        if value is None or (w.low == "one" and used == 1):
            i += used
            continue
        before = words[i - 1].low if i else ""
        after = words[i + used].low if i + used < len(words) else ""
        unit = MEASURES.get(after) or (MEASURES[before] if before in _PREFIX_MEASURES else "")
        out.append(f"{value} {unit}".strip())
        i += used
    return tuple(sorted(out))


def counted(words: Sequence[Word]) -> dict[str, tuple[str, ...]]:
    """What each number counts: the word right after it -> its numbers, sorted. "2 eggs and
    3 cups" -> {"egg": ("2",), "cup": ("3",)}; swapped numbers are another recipe."""
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(words):
        value, used = _number_value(words, i) if words[i].low not in ORDINALS else (None, 1)
        if value is not None and i + used < len(words) and words[i + used].low.isalpha():
            out.setdefault(stem(words[i + used].low), []).append(value)
        i += used
    return {noun: tuple(sorted(values)) for noun, values in out.items()}


_PREFIX_MEASURES = frozenset("$ € £ ¥ ₹".split())


def _canonical(digits: str) -> str:
    return digits if "." in digits else str(int(digits))
