"""Build the labelled pairs the verifier (cache/verify/) is trained and tested on.

Source: the shared paraphrase set (question/statement + its paraphrase, 999 pairs).
From each source pair we make:

- the positive pair itself (origin, similar);
- near-miss negatives by perturbing the paraphrase (or the origin when the rule does
  not apply): negate, change a number or date, replace or swap named entities and
  code identifiers, change a scope word, flip a direction word, swap the operands of
  to/from/than/of, replace a content noun with a sibling, narrow the scope with a
  qualifier, substitute a content word;
- hard negatives: the nearest *other* origins of the paraphrase (MiniLM cosine),
  searched only inside the pair's own fold, and the origin's own nearest origin.

Rows are split by source pair into FOLDS folds (a hash of the normalised origin, so
duplicated origins land together); fold 0 is the "test" split, the others "train".
Everything a row is made from (replacement vocabulary, mined synonyms, neighbours)
comes from its own fold only, so a model trained on folds != f has seen nothing of
fold f: `bench/train_verifier.py --folds` and `bench/accuracy.py --fold-weights` use
that for an honest retrieval figure on the shared set.

    python -m bench.build_pairs [--out var/verifier/pairs.jsonl]

The encoder adapter `load_encoder()` (the serving ONNX int8 embedder) lives here so that
the other benches share it; vectors are cached in var/verifier/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cache.verify import is_content_word, word_vectors
from inference.onnx_export import RECIPE_VERSION

ROOT = Path(__file__).resolve().parent.parent
SHARED_PAIRS = ROOT.parent / "shared" / "data" / "paraphrase_pairs.json"
DEFAULT_OUT = ROOT / "var" / "verifier" / "pairs.jsonl"
# Keyed by embedder: ONNX int8 vectors differ slightly from the torch ones.
# Named after the export recipe: another int8 model gives other vectors.
CACHE_FILE = ROOT / "var" / "verifier" / f"embeddings-{RECIPE_VERSION}.npz"
NEIGHBOURS = 3
# Origins this close to each other say the same thing (the set has near-duplicates);
# labelling them "different" would teach the verifier to reject true paraphrases.
SAME_MEANING_COSINE = 0.95


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- encoder


class ServingEncoder:
    """The embedder that serves (`inference.embeddings.load_embedder()`: ONNX int8, one
    intra-op thread): `embed(texts)` -> (n, 384) L2-normalised float32;
    `token_embeddings(text)` -> (wordpiece tokens, (n_tokens, 384) L2-normalised) without
    CLS/SEP; `encode_full` gives both, from one forward pass per text, exactly as the
    embedder computes them for a request, so the benches judge the vectors the verifier
    will see."""

    def __init__(self, embedder: Any) -> None:
        self._embedder = embedder
        self.name = str(getattr(embedder, "name", "embedder"))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_full(texts)[0]

    def token_embeddings(self, text: str) -> tuple[list[str], np.ndarray]:
        return self.encode_full([text])[1][0]

    def encode_full(
        self, texts: Sequence[str]
    ) -> tuple[np.ndarray, list[tuple[list[str], np.ndarray]]]:
        sent = np.zeros((len(texts), 384), dtype=np.float32)
        tokens_out = []
        for i, text in enumerate(texts):
            v, toks, mat = self._embedder.embed_with_tokens(text)
            sent[i] = v
            tokens_out.append((list(toks), np.asarray(mat, dtype=np.float32)))
        return sent, tokens_out


def load_encoder() -> ServingEncoder:
    """The one place that loads the model for the benches: the serving embedder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from inference.embeddings import load_embedder

    return ServingEncoder(load_embedder(num_threads=1))


