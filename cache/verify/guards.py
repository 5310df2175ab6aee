"""Cheap guards on the raw texts of two prompts, one function each: does a difference in
negation, numbers, named entities, quantifiers, direction or order make them two
questions? Each gives a `Check` with a level: 0 no difference, 1 one-sided evidence,
2 a conflict (a hard guard's conflict vetoes a hit on its own: see Verifier)."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from cache.verify.lexicon import NEG_PREFIXES, NEGATIONS, OPPOSITES, SYMMETRIC, synonyms
from cache.verify.results import Check
from cache.verify.text import Text, analyse, jaccard
from cache.verify.words import is_content_word, stem


def guard_negation(a: str, b: str) -> Check:
    """Different number of negations, or 'safe' vs 'unsafe'."""
    ta, tb = analyse(a), analyse(b)
    detail = []
    if len(ta.negations) != len(tb.negations):
        detail.append(f"{'/'.join(ta.negations) or '-'} vs {'/'.join(tb.negations) or '-'}")
    for x, y in ((ta, tb), (tb, ta)):
        for w in x.lowset - y.lowset:
            for pre in NEG_PREFIXES:
                rest = w[len(pre) :]
                if w.startswith(pre) and len(rest) >= 4 and rest in y.lowset - x.lowset:
                    if pre == "a" and len(rest) < 6:
                        continue  # atypical/typical, not arise/rise or aboard/board
                    detail.append(f"{w} vs {rest}")
    # In a heavy rewrite negation moves around ("zero-copy" / "without a copy"); it
    # is decisive only when the two prompts otherwise share most of their words.
    level = 0
    if detail:
        level = 2 if jaccard(ta, tb) >= 0.4 else 1
    return Check("negation", not detail, "; ".join(detail), level=level)


def guard_numbers(a: str, b: str) -> Check:
    """Digits, number words, ordinals, months, weekdays must agree."""
    ta, tb = analyse(a), analyse(b)
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
    if level < 2:
        clash = _quantity_clash(ta.quantities, tb.quantities) or _counted_clash(ta, tb)
        if clash:
            level, detail = 2, clash
    return Check("numbers", level == 0, detail, level=level)


def _quantity_clash(qa: tuple[str, ...], qb: tuple[str, ...]) -> str:
    """Numbers as a multiset with their units: "5 mg" vs "5 g", "3 and 3" vs "3 and 4"
    (the second 3 changed while the first stayed), "$5" vs "5 €". A unit that one side
    leaves out ("in 2 hours" / "in two") is no clash."""
    if qa == qb or not qa or not qb:
        return ""
    values_a = Counter(q.split(" ")[0] for q in qa)
    values_b = Counter(q.split(" ")[0] for q in qb)
    if values_a != values_b:
        return f"{list(qa)} vs {list(qb)}"
    units_a = {q for q in qa if " " in q}
    units_b = {q for q in qb if " " in q}
    for q in units_a ^ units_b:
        value = q.split(" ")[0]
        mine, theirs = (units_a, units_b) if q in units_a else (units_b, units_a)
        if any(o.split(" ")[0] == value for o in theirs - mine):
            return f"{list(qa)} vs {list(qb)}"
    return ""


def _counted_clash(ta: Text, tb: Text) -> str:
    """The same thing counted differently on the two sides: "2 eggs and 3 cups" vs "3 eggs
    and 2 cups" (the same numbers, swapped)."""
    for noun in ta.counted.keys() & tb.counted.keys():
        if ta.counted[noun] != tb.counted[noun]:
            return f"{noun}: {'/'.join(ta.counted[noun])} vs {'/'.join(tb.counted[noun])}"
    return ""


def _present(entity: str, other: Text) -> bool:
    if entity in other.lowset or stem(entity) in other.stems:
        return True
    if "_" in entity or "." in entity:
        return False  # identifiers match exactly: `iter_files` is not `iter_archive`
    if len(entity) >= 4:  # postgres / postgresql, german / germany
        candidates = other.prefixes.get(entity[:4], ())
        return any(w.startswith(entity) or entity.startswith(w) for w in candidates)
    return False


