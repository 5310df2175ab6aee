"""Generated pairs that teach the pair model what public question pairs rarely show.

    python -m bench.hard_pairs [--out var/pairmodel/hard.jsonl] [--per-kind 3000]

Made only from questions of the public pairs' *train* split (bench/qqp.py), so nothing of
the validation or test splits leaks in. From a question q (and, when q has a labelled
duplicate d, from d: "a paraphrase plus one change" is the hardest case) we make:

negatives (same = false), one minimal edit each:
  opposite     a word replaced by an opposite, in the same word form (WordNet antonyms,
               bench/build_lexicon.py, plus a short list of roles and poles WordNet lacks)
  neg_prefix   a negative prefix added or removed (non-profit / profit, un-, in-, dis-)
  negation     a negation inserted (not, never, no longer, can / cannot, with / without)
  sibling      a noun replaced by a co-hyponym (WordNet: teacher / lecturer, cat / dog)
  number       one number changed while the others stay, or a unit changed (5 km / 5 miles)
  possessive   the owner in a possessive changed (boys' / girls', his / her)
  swap         two roles swapped (from A to B / from B to A, A than B / B than A)
positives (same = true):
  filler       greetings, fillers and sign-offs added or dropped
  fronted      a trailing phrase moved to the front ("In Python, how do I ...")
  surface      case, punctuation, contractions, one typo

Every generator returns None when it does not apply to a question.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from bench import qqp

ROOT = Path(__file__).resolve().parent.parent
LEXICON = ROOT / "var" / "lexicon"
DEFAULT_OUT = ROOT / "var" / "pairmodel" / "hard.jsonl"

# Opposites and roles WordNet has no antonym pointer for: the verifier's own hand-written list.
_EXTRA_FILE = ROOT / "cache" / "verify" / "data" / "opposites_extra.txt"
EXTRA_OPPOSITES = [
    line
    for line in _EXTRA_FILE.read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

_UNITS = [
    ("km", "miles"), ("kilometers", "miles"), ("kg", "pounds"), ("kg", "lbs"), ("mg", "g"),
    ("grams", "ounces"), ("hours", "minutes"), ("days", "weeks"), ("months", "years"),
    ("seconds", "minutes"), ("dollars", "euros"), ("USD", "EUR"), ("GB", "MB"), ("TB", "GB"),
    ("Celsius", "Fahrenheit"), ("liters", "gallons"), ("cm", "inches"), ("feet", "meters"),
    ("percent", "times"), ("rupees", "dollars"), ("lakh", "crore"), ("mph", "km/h"),
]  # fmt: skip
_GREETINGS = [
    "Hi,", "Hi!", "Hello,", "Hello everyone,", "Hey,", "Hey there!", "Good morning,",
    "Quick question:", "Question:", "I was wondering,", "Hi all,", "Dear Quora,",
    "Hello experts,", "Please help:", "Sorry if this is a dumb question, but", "So,",
    "Can anyone tell me:", "Could you tell me:", "I need help:", "Honest question:",
]  # fmt: skip
_SIGNOFFS = [
    "Thanks!", "Thanks in advance.", "Thank you.", "Cheers", "Please help.", "Any ideas?",
    "Thanks a lot!", ":)", "Please answer.", "TIA", "Much appreciated.", "thx",
    "Please reply asap.", "Thank you so much!", "Any help is appreciated.", "🙏", "😊",
]  # fmt: skip
_NEGATABLE = re.compile(
    r"\b(is|are|was|were|do|does|did|can|could|should|would|will|has|have|must)\b", re.I
)
_POSSESSIVE = re.compile(r"\b([A-Za-z]+)(['’]s|s['’])(?=\s)")
_TRAILING = re.compile(
    r"^(?P<head>.+?)\s+(?P<pp>(?:in|on|for|at|with|during|using|from|after|before|without)\s"
    r"[^,?]{2,40}?)(?P<end>\?+)\s*$",
    re.I,
)
# Roles are names or numbers: "from Paris to Rome", "iOS 9 to iOS 10", "Java faster than C".
_ROLE = r"(?:[A-Z][\w.+#-]*(?: [A-Z0-9][\w.+#-]*)?|\d[\w.]*)"
_FROM_TO = re.compile(rf"\bfrom ({_ROLE}) to ({_ROLE})(?=[\s?.,!]|$)")
_THAN = re.compile(rf"\b({_ROLE}) ((?:is |are )?(?:\w+er|more \w+|less \w+)) than ({_ROLE})")
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.])")


class Lexicon:
    def __init__(self, lexicon_dir: Path = LEXICON, min_count: int = 3,
                 vocab: dict[str, int] | None = None) -> None:  # fmt: skip
        self.opposite: dict[str, list[tuple[list[str], list[str]]]] = defaultdict(list)
        lines = [
            line.strip()
            for line in (lexicon_dir / "opposites.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        for line in [*lines, *EXTRA_OPPOSITES]:
            a, b = (side.split() for side in line.split("|"))
            for w in a:
                self.opposite[w].append((a, b))
            for w in b:
                self.opposite[w].append((b, a))
        self.siblings: dict[str, list[str]] = defaultdict(list)
        vocab = vocab or {}
        for line in (lexicon_dir / "siblings.tsv").read_text().splitlines():
            if line.startswith("#"):
                continue
            x, y, _ = line.split("\t")
            if vocab.get(x, 0) >= min_count and vocab.get(y, 0) >= min_count:
                self.siblings[x].append(y)
                self.siblings[y].append(x)
        self.vocab = vocab


def _match_case(new: str, old: str) -> str:
    if old.isupper() and len(old) > 1:
        return new.upper()
    if old[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def _same_form(word: str, forms: list[str]) -> str:
    """The form of the opposite that looks like `word`'s (same ending), else the base."""
    for suffix in ("ing", "ied", "ed", "ies", "est", "er", "es", "s"):
        if word.endswith(suffix):
            hits = [f for f in forms if f.endswith(suffix)]
            if hits:
                return min(hits, key=len)
    return min(forms, key=len)


