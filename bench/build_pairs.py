"""Shared helpers of the accuracy benches: the serving embedder with its vectors cached,
and the labelled pair files.

- `ServingEncoder` / `load_encoder()`: the embedder that serves
  (`inference.embeddings.load_embedder()`: ONNX int8, one intra-op thread, one forward
  pass per text), so the benches judge the vectors a request gets.
- `EmbeddingStore`: sentence vectors per text, computed once and kept in
  var/verifier/embeddings-<recipe>.npz (plain arrays + a JSON text list: no pickle).
- `load_shared()`: the shared paraphrase set (../shared/data/paraphrase_pairs.json) as
  (origin, similar) pairs; `load_labelled()`: {a, b, same} rows from .json / .jsonl;
  `normalise()`: the text two prompts are compared by when counting a retrieval right.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inference.onnx_export import RECIPE_VERSION

ROOT = Path(__file__).resolve().parent.parent
SHARED_PAIRS = ROOT.parent / "shared" / "data" / "paraphrase_pairs.json"
# Keyed by embedder: ONNX int8 vectors differ slightly from the torch ones, and another
# export recipe gives other vectors.
CACHE_FILE = ROOT / "var" / "verifier" / f"embeddings-{RECIPE_VERSION}.npz"
SAVE_EVERY = 4096  # texts encoded between two saves of the cache


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ServingEncoder:
    """`embed(texts)` -> (n, 384) L2-normalised float32, one forward pass per text,
    exactly as the embedder computes it for a request."""

    def __init__(self, embedder: Any) -> None:
        self._embedder = embedder
        self.name = str(getattr(embedder, "name", "embedder"))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._embedder.embed(list(texts)), dtype=np.float32)


def load_encoder() -> ServingEncoder:
    """The one place that loads the model for the benches: the serving embedder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from inference.embeddings import load_embedder

    return ServingEncoder(load_embedder(num_threads=1))


class EmbeddingStore:
    """Sentence vectors per text, kept in var/; the model is loaded only on a miss."""

    def __init__(self, path: Path = CACHE_FILE, encoder: ServingEncoder | None = None) -> None:
        self.path = path
        self._encoder = encoder
        self.sent: dict[str, np.ndarray] = {}
        meta = path.with_suffix(".json")
        if path.exists() and meta.exists():
            with np.load(path, allow_pickle=False) as data:
                sent = data["sent"]
            texts = json.loads(meta.read_text(encoding="utf-8"))["texts"]
            self.sent = dict(zip(texts, sent, strict=True))

    @property
    def encoder(self) -> ServingEncoder:
        if self._encoder is None:
            self._encoder = load_encoder()
        return self._encoder

    def ensure(self, texts: Iterable[str]) -> None:
        missing = sorted(set(texts) - self.sent.keys())
        if not missing:
            return
        log(f"encoding {len(missing)} texts")
        for start in range(0, len(missing), SAVE_EVERY):
            chunk = missing[start : start + SAVE_EVERY]
            self.sent.update(zip(chunk, self.encoder.embed(chunk), strict=True))
            self.save()  # a long cold run keeps what it has done
            log(f"encoded {min(start + SAVE_EVERY, len(missing))}/{len(missing)}")

    def save(self) -> None:
        texts = list(self.sent)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(self.path, sent=np.stack([self.sent[t] for t in texts]))
        meta = {"texts": texts}
        self.path.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")

    def cosine(self, a: str, b: str) -> float:
        return float(self.sent[a] @ self.sent[b])


def normalise(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def load_shared(path: Path = SHARED_PAIRS) -> list[tuple[str, str]]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [(r["origin"], r["similar"]) for r in rows]


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