class EmbeddingStore:
    """Sentence and token vectors per text, computed once and kept in var/ (npz of
    plain arrays + a JSON token list: no pickle). The model is loaded only on a miss."""

    def __init__(
        self, path: Path = CACHE_FILE, encoder: ServingEncoder | None = None
    ) -> None:
        self.path = path
        self._encoder = encoder
        self.sent: dict[str, np.ndarray] = {}
        self.tokens: dict[str, tuple[list[str], np.ndarray]] = {}
        if path.exists() and path.with_suffix(".json").exists():
            with np.load(path, allow_pickle=False) as data:  # read each array once
                sent, offsets = data["sent"], data["offsets"]
                tok = data["tok"].astype(np.float32)
            tok /= np.maximum(np.linalg.norm(tok, axis=1, keepdims=True), 1e-9)
            meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            for i, (text, toks) in enumerate(zip(meta["texts"], meta["tokens"], strict=True)):
                self.sent[text] = sent[i]
                self.tokens[text] = (toks, tok[offsets[i] : offsets[i + 1]])

    @property
    def encoder(self) -> ServingEncoder:
        if self._encoder is None:
            self._encoder = load_encoder()
        return self._encoder

    def ensure(self, texts: Iterable[str]) -> None:
        missing = sorted(set(texts) - self.sent.keys())
        if not missing:
            return
        log(f"encoding {len(missing)} texts (sentence + token vectors)")
        for start in range(0, len(missing), 1024):
            chunk = missing[start : start + 1024]
            sent, toks = self.encoder.encode_full(chunk)
            for text, v, t in zip(chunk, sent, toks, strict=True):
                self.sent[text] = v
                self.tokens[text] = t
            self.save()  # a long cold run keeps what it has done
            log(f"encoded {min(start + 1024, len(missing))}/{len(missing)}")

    def save(self) -> None:
        texts = list(self.sent)
        lengths = [len(self.tokens[t][0]) for t in texts]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tok = np.concatenate([self.tokens[t][1] for t in texts]).astype(np.float16)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(self.path, sent=np.stack([self.sent[t] for t in texts]), tok=tok,
                 offsets=offsets)  # fmt: skip
        meta = {"texts": texts, "tokens": [self.tokens[t][0] for t in texts]}
        self.path.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")

    def cosine(self, a: str, b: str) -> float:
        return float(self.sent[a] @ self.sent[b])


# --------------------------------------------------------------------------- data


