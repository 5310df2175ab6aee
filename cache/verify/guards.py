"""Cheap guards on the raw texts of two prompts, one function each: does a difference in
negation, numbers, named entities, quantifiers, direction or order make them two
questions? Each gives a `Check` with a level: 0 no difference, 1 one-sided evidence,
2 a conflict (a hard guard's conflict vetoes a hit on its own: see Verifier)."""

from __future__ import annotations

from cache.verify.lexicon import NEG_PREFIXES, SYMMETRIC
from cache.verify.results import Check
from cache.verify.text import Text, analyse, jaccard
from cache.verify.words import stem


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
    return Check("numbers", level == 0, detail, level=level)


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
        if "than" in analyse(a).lowset | analyse(b).lowset:
            checks = [
                Check(c.name, True, "double flip: " + c.detail)
                if c.name in ("direction", "order")
                else c
                for c in checks
            ]
    return checks