def guard_entities(a: str, b: str) -> Check:
    """Names, acronyms and code identifiers of one prompt must appear in the other."""
    ta, tb = analyse(a), analyse(b)
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
    sa, sb = analyse(a).scope, analyse(b).scope
    if sa == sb:
        return Check("scope", True)
    # "only" narrows the question even when the other side has no quantifier at all.
    level = 2 if (sa and sb) or ("restrictive" in sa) != ("restrictive" in sb) else 1
    return Check("scope", False, f"{sorted(sa)} vs {sorted(sb)}", level=level)


def guard_direction(a: str, b: str) -> Check:
    """Opposite poles: more/less, before/after, upload/download, zoom in/out..."""
    pa, pb = analyse(a).poles, analyse(b).poles
    both = (True, True)
    flips = [n for n in pa.keys() & pb.keys() if pa[n] != pb[n] and both not in (pa[n], pb[n])]
    level = 2 if flips else 0
    return Check("direction", not flips, ",".join(sorted(flips)), level=level)


def guard_order(a: str, b: str) -> Check:
    """Swapped roles: 'from A to B' vs 'from B to A', 'X than Y' vs 'Y than X'."""
    ta, tb = analyse(a), analyse(b)
    swapped = sorted(f"{x}<->{y}" for kind, x, y in ta.flows if (kind, y, x) in tb.flows)
    if swapped:
        return Check("order", False, ", ".join(swapped), level=2)
    # Same content words in another order ("cats chase mice" / "mice chase cats"):
    # one-sided evidence, because free reordering also happens in paraphrases.
    ca, cb = ta.content, tb.content
    symmetric = SYMMETRIC & (ta.lowset | tb.lowset)
    if len(ca) >= 2 and ca != cb and sorted(ca) == sorted(cb) and not symmetric:
        if _fronted(ta, tb, b) or _fronted(tb, ta, a):
            return Check("order", True, "a phrase moved to the front")
        # With the same function words too, nothing but the roles moved (no passive
        # voice, no "use X to"): "Is a square a rectangle" / "Is a rectangle a square".
        level = 2 if ta.skeleton == tb.skeleton else 1
        return Check("order", False, "same words, other order", level=level)
    return Check("order", True)


def _base(word: str) -> str:
    return word.removesuffix("'s").removesuffix("'")


def guard_opposite(a: str, b: str) -> Check:
    """A word of one prompt against its opposite in the other, in any word form (WordNet's
    antonyms and data/opposites_extra.txt): permit/forbidden, mandatory/voluntary,
    boys'/girls', accepted/declined. Decisive when the rest of the two prompts is mostly
    the same (a minimal pair); in a heavy rewrite one-sided evidence, since paraphrases
    reword freely ("forgot my password" / "can't remember my password")."""
    ta, tb = analyse(a), analyse(b)
    wa = {_base(w) for w in ta.lowset}
    wb = {_base(w) for w in tb.lowset}
    found = []
    for w in sorted(wa - wb):
        for o in OPPOSITES.get(w, frozenset()) & (wb - wa):
            found.append((w, o))
    if not found:
        return Check("opposite", True)
    flipped = {stem(x) for pair in found for x in pair}
    ca, cb = set(ta.content) - flipped, set(tb.content) - flipped
    rest = len(ca & cb) / len(ca | cb) if ca | cb else 1.0
    level = 2 if rest >= 0.5 else 1
    detail = ", ".join(f"{x}/{y}" for x, y in found[:3])
    return Check("opposite", False, detail, level=level)


# Characters that change what is asked: operators, comparisons, currencies, units.
_SYMBOLS = frozenset("<>=+-*/%^&|~≤≥≠≈±×÷√∑∏∞°‰€$£¥₹#@")


