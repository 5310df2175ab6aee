"""A BERTScore-like alignment of two prompts' MiniLM token vectors: a content word of one
without a close counterpart in the other is evidence of a different question."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cache.verify.results import TokenVectors
from cache.verify.text import analyse
from cache.verify.words import is_content_word, stem


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
        tuple((stem(w), float(s)) for w, s in zip(wa, best_a, strict=True) if is_content_word(w)),
        tuple((stem(w), float(s)) for w, s in zip(wb, best_b, strict=True) if is_content_word(w)),
        float((best_a.mean() + best_b.mean()) / 2),
    )


def alignment_features(a: str, b: str, al: Alignment, bound: float) -> dict[str, float]:
    scores = al.scores()
    if not scores:
        return {"align_min": 1.0, "align_mean": 1.0, "align_low": 0.0, "align_low_frac": 0.0,
                "novel_min": 1.0, "one_for_one": 0.0, "swap_score": 1.0, "align_low2": 1.0,
                "novel_mean": 1.0, "novel_frac": 0.0, "align_all": al.all_words}  # fmt: skip
    low = sum(s < bound for s in scores)
    # Words that one prompt has and the other lacks: how close is their best stand-in?
    ca, cb = set(analyse(a).content), set(analyse(b).content)
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
