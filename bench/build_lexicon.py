"""Build word lists from WordNet 3.0: opposites (in every word form) and sibling nouns.

    python -m bench.build_lexicon [--wordnet /usr/share/wordnet] [--out var/lexicon]

Reads the WordNet database files (Debian/Ubuntu: `apt-get install wordnet-base`, which puts
them in /usr/share/wordnet; WNSEARCHDIR moves them) and writes:

- `opposites.txt`: one line per pair of direct antonyms (WordNet's "!" pointers between
  single words, all parts of speech), each side with its inflected forms:
  `permit permits permitted permitting|forbid forbids forbade forbidden forbidding`;
- `siblings.tsv`: nouns that share a direct hypernym and no synset (co-hyponyms: teacher /
  lecturer, cat / dog), with the hypernym; used only to generate training negatives;
- `synonyms.txt`: one line per synset of two or more single words, all their inflected
  forms (`buy buys bought buying purchase purchases purchased purchasing`): two words on one
  line can be synonyms (the verifier's swap guard, cache/verify).

WordNet 3.0 is Princeton University's, under a licence that permits use, copying and
redistribution with its copyright notice (kept in the output's header). The opposites feed
the verifier's guard (cache/verify) and the pair model's generated negatives
(bench/hard_pairs.py); the siblings feed only the latter.
"""

from __future__ import annotations

import argparse
import os
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTICE = (
    "# Derived from WordNet 3.0. Copyright 2006 by Princeton University. All rights reserved.\n"
    "# WordNet 3.0 license: permission to use, copy, modify and distribute this software and\n"
    "# database for any purpose without fee is granted, provided this notice is kept.\n"
    "# https://wordnet.princeton.edu/license-and-commercial-use\n"
)
_POS = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}
_VOWELS = set("aeiou")


def _synsets(wordnet: Path, pos: str):
    """(offset, pos, words, pointers) of every synset in data.<pos>."""
    with open(wordnet / f"data.{pos}", encoding="latin-1") as fh:
        for line in fh:
            if line.startswith("  "):
                continue  # the licence header
            fields = line.split(" | ")[0].split()
            offset, ss_type = fields[0], fields[2]
            n_words = int(fields[3], 16)
            words = [fields[4 + 2 * i].lower() for i in range(n_words)]
            i = 4 + 2 * n_words
            n_ptr = int(fields[i])
            pointers = []
            for j in range(n_ptr):
                sym, target, tpos, st = fields[i + 1 + 4 * j : i + 5 + 4 * j]
                pointers.append((sym, target, "a" if tpos == "s" else tpos, st))
            yield offset, "a" if ss_type == "s" else ss_type, words, pointers


def _plain(word: str) -> bool:
    return bool(re.fullmatch(r"[a-z]+(-[a-z]+)?", word)) and len(word) > 1