def normalise(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def load_shared(path: Path = SHARED_PAIRS) -> list[tuple[str, str]]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [(r["origin"], r["similar"]) for r in rows]


FOLDS = 5


def fold_of(origin: str, folds: int = FOLDS) -> int:
    """The fold of a source pair (fold 0 = the "test" split)."""
    digest = hashlib.sha1(normalise(origin).encode()).digest()
    return int(int.from_bytes(digest[:4], "big") / 2**32 * folds)


def load_labelled(path: Path) -> list[dict[str, Any]]:
    """{a, b, same} rows from a .json list or a .jsonl file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        rows = json.loads(text)
    for r in rows:
        if not {"a", "b", "same"} <= r.keys():
            raise ValueError(f"{path}: every row needs a, b and same: {r}")
    return rows


# --------------------------------------------------------------------------- perturbations

_NUM_WORDS = ["two", "three", "four", "five", "six", "seven", "eight", "ten", "twelve"]
_ORDINALS = ["first", "second", "third", "fourth", "fifth", "last"]
_MONTHS = ["January", "February", "April", "June", "July", "August", "October", "December"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_SCOPE_SWAPS = {
    "all": ["some", "only some", "no"], "every": ["some", "no"], "each": ["some", "one"],
    "some": ["all", "no"], "any": ["every", "no"], "only": ["also", "mostly"],
    "most": ["few", "all"], "many": ["few", "no"], "always": ["sometimes", "never"],
    "sometimes": ["always", "never"], "several": ["all", "no"], "both": ["neither", "one"],
}  # fmt: skip
_DIRECTION_SWAPS = {
    "before": "after", "after": "before", "more": "less", "less": "more",
    "larger": "smaller", "smaller": "larger", "higher": "lower", "lower": "higher",
    "increase": "decrease", "decrease": "increase", "upload": "download",
    "download": "upload", "import": "export", "export": "import", "push": "pull",
    "pull": "push", "add": "remove", "remove": "add", "enable": "disable",
    "disable": "enable", "first": "last", "last": "first", "faster": "slower",
    "slower": "faster", "maximum": "minimum", "minimum": "maximum", "start": "end",
    "end": "start", "encode": "decode", "decode": "encode", "read": "write",
    "write": "read", "input": "output", "output": "input", "open": "close",
    "save": "load", "load": "save", "public": "private", "private": "public",
}  # fmt: skip
# Sibling nouns: same kind of thing, different thing. Mostly the vocabulary of the
# shared set (library docs) plus general words; none is taken from bench/data/traps.
_SIBLINGS = [
    "audio image text video",
    "train test validation",
    "training evaluation inference",
    "row column",
    "csv json parquet xml",
    "dataset model tokenizer metric",
    "local remote",
    "file folder",
    "encoder decoder",
    "key value",
    "string integer float boolean",
    "list dictionary tuple set",
    "cpu gpu tpu",
    "batch example",
    "label feature",
    "shard chunk",
    "memory disk",
    "linux windows macos",
    "class function method module",
    "server client",
    "repository branch commit",
    "token word character sentence paragraph",
    "speech vision",
    "classification regression segmentation detection translation",
    "filter map sort shuffle",
    "height width depth",
    "user admin",
    "hub space",
    "english french german spanish chinese",
    "table schema",
    "archive directory",
    "script notebook",
    "card page",
    "index cache",
    "config parameter",
    "beginner expert",
    "email password username",
    "laptop phone tablet",
    "car bicycle motorcycle",
    "coffee tea juice",
    "breakfast lunch dinner",
    "doctor nurse dentist",
    "apple orange pear",
    "summer winter autumn",
    "city village",
    "teacher student",
    "kitchen bathroom garage",
    "river lake ocean",
    "salt sugar flour",
    "mouse keyboard monitor",
    "bank school hospital",
]
_SIBLING_OF = {w: [x for x in g.split() if x != w] for g in _SIBLINGS for w in g.split()}
_QUALIFIERS = [
    "for large datasets",
    "in streaming mode",
    "on Windows",
    "for private repositories",
    "when using multiple GPUs",
    "for audio data only",
    "in the free tier",
    "for image datasets",
    "without an internet connection",
    "in version 1.0",
    "for beginners",
    "in production",
    "for non-English text",
    "on a shared cluster",
]
_AUX = re.compile(
    r"\b(is|are|was|were|can|could|should|will|would|must|may|might|has|have|does|do|did)\b"
)
_ENTITY = re.compile(r"`[^`]+`|(?<![.!?]\s)(?<!^)\b[A-Z][A-Za-z0-9]+\b")
_WORD = re.compile(r"\b[a-z][a-z]{3,}\b")
_FLOW = re.compile(r"\b(\w+) (to|than|into|of) (the |a |an )?(\w+)\b")


def _replace_word(text: str, old: str, new: str) -> str:
    """Replace one whole word, keeping a leading capital."""

    def sub(m: re.Match[str]) -> str:
        w = m.group(0)
        return new[:1].upper() + new[1:] if w[:1].isupper() else new

    return re.sub(rf"\b{re.escape(old)}\b", sub, text, count=1, flags=re.IGNORECASE)


def negate(text: str, rng: random.Random) -> str | None:
    rules: list[tuple[str, str]] = [
        (r"\bcannot\b", "can"), (r"\bcan't\b", "can"), (r"\bwon't\b", "will"),
        (r"\b(\w+)n['’]t\b", r"\1"), (r"\bnot\s+", ""), (r"\bnever\b", "always"),
        (r"\bwithout\b", "with"), (r"\bno longer\b", "still"),
    ]  # fmt: skip
    for pattern, repl in rules:
        out = re.sub(pattern, repl, text, count=1, flags=re.IGNORECASE)
        if out != text:
            return out
    m = _AUX.search(text)
    if m:
        return text[: m.end()] + " not" + text[m.end() :]
    return None


def change_number(text: str, rng: random.Random) -> str | None:
    options: list[Callable[[], str | None]] = []
    digits = list(re.finditer(r"(?<![\w.])\d+(?:\.\d+)*(?![\w.]*\d)", text))
    if digits:

        def digit() -> str:
            m = rng.choice(digits)
            raw = m.group(0)
            if "." in raw:
                parts = raw.split(".")
                parts[-1] = str(int(parts[-1]) + rng.choice([1, 2, 5]))
                new = ".".join(parts)
            else:
                v = int(raw)
                new = str(
                    v + rng.choice([1, 2, 10])
                    if 1900 <= v <= 2100
                    else rng.choice([v + 1, v * 2, v + 10, max(v - 1, 0) or v + 3])
                )
            return text[: m.start()] + new + text[m.end() :]

        options.append(digit)
    lows = set(re.findall(r"[a-z]+", text.lower()))
    for pool in (
        _NUM_WORDS + ["one"],
        _ORDINALS,
        [m.lower() for m in _MONTHS],
        [d.lower() for d in _DAYS],
    ):
        hits = [w for w in pool if w in lows]
        if hits:

            def word(hits: list[str] = hits, pool: list[str] = pool) -> str:
                old = rng.choice(hits)
                new = rng.choice([w for w in pool if w != old and w != "one"])
                return _replace_word(text, old, new)

            options.append(word)
    if not options:
        return None
    return rng.choice(options)()


def _entities(text: str) -> list[str]:
    return [m.group(0) for m in _ENTITY.finditer(text)]


def replace_entity(text: str, rng: random.Random, vocab: dict[str, list[str]]) -> str | None:
    ents = _entities(text)
    if not ents:
        return None
    old = rng.choice(ents)
    pool = vocab["code" if old.startswith("`") else "name"]
    choices = [e for e in rng.sample(pool, min(30, len(pool))) if e.lower() not in text.lower()]
    if not choices:
        return None
    return text.replace(old, choices[0], 1)


def swap_entities(text: str, rng: random.Random) -> str | None:
    ents = list(dict.fromkeys(_entities(text)))
    if len(ents) < 2:
        m = _FLOW.search(text)
        if not m or m.group(1).lower() in _STOP or m.group(4).lower() in _STOP:
            return None
        a, b = m.group(1), m.group(4)
        return text[: m.start()] + f"{b} {m.group(2)} {m.group(3) or ''}{a}" + text[m.end() :]
    a, b = rng.sample(ents, 2)
    return text.replace(a, "\0").replace(b, a).replace("\0", b)


_STOP = set("the a an this that it is are be to of and or in on for with as by".split())


def change_scope(text: str, rng: random.Random) -> str | None:
    hits = [w for w in _SCOPE_SWAPS if re.search(rf"\b{w}\b", text, re.IGNORECASE)]
    if hits:
        old = rng.choice(hits)
        return _replace_word(text, old, rng.choice(_SCOPE_SWAPS[old]))
    m = re.search(r"\b(the|a|an) ([a-z]+s)\b", text)
    if m:  # "the datasets" -> "all the datasets" / "only some datasets"
        new = rng.choice(["only some", "all of the", "none of the"])
        return text[: m.start()] + f"{new} {m.group(2)}" + text[m.end() :]
    return None


def flip_direction(text: str, rng: random.Random) -> str | None:
    hits = [w for w in _DIRECTION_SWAPS if re.search(rf"\b{w}\b", text, re.IGNORECASE)]
    if not hits:
        return None
    old = rng.choice(hits)
    return _replace_word(text, old, _DIRECTION_SWAPS[old])


def sibling(text: str, rng: random.Random) -> str | None:
    hits = [w for w in _SIBLING_OF if re.search(rf"\b{w}\b", text, re.IGNORECASE)]
    if not hits:
        return None
    old = rng.choice(hits)
    return _replace_word(text, old, rng.choice(_SIBLING_OF[old]))


def narrow(text: str, rng: random.Random) -> str:
    body = text.rstrip()
    end = body[-1] if body and body[-1] in ".?!" else ""
    return f"{body.rstrip('.?!')} {rng.choice(_QUALIFIERS)}{end}"


def substitute(text: str, rng: random.Random, vocab: dict[str, list[str]]) -> str | None:
    words = [w for w in _WORD.findall(text) if w not in _STOP]
    if not words:
        return None
    old = rng.choice(words)
    new = rng.choice(vocab["word"])
    return None if new == old else _replace_word(text, old, new)


# --------------------------------------------------------------------------- building


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    same: bool
    kind: str
    group: str
    fold: int
    cosine: float = float("nan")

    @property
    def split(self) -> str:
        return "test" if self.fold == 0 else "train"

    def as_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "same": self.same, "kind": self.kind,
                "group": self.group, "split": self.split, "fold": self.fold,
                "cosine": round(self.cosine, 5)}  # fmt: skip


def _vocab(texts: Iterable[str]) -> dict[str, list[str]]:
    code: set[str] = set()
    name: set[str] = set()
    word: set[str] = set()
    for t in texts:
        for e in _entities(t):
            (code if e.startswith("`") else name).add(e)
        word.update(w for w in _WORD.findall(t) if w not in _STOP)
    return {"code": sorted(code), "name": sorted(name), "word": sorted(word)}


def mine_synonyms(
    pairs: Sequence[tuple[str, str]], store: EmbeddingStore, min_score: float = 0.6
) -> dict[str, list[str]]:
    """Word swaps the paraphrases themselves make ("used" -> "employed"): a content
    word of the origin, absent from the paraphrase, whose mutual best match there is
    a word absent from the origin. Kept when seen at least twice."""
    counts: dict[tuple[str, str], int] = {}
    for origin, similar in pairs:
        wo, mo = word_vectors(*store.tokens[origin])
        ws, ms = word_vectors(*store.tokens[similar])
        if not wo or not ws:
            continue
        sim = mo @ ms.T
        lo, ls = set(wo), set(ws)
        for i, w in enumerate(wo):
            j = int(sim[i].argmax())
            v = ws[j]
            ok = w.isalpha() and v.isalpha() and len(w) > 2 and len(v) > 2
            if ok and is_content_word(w) and is_content_word(v) and w not in ls and v not in lo:
                if int(sim[:, j].argmax()) == i and sim[i, j] >= min_score:
                    counts[(w, v)] = counts.get((w, v), 0) + 1
    out: dict[str, list[str]] = {}
    for (w, v), n in sorted(counts.items()):
        if n >= 2:
            out.setdefault(w, []).append(v)
    return out


def synonym_swap(text: str, rng: random.Random, synonyms: dict[str, list[str]]) -> str | None:
    hits = [w for w in synonyms if re.search(rf"\b{w}\b", text, re.IGNORECASE)]
    if not hits:
        return None
    old = rng.choice(hits)
    return _replace_word(text, old, rng.choice(synonyms[old]))


def perturbations(
    origin: str, similar: str, rng: random.Random, vocab: dict[str, list[str]]
) -> list[tuple[str, str]]:
    """(kind, perturbed text) near-misses of one source pair; the perturbed text is
    paired with the *origin*, so most negatives also differ in wording. Sibling,
    substitute and entity rules also make a minimal pair from the origin itself
    (kind suffix "_min"): one word apart, everything else identical."""
    rules: list[tuple[str, Callable[[str], str | None]]] = [
        ("negation", lambda t: negate(t, rng)),
        ("numbers", lambda t: change_number(t, rng)),
        ("entity", lambda t: replace_entity(t, rng, vocab)),
        ("swap", lambda t: swap_entities(t, rng)),
        ("scope", lambda t: change_scope(t, rng)),
        ("direction", lambda t: flip_direction(t, rng)),
        ("sibling", lambda t: sibling(t, rng)),
        ("scope_width", lambda t: narrow(t, rng)),
        ("substitute", lambda t: substitute(t, rng, vocab)),
    ]
    out = []
    for kind, rule in rules:
        for base in (similar, origin):
            new = rule(base)
            if new and normalise(new) not in (normalise(base), normalise(origin)):
                out.append((kind, new))
                break
        if kind in ("sibling", "substitute", "entity"):
            new = rule(origin)
            if new and normalise(new) != normalise(origin):
                out.append((f"{kind}_min", new))
    return out


def build(
    pairs: Sequence[tuple[str, str]],
    store: EmbeddingStore,
    folds: int = FOLDS,
    seed: int = 7,
) -> list[Pair]:
    rng = random.Random(seed)
    origins = [o for o, _ in pairs]
    groups = [hashlib.sha1(normalise(o).encode()).hexdigest()[:10] for o in origins]
    fold_ids = [fold_of(o, folds) for o in origins]
    store.ensure(t for p in pairs for t in p)
    cos = store.cosine

    rows: list[Pair] = []
    by_fold = {f: [i for i, x in enumerate(fold_ids) if x == f] for f in range(folds)}
    for fold, members in by_fold.items():
        # The vocabulary for replacements comes from the same fold only.
        vocab = _vocab(t for i in members for t in pairs[i])
        first: dict[str, int] = {}
        for i in members:
            first.setdefault(normalise(origins[i]), i)
        uniq = list(first)
        omat = np.stack([store.sent[origins[first[u]]] for u in uniq])
        synonyms = mine_synonyms([pairs[i] for i in members], store)
        log(f"fold {fold}: {sum(map(len, synonyms.values()))} mined synonym swaps")
        for i in members:
            origin, similar = pairs[i]
            g, s = groups[i], fold
            rows.append(Pair(origin, similar, True, "paraphrase", g, s))
            # A positive minimal pair: the origin with one word swapped for a synonym.
            swapped = synonym_swap(origin, rng, synonyms)
            if swapped and normalise(swapped) != normalise(origin):
                rows.append(Pair(origin, swapped, True, "synonym", g, s))
            for kind, text in perturbations(origin, similar, rng, vocab):
                rows.append(Pair(origin, text, False, kind, g, s))
            own = normalise(origin)
            for query, kind in ((similar, "neighbour"), (origin, "neighbour_origin")):
                sims = omat @ store.sent[query]
                taken = 0
                for j in np.argsort(-sims):
                    other = origins[first[uniq[j]]]
                    if uniq[j] == own or cos(other, origin) >= SAME_MEANING_COSINE:
                        continue
                    rows.append(Pair(other, query, False, kind, g, s))
                    taken += 1
                    if taken >= (NEIGHBOURS if kind == "neighbour" else 1):
                        break
    store.ensure(t for r in rows for t in (r.a, r.b))
    return [Pair(r.a, r.b, r.same, r.kind, r.group, r.fold, cos(r.a, r.b)) for r in rows]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--source", type=Path, default=SHARED_PAIRS)
    parser.add_argument("--folds", type=int, default=FOLDS)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rows = build(load_shared(args.source), EmbeddingStore(), args.folds, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r.as_dict(), ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for r in rows:
        counts[f"{r.split}/{r.kind}"] = counts.get(f"{r.split}/{r.kind}", 0) + 1
    log(f"wrote {len(rows)} pairs to {args.out}")
    print(json.dumps({"pairs": len(rows), "counts": dict(sorted(counts.items()))}))


if __name__ == "__main__":
    main()