def _symbols(text: str) -> Counter[str]:
    """Symbols of a prompt, except a hyphen, slash or ampersand joining two letters
    (e-mail, and/or, R&D) and a hyphen or dot inside a number's digits."""
    t = unicodedata.normalize("NFKC", text)
    out: Counter[str] = Counter()
    for i, c in enumerate(t):
        if c not in _SYMBOLS:
            continue
        before, after = t[i - 1 : i], t[i + 1 : i + 2]
        if c in "-/&'" and before.isalpha() and after.isalpha():
            continue
        out[c] += 1
    # "!=", "<=", "->", "**": two-character operators count as one.
    for op in re.findall(r"!=|<=|>=|==|->|=>|\*\*|\+\+|--", t):
        out[op] += 1
        for c in op:
            out[c] -= 1
    return +out


_TECHNICAL = _SYMBOLS | frozenset("[]{}()\\_^⁰¹²³⁴⁵⁶⁷⁸⁹₀₁₂₃₄₅₆₇₈₉")
_EDGES = "?!.,;:\"'“”‘’()"


def _technical(text: str) -> Counter[str]:
    """Chunks of a prompt that hold symbols ("i++", "a[::-1]", "\\d+", "x^2", "'a%'"), as
    written: case and order inside a chunk matter ("\\d" is not "\\D", "i++" not "++i")."""
    out: Counter[str] = Counter()
    for chunk in unicodedata.normalize("NFC", text).split():
        c = chunk.strip(_EDGES + "`")
        # Hyphens and slashes inside words (state-of-the-art, and/or) are spelling.
        bare = re.sub(r"(?<=[^\W\d_])[-/](?=[^\W\d_])", "", c)
        if any(ch in _TECHNICAL for ch in bare):
            # Case counts only where it is syntax (regex classes); "Iter_archive" at the
            # start of a sentence is iter_archive.
            out[c if "\\" in c else c.casefold()] += 1
    return out


def _replaced(x: Counter[str], y: Counter[str]) -> bool:
    return bool(x - y) and bool(y - x)


def guard_symbols(a: str, b: str) -> Check:
    """Operators and symbols: "Is 5 > 3" vs "Is 5 < 3", "2+2" vs "2-2", "$5" vs "€5",
    "i++" vs "++i". A conflict when both prompts have symbols and they differ; one-sided
    when only one has any ("2+2" / "two plus two")."""
    sa, sb = _symbols(a), _symbols(b)
    ta, tb = _technical(a), _technical(b)
    if sa == sb and ta == tb:
        return Check("symbols", True)
    # A conflict is a replacement: each side has something the other lacks.
    level = 2 if _replaced(sa, sb) or _replaced(ta, tb) else 1
    detail = f"{' '.join(sorted(ta)) or '-'} vs {' '.join(sorted(tb)) or '-'}"
    return Check("symbols", False, detail, level=level)


_LEADERS = frozenset(
    "in on for at with during using from after before when if as by via under within without "
    "to into onto over about regarding".split()
)


def _fronted(x: Text, y: Text, y_raw: str) -> bool:
    """y is x with one phrase moved to the front: "How do I reverse a list in Python?" /
    "In Python, how do I reverse a list?". Unlike swapped roles, the moved phrase opens y
    with a preposition or ends at a comma, and the rest keeps its order."""
    cx, cy = list(x.content), list(y.content)
    for cut in range(1, len(cy)):
        head, tail = cy[:cut], cy[cut:]
        if cx == tail + head or _moved(cx, head, tail):
            opens = bool(y.lows) and y.lows[0] in _LEADERS
            before_comma = analyse(y_raw.split(",")[0]).content if "," in y_raw else ()
            return opens or list(before_comma) == head
    return False


def _moved(cx: list[str], head: list[str], tail: list[str]) -> bool:
    """cx has `head` as one block somewhere inside `tail`."""
    n = len(head)
    return any(cx[i : i + n] == head and cx[:i] + cx[i + n :] == tail for i in range(len(cx)))


