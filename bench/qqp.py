"""The public question pairs (../shared/data/question_pairs_train.jsonl.gz), split by question.

64,457 labelled pairs {a, b, duplicate} from Quora's Question Pairs release (via GPTCache's
benchmark data). Questions that share a pair form a connected component; a whole component
goes to one split, so no question is on two sides:

- `train` (80% of components): the pair model is trained on it;
- `val` (10%): thresholds and the operating point are chosen on it;
- `test` (10%): reported only, never used to choose anything.

The split is a hash of the component's smallest normalised question: stable across runs and
machines. The raw pairs are not copied into the repository (their terms are Quora's); the
path can be moved with FLOCK_SHARED_DATA.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("FLOCK_SHARED_DATA", ROOT.parent / "shared" / "data"))
QQP_TRAIN = SHARED_DATA / "question_pairs_train.jsonl.gz"
SPLITS = (("train", 0.8), ("val", 0.1), ("test", 0.1))


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    same: bool
    kind: str = "qqp"
    split: str = ""


def key(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


def _split_of(component: str) -> str:
    digest = hashlib.sha256(component.encode()).digest()
    x = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name, share in SPLITS:
        edge += share
        if x < edge:
            return name
    return SPLITS[-1][0]


def _rows(path: Path) -> Iterator[dict[str, object]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _root(parent: dict[str, str], x: str) -> str:
    """Union-find: the root of x's component (`parent` maps each item to its parent)."""
    parent.setdefault(x, x)
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def load(path: Path = QQP_TRAIN) -> list[Pair]:
    """Every pair with its split ("train", "val" or "test")."""
    rows = [(str(r["a"]), str(r["b"]), bool(r["duplicate"])) for r in _rows(path)]
    parent: dict[str, str] = {}
    find = partial(_root, parent)

    for a, b, _ in rows:
        ra, rb = find(key(a)), find(key(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the root is the component's smallest question
    return [Pair(a, b, same, "qqp", _split_of(find(key(a)))) for a, b, same in rows]


def by_split(pairs: list[Pair]) -> dict[str, list[Pair]]:
    out: dict[str, list[Pair]] = {name: [] for name, _ in SPLITS}
    for p in pairs:
        out[p.split].append(p)
    return out


if __name__ == "__main__":
    parts = by_split(load())
    for name, rows in parts.items():
        print(name, len(rows), sum(p.same for p in rows))


def closure(pairs: list[Pair], per_group: int = 20, seed: int = 1) -> list[Pair]:
    """Pairs the labels imply but do not list (within one split): duplicates of
    duplicates are duplicates; a duplicate of a question is not a duplicate of what that
    question was labelled different from. At most `per_group` new positives per group of
    duplicates (the largest groups would otherwise crowd out the rest)."""
    import itertools
    import random

    rng = random.Random(seed)
    parent: dict[str, str] = {}
    find = partial(_root, parent)

    text: dict[str, str] = {}
    for p in pairs:
        text.setdefault(key(p.a), p.a)
        text.setdefault(key(p.b), p.b)
        if p.same:
            ra, rb = find(key(p.a)), find(key(p.b))
            if ra != rb:
                parent[ra] = rb
    groups: dict[str, list[str]] = {}
    for q in sorted(text):
        groups.setdefault(find(q), []).append(q)
    listed = {frozenset((key(p.a), key(p.b))) for p in pairs}
    split = pairs[0].split if pairs else ""
    out: list[Pair] = []
    for members in groups.values():
        new = [c for c in itertools.combinations(members, 2) if frozenset(c) not in listed]
        for a, b in rng.sample(new, min(per_group, len(new))):
            out.append(Pair(text[a], text[b], True, "closure", split))
    seen: set[frozenset[str]] = set(listed)
    for p in pairs:
        if p.same:
            continue
        ga, gb = groups[find(key(p.a))], groups[find(key(p.b))]
        for a in ga:
            for b in gb:
                if a != b and frozenset((a, b)) not in seen:
                    seen.add(frozenset((a, b)))
                    out.append(Pair(text[a], text[b], False, "closure", split))
    return out