def _exceptions(wordnet: Path, pos: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    with open(wordnet / f"{pos}.exc", encoding="latin-1") as fh:
        for line in fh:
            parts = line.split()
            for base in parts[1:]:
                out[base].add(parts[0])
    return out


def _double(word: str) -> bool:
    """Consonant-vowel-consonant ending of a short word: stop -> stopped."""
    return (
        len(word) >= 3
        and word[-1] not in _VOWELS | {"w", "x", "y"}
        and word[-2] in _VOWELS
        and word[-3] not in _VOWELS
        and sum(c in _VOWELS for c in word) == 1
    )


def verb_forms(word: str, exc: set[str]) -> set[str]:
    forms = {word} | exc
    if word.endswith("e") and not word.endswith("ee"):
        forms |= {word + "s", word + "d", word[:-1] + "ing"}
    elif word.endswith("y") and word[-2:-1] not in _VOWELS:
        forms |= {word[:-1] + "ies", word[:-1] + "ied", word + "ing"}
    elif word.endswith(("s", "x", "z", "ch", "sh")):
        forms |= {word + "es", word + "ed", word + "ing"}
    elif _double(word):
        forms |= {word + "s", word + word[-1] + "ed", word + word[-1] + "ing"}
    else:
        forms |= {word + "s", word + "ed", word + "ing"}
    return forms


def noun_forms(word: str, exc: set[str]) -> set[str]:
    if exc:
        return {word} | exc
    if word.endswith("y") and word[-2:-1] not in _VOWELS:
        return {word, word[:-1] + "ies"}
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return {word, word + "es"}
    return {word, word + "s"}


def adj_forms(word: str, exc: set[str]) -> set[str]:
    forms = {word} | exc
    # Regular comparatives only for one-syllable adjectives (long -> longer).
    if sum(c in _VOWELS for c in word) == 1 and len(word) <= 6 and "-" not in word:
        stem = word + word[-1] if _double(word) else word.removesuffix("e")
        forms |= {stem + "er", stem + "est"}
    return forms


def _first_senses(wordnet: Path) -> dict[str, str]:
    """Noun -> offset of its most frequent sense (index.noun lists senses by frequency)."""
    out = {}
    with open(wordnet / "index.noun", encoding="latin-1") as fh:
        for line in fh:
            if line.startswith("  "):
                continue
            fields = line.split()
            n_synsets, n_ptrs = int(fields[2]), int(fields[3])
            out[fields[0]] = fields[4 + n_ptrs + 2]
            assert len(fields) == 4 + n_ptrs + 2 + n_synsets
    return out


def build(
    wordnet: Path,
) -> tuple[list[tuple[set[str], set[str]]], list[tuple[str, str, str]], list[set[str]]]:
    exc = {p: _exceptions(wordnet, p) for p in ("noun", "verb", "adj")}
    words_of: dict[tuple[str, str], list[str]] = {}
    pointers_of: dict[tuple[str, str], list[tuple[str, str, str, str]]] = {}
    for name, pos in _POS.items():
        for offset, _, words, pointers in _synsets(wordnet, name):
            words_of[(pos, offset)] = words
            pointers_of[(pos, offset)] = pointers

    def forms(word: str, pos: str) -> set[str]:
        if pos == "v":
            return verb_forms(word, exc["verb"].get(word, set()))
        if pos == "n":
            return noun_forms(word, exc["noun"].get(word, set()))
        if pos == "a":
            return adj_forms(word, exc["adj"].get(word, set()))
        return {word}

    pairs: dict[tuple[str, str], tuple[set[str], set[str]]] = {}
    for (pos, offset), pointers in pointers_of.items():
        for sym, target, tpos, st in pointers:
            if sym != "!" or st == "0000":
                continue
            src = words_of[(pos, offset)][int(st[:2], 16) - 1]
            dst = words_of[(tpos, target)][int(st[2:], 16) - 1]
            if not (_plain(src) and _plain(dst)) or src == dst:
                continue
            a, b = sorted((src, dst))
            fa, fb = pairs.get((a, b), (set(), set()))
            pairs[(a, b)] = (fa | forms(a, pos), fb | forms(b, pos))
    groups = []
    for (pos, _), words in words_of.items():
        members = sorted({w for w in words if re.fullmatch(r"[a-z]+", w) and len(w) > 1})
        if len(members) >= 2:
            groups.append(set().union(*(forms(w, pos) for w in members)))
    opposites = []
    for fa, fb in pairs.values():
        fa, fb = fa - fb, fb - fa  # a form on both sides (lead/lead) tells nothing
        if fa and fb:
            opposites.append((fa, fb))

    siblings: set[tuple[str, str, str]] = set()
    synonyms: dict[str, set[str]] = defaultdict(set)
    for (pos, _), words in words_of.items():
        if pos == "n":
            for w in words:
                synonyms[w].update(words)
    children: dict[str, list[str]] = defaultdict(list)
    for (pos, offset), pointers in pointers_of.items():
        if pos != "n":
            continue
        for sym, target, tpos, _ in pointers:
            if sym in ("@", "@i") and tpos == "n":
                children[target].append(offset)
    first_sense = _first_senses(wordnet)
    for parent, kids in children.items():
        if len(kids) > 40:
            continue  # a broad class (person, act): its members are not near-misses
        # A word counts only in its most frequent sense: "artery" is a blood vessel, not a
        # road, so it is no sibling of "street".
        heads = [
            w
            for k in kids
            for w in words_of[("n", k)]
            if re.fullmatch(r"[a-z]{3,}", w) and first_sense.get(w) == k
        ]
        hyper = words_of[("n", parent)][0]
        for i, x in enumerate(heads):
            for y in heads[i + 1 :]:
                if x != y and y not in synonyms[x]:
                    siblings.add((*sorted((x, y)), hyper))
    return opposites, sorted(siblings), groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--wordnet", type=Path, default=Path(os.environ.get("WNSEARCHDIR", "/usr/share/wordnet"))
    )
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "lexicon")
    args = parser.parse_args()
    opposites, siblings, synonyms = build(args.wordnet)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "opposites.txt", "w", encoding="utf-8") as fh:
        fh.write(NOTICE)
        for fa, fb in sorted(opposites, key=lambda p: (min(p[0]), min(p[1]))):
            fh.write(" ".join(sorted(fa)) + "|" + " ".join(sorted(fb)) + "\n")
    with open(args.out / "siblings.tsv", "w", encoding="utf-8") as fh:
        fh.write(NOTICE)
        for x, y, hyper in siblings:
            fh.write(f"{x}\t{y}\t{hyper}\n")
    with open(args.out / "synonyms.txt", "w", encoding="utf-8") as fh:
        fh.write(NOTICE)
        for line in sorted({" ".join(sorted(g)) for g in synonyms}):
            fh.write(line + "\n")
    print(
        f"{len(opposites)} opposite pairs, {len(siblings)} sibling pairs, "
        f"{len(synonyms)} synonym groups -> {args.out}"
    )


if __name__ == "__main__":
    main()