def _words(text: str) -> list[re.Match[str]]:
    return list(re.finditer(r"[A-Za-z]+(?:-[A-Za-z]+)?", text))


def _replace(text: str, m: re.Match[str], new: str) -> str:
    return text[: m.start()] + _match_case(new, m.group(0)) + text[m.end() :]


def opposite(text: str, rng: random.Random, lex: Lexicon) -> str | None:
    low = {m.group(0).lower() for m in _words(text)}
    options = []
    for m in _words(text):
        for _, other in lex.opposite.get(m.group(0).lower(), ()):
            if not low & set(other):
                options.append((m, _same_form(m.group(0).lower(), other)))
    if not options:
        return None
    m, new = rng.choice(options)
    return _replace(text, m, new)


def neg_prefix(text: str, rng: random.Random, lex: Lexicon) -> str | None:
    words = _words(text)
    rng.shuffle(words)
    for m in words:
        w = m.group(0).lower()
        for prefix in ("non-", "non", "un", "in", "im", "il", "ir", "dis", "anti-"):
            rest = w[len(prefix) :]
            if w.startswith(prefix) and len(rest) > 3 and lex.vocab.get(rest, 0) >= 5:
                if prefix.endswith("-") or rest in lex.opposite.get(w, [([], [])])[0][1]:
                    return _replace(text, m, rest)
        # Add a prefix only where the prefixed word exists in the corpus.
        for prefix in ("non-", "un", "in", "dis", "non"):
            if len(w) > 3 and lex.vocab.get(prefix + w, 0) >= 2:
                return _replace(text, m, prefix + w)
    return None


