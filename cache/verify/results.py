"""What the verifier takes and gives: token vectors, candidates (`Option`), the checks that
ran (`Check`) and the decision (`Verdict`); its one error, `VerifierError`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TokenVectors = tuple[Sequence[str], np.ndarray]
# Token vectors, or a function that fetches them (called at most once, and only for a
# candidate that passes the cosine threshold).
LazyTokens = TokenVectors | Callable[[], TokenVectors | None] | None


class VerifierError(ValueError):
    """The weights file or the arguments are unusable."""


@dataclass(frozen=True)
class Check:
    """One check that ran. `level` 0 = no difference, 1 = one-sided, 2 = conflict."""

    name: str
    passed: bool
    detail: str = ""
    score: float | None = None
    level: int = 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "passed": self.passed}
        if self.detail:
            out["detail"] = self.detail
        if self.score is not None:
            out["score"] = round(self.score, 4)
        return out


@dataclass(frozen=True)
class Verdict:
    """Decision for one candidate. `score` is the verifier's P(same question)."""

    accept: bool
    similarity: float
    score: float
    checks: tuple[Check, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accept": self.accept,
            "similarity": round(self.similarity, 4),
            "score": round(self.score, 4),
            "checks": [c.as_dict() for c in self.checks],
        }


@dataclass(frozen=True)
class Option:
    """One candidate for `Verifier.choose`: a cached prompt, its cosine to the query,
    its token vectors (or a function fetching them), and `ref`, the caller's own handle
    (an index candidate, an entry key), handed back untouched."""

    text: str
    similarity: float
    tokens: LazyTokens = None
    ref: Any = None


def resolve(tokens: LazyTokens) -> TokenVectors | None:
    return tokens() if callable(tokens) else tokens
