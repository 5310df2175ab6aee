"""What the verifier takes and gives: candidates (`Option`), the checks that ran (`Check`),
the decision (`Verdict`), the pair model's signature (`PairScorer`); its one error,
`VerifierError`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# P(same question) of (query, candidate) from a model that reads both texts together, or
# None when the pair does not fit the model's window (inference.pair_model.PairModel.score).
PairScorer = Callable[[str, str], float | None]


class VerifierError(ValueError):
    """The arguments are unusable."""


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
    """Decision for one candidate. `score` is the pair model's P(same question) (1 for the
    same text, 0 when the model did not run)."""

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

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)


@dataclass(frozen=True)
class Option:
    """One candidate for `Verifier.choose`: a cached prompt, its cosine to the query, and
    `ref`, the caller's own handle (an index candidate, an entry key), handed back untouched."""

    text: str
    similarity: float
    ref: Any = None