def negation(text: str, rng: random.Random, lex: Lexicon) -> str | None:
    low = text.lower()
    if re.search(r"\bwith\b", low) and rng.random() < 0.3:
        return re.sub(r"\b([Ww])ith\b", lambda m: m.group(1) + "ithout", text, count=1)
    if re.search(r"\bwithout\b", low):
        return re.sub(r"\b([Ww])ithout\b", lambda m: m.group(1) + "ith", text, count=1)
    if re.search(r"\b(not|never|n't|no longer)\b", low):
        out = re.sub(r"\s*\b(not|never|no longer)\b", "", text, count=1, flags=re.I)
        return re.sub(r"n't\b", "", out, count=1) if out == text else out
    m = _NEGATABLE.search(text)
    if not m:
        return None
    word = rng.choice(["not", "not", "never", "no longer"])
    if m.group(1).lower() == "can" and rng.random() < 0.5:
        return text[: m.start()] + _match_case("cannot", m.group(1)) + text[m.end() :]
    # "Is it safe" -> "Is it not safe": after the subject when the verb leads.
    if m.start() == 0:
        rest = text[m.end() :].split(" ", 2)
        if len(rest) >= 3:
            return f"{m.group(1)} {rest[1]} {word} {rest[2]}"
        return None
    return text[: m.end()] + f" {word}" + text[m.end() :]


def sibling(text: str, rng: random.Random, lex: Lexicon) -> str | None:
    low = {m.group(0).lower() for m in _words(text)}
    options = [m for m in _words(text) if m.group(0).lower() in lex.siblings]
    if not options:
        return None
    m = rng.choice(options)
    choices = [s for s in lex.siblings[m.group(0).lower()] if s not in low]
    return _replace(text, m, rng.choice(choices)) if choices else None


def number(text: str, rng: random.Random, lex: Lexicon) -> str | None:
    nums = list(_NUMBER.finditer(text))
    # A unit only after a number: "5 km" / "5 miles", not "these days" / "these weeks".
    pairs = [*_UNITS, *((v, u) for u, v in _UNITS)]
    units = [(u, v) for u, v in pairs if re.search(rf"\d\s?{re.escape(u)}\b", text)]
    if units and (not nums or rng.random() < 0.4):
        old, new = rng.choice(units)
        return re.sub(rf"(?<=\d)(\s?){re.escape(old)}\b", rf"\g<1>{new}", text, count=1)
    if not nums:
        return None
    m = rng.choice(nums)
    value = m.group(1)
    if "." in value:
        new = f"{float(value) + rng.choice([0.5, 1, 2]):g}"
    elif len(value) == 4 and value.startswith(("19", "20")):
        new = str(int(value) + rng.choice([-3, -2, -1, 1, 2, 3]))
    else:
        n = int(value)
        new = str(rng.choice([n + 1, n + 2, max(0, n - 1), n * 2, n * 10]) if n else 1)
    return None if new == value else text[: m.start(1)] + new + text[m.end(1) :]


def possessive(text: str, rng: random.Random, lex: Lexicon) -> str | None:
    options = []
    for m in _POSSESSIVE.finditer(text):
        owner = m.group(1).lower()
        base = owner if m.group(2) in ("'s", "’s") else owner + "s"
        alts = [o for _, other in lex.opposite.get(base, ()) for o in other]
        if alts:
            options.append((m, rng.choice(alts)))
    if not options:
        low = text.lower()
        # his / her only: "my account" / "your account" usually ask the same thing.
        for a, b in (("his", "her"), ("her", "his"), ("him", "her"), ("he", "she"), ("she", "he")):
            if re.search(rf"\b{a}\b", low):
                return re.sub(rf"\b{a}\b", b, text, count=1, flags=re.I)
        return None
    m, new = rng.choice(options)
    return text[: m.start(1)] + _match_case(new.removesuffix("s"), m.group(1)) + text[m.start(2) :]


def swap(text: str, rng: random.Random, lex: Lexicon) -> str | None:
    m = _FROM_TO.search(text)
    if m and m.group(1).lower() != m.group(2).lower():
        return text[: m.start()] + f"from {m.group(2)} to {m.group(1)}" + text[m.end() :]
    m = _THAN.search(text)
    if m and m.group(1).lower() != m.group(3).lower():
        return text[: m.start()] + f"{m.group(3)} {m.group(2)} than {m.group(1)}" + text[m.end() :]
    return None