def _swapped(x: Text, y: Text) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The one span (one or two words a side) by which two prompts differ, every word before
    and after it the same; None when they differ otherwise or keep fewer than 3 words."""
    lx, ly = x.lows, y.lows
    n = min(len(lx), len(ly))
    i = 0
    while i < n and lx[i] == ly[i]:
        i += 1
    j = 0
    while j < n - i and lx[-1 - j] == ly[-1 - j]:
        j += 1
    sx, sy = lx[i : len(lx) - j], ly[i : len(ly) - j]
    if not (1 <= len(sx) <= 2 and 1 <= len(sy) <= 2) or len(lx) - len(sx) < 3:
        return None
    return sx, sy


def _typo(x: str, y: str) -> bool:
    """One letter added, dropped, changed or two swapped, in words of 5 letters or more."""
    if min(len(x), len(y)) < 5 or abs(len(x) - len(y)) > 1:
        return False
    if len(x) == len(y):
        d = [i for i in range(len(x)) if x[i] != y[i]]
        return len(d) == 1 or (
            len(d) == 2 and d[1] == d[0] + 1 and (x[d[0]], x[d[1]]) == (y[d[1]], y[d[0]])
        )
    short, long_ = sorted((x, y), key=len)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


_INFLECTIONS = ("s", "es", "d", "ed", "ing", "ly")


def _alike(x: str, y: str) -> bool:
    """Two words that may mean the same: synonyms (WordNet), forms of one word (hair/haired,
    learn/learning; not paint/painter or book/bookcase), a typo."""
    if stem(x) == stem(y) or _typo(x, y) or synonyms(x, y):
        return True
    short, long_ = sorted((x, y), key=len)
    return len(short) >= 3 and any(long_ == short + end for end in _INFLECTIONS)


def guard_swap(a: str, b: str) -> Check:
    """One word (or two) swapped for another in an otherwise identical prompt: freeze/thaw,
    teacher/principal, owning/renting, solicitor/barrister. Two prompts that differ in one
    spot only are a minimal pair; a rewording that changes a single word uses a synonym, a
    form of the same word or a typo of it, or only adds words ("learn" / "start learning").
    Anything else is read as another question, even where no word list knows the two words
    as opposites or siblings. Negation words, numbers and names are the other guards'."""
    ta, tb = analyse(a), analyse(b)
    span = _swapped(ta, tb)
    if span is None:
        return Check("swap", True)
    sa, sb = span
    words = sa + sb
    if any(w in NEGATIONS or w.endswith("n't") or any(c.isdigit() for c in w) for w in words):
        return Check("swap", True)
    ca = [w for w in sa if is_content_word(w)]
    cb = [w for w in sb if is_content_word(w)]
    if not ca or not cb:
        return Check("swap", True)
    # Every content word of one side has its like on the other: a synonym, or words added.
    for x, y in ((ca, cb), (cb, ca)):
        if all(any(_alike(u, v) for v in y) for u in x):
            return Check("swap", True)
    return Check("swap", False, f"{' '.join(sa)}/{' '.join(sb)}", level=2)


GUARDS = (guard_negation, guard_numbers, guard_entities, guard_scope, guard_direction,
          guard_order, guard_opposite, guard_symbols, guard_swap)  # fmt: skip


def _odd_negations(a: str, b: str) -> bool:
    return (len(analyse(a).negations) - len(analyse(b).negations)) % 2 == 1


def run_guards(a: str, b: str) -> list[Check]:
    """All guards. A comparative flipped together with its operands cancels out
    ('Is A taller than B' == 'Is B shorter than A')."""
    checks = [g(a, b) for g in GUARDS]
    by = {c.name: c for c in checks}
    flipped = by["opposite"].level or by["direction"].level
    if flipped and by["negation"].level and _odd_negations(a, b):
        # A negated opposite: "can't remember" == "forget", "not safe" == "unsafe".
        checks = [
            Check(c.name, True, "double flip: " + c.detail)
            if c.name in ("opposite", "direction", "negation")
            else c
            for c in checks
        ]
        by = {c.name: c for c in checks}
    flipped = by["direction"].level == 2 or by["opposite"].level == 2
    if flipped and by["order"].level >= 1:
        # "Is A taller than B" == "Is B shorter than A": the comparative and its operands.
        if "than" in analyse(a).lowset | analyse(b).lowset:
            checks = [
                Check(c.name, True, "double flip: " + c.detail)
                if c.name in ("direction", "opposite", "order")
                else c
                for c in checks
            ]
    return checks
