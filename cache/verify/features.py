"""The verifier's inputs for one pair: lexical overlap, the guards' levels, the alignment.
Serving (Verifier) and training (bench/train_verifier.py) both call `features`, so both
see the same numbers."""

from __future__ import annotations

import math
from collections.abc import Sequence

from cache.verify.alignment import align, alignment_features
from cache.verify.guards import run_guards
from cache.verify.results import Check, TokenVectors
from cache.verify.text import analyse, jaccard


def features(
    a: str,
    b: str,
    similarity: float,
    a_tokens: TokenVectors | None = None,
    b_tokens: TokenVectors | None = None,
    align_bound: float = 0.5,
    checks: Sequence[Check] | None = None,
) -> dict[str, float]:
    """The verifier's inputs. Shared by serving and training so both see the same."""
    if checks is None:
        checks = run_guards(a, b)
    ta, tb = analyse(a), analyse(b)
    ca, cb = set(ta.content), set(tb.content)
    union = ca | cb
    feats: dict[str, float] = {
        "cosine": float(similarity),
        "jaccard": jaccard(ta, tb),
        "length_ratio": (min(len(ca), len(cb)) / max(len(ca), len(cb))) if union else 1.0,
        "content_len": math.log1p(len(ca) + len(cb)),
    }
    for c in checks:
        feats[f"g_{c.name}_soft"] = float(c.level == 1)
        feats[f"g_{c.name}_hard"] = float(c.level == 2)
    if a_tokens is not None and b_tokens is not None:
        feats.update(alignment_features(a, b, align(a_tokens, b_tokens), align_bound))
    return feats