def filler(text: str, rng: random.Random, lex: Lexicon) -> str | None:
    out = text
    r = rng.random()
    if r < 0.45:
        lead = rng.choice(_GREETINGS)
        out = f"{lead} {out[:1].lower() + out[1:] if not out[:2].isupper() else out}"
    elif r < 0.75:
        out = f"{out} {rng.choice(_SIGNOFFS)}"
    else:
        out = f"{rng.choice(_GREETINGS)} {out} {rng.choice(_SIGNOFFS)}"
    if rng.random() < 0.2:
        out = re.sub(r"^(How|What|Why|Where|When|Which|Can|Is)\b", r"\1 exactly", out, count=1)
    return out


def fronted(text: str, rng: random.Random, lex: Lexicon) -> str | None:
    m = _TRAILING.match(text.strip())
    if not m or re.search(r"[.?!]\s", m.group("head")) or len(m.group("head").split()) < 3:
        return None  # one sentence only: "For them. Is this true" is no question
    head, pp = m.group("head"), m.group("pp")
    return f"{pp[:1].upper()}{pp[1:]}, {head[:1].lower()}{head[1:]}{m.group('end')}"


def surface(text: str, rng: random.Random, lex: Lexicon) -> str | None:
    r = rng.random()
    if r < 0.25:
        return text.lower()
    if r < 0.45:
        return text.rstrip("?!. ")
    if r < 0.65:
        for a, b in (("What is", "What's"), ("What's", "What is"), ("do not", "don't"),
                     ("don't", "do not"), ("I am", "I'm"), ("can not", "can't"),
                     ("cannot", "can't"), ("How is", "How's"), ("it is", "it's")):  # fmt: skip
            if a in text:
                return text.replace(a, b, 1)
    words = [m for m in _words(text) if len(m.group(0)) > 4]
    if not words:
        return None
    m = rng.choice(words)
    w = m.group(0)
    i = rng.randrange(1, len(w) - 2)
    return text[: m.start()] + w[:i] + w[i + 1] + w[i] + w[i + 2 :] + text[m.end() :]


Generator = Callable[[str, random.Random, Lexicon], str | None]
NEGATIVE: dict[str, Generator] = {
    "opposite": opposite, "neg_prefix": neg_prefix, "negation": negation, "sibling": sibling,
    "number": number, "possessive": possessive, "swap": swap,
}  # fmt: skip
POSITIVE: dict[str, Generator] = {"filler": filler, "fronted": fronted, "surface": surface}


def vocabulary(questions: list[str]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for q in questions:
        for m in _words(q):
            counts[m.group(0).lower()] += 1
    return counts


def build(pairs: list[qqp.Pair], per_kind: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    train = [p for p in pairs if p.split == "train"]
    questions = sorted({q for p in train for q in (p.a, p.b)})
    partner: dict[str, list[str]] = defaultdict(list)
    for p in train:
        if p.same:
            partner[p.a].append(p.b)
            partner[p.b].append(p.a)
    lex = Lexicon(vocab=vocabulary(questions))
    rows: list[dict[str, object]] = []
    for kinds, same in ((NEGATIVE, False), (POSITIVE, True)):
        for kind, make in kinds.items():
            made, tries = 0, 0
            seen: set[tuple[str, str]] = set()
            quota = per_kind // 2 if kind in ("sibling", "possessive") else per_kind
            while made < quota and tries < per_kind * 40:
                tries += 1
                q = rng.choice(questions)
                out = make(q, rng, lex)
                if not out or out.strip() == q.strip():
                    continue
                # Half the time judge against the question's labelled duplicate: a paraphrase
                # plus one change is the hardest near-miss, and a paraphrase plus filler
                # still a paraphrase.
                other = rng.choice(partner[q]) if partner[q] and rng.random() < 0.5 else q
                a, b = (other, out) if rng.random() < 0.5 else (out, other)
                if (a, b) in seen:
                    continue
                seen.add((a, b))
                rows.append({"a": a, "b": b, "same": same, "kind": kind})
                made += 1
    rng.shuffle(rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--per-kind", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows = build(qqp.load(), args.per_kind, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[str(r["kind"])] += 1
    print(json.dumps({"rows": len(rows), "by_kind": counts}))


if __name__ == "__main__":
    main()
