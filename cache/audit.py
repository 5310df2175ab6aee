"""An error rate the operator sets: acceptance thresholds learned from audits.

SEMANTIC_MAX_ERROR bounds the share of semantic hits that answer a different question (the
vCache paper's idea: "Verified Semantic Prompt Caching", Schroeder et al., 2025). A share of
decisions is audited off the request path (tasks/audit.py): the LLM answers the query itself
and a judge says whether the cached answer served it. Each audit is one record
(pair-model score of the hit, correct or not). Per namespace, the acceptance threshold on the
pair model's score is the lowest one whose estimated error among the hits it lets through
stays within the bound.

The estimate starts from a prior, the error curve measured offline on held-out pairs (the
pair model's manifest, inference/models/pair-model.json), weighted as `prior_weight` audits,
and moves with the namespace's own records:

    error(t) = (wrong audits with score >= t + prior_weight * prior_error(t))
               / (audits with score >= t + prior_weight)

With no audits the threshold is the offline operating point for the bound. Audits of hits
can only show errors above the threshold; audits of *refused* candidates (a miss whose
nearest candidate scored in the band below the threshold: its fresh answer is generated
anyway) supply the evidence that lets a threshold come back down.

Pure functions; no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Calibration:
    """The offline error curve: error[i] is the share of wrong hits among accepted pairs
    when the threshold is thresholds[i] (ascending thresholds, error not increasing)."""

    thresholds: tuple[float, ...]
    error: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.thresholds) != len(self.error) or not self.thresholds:
            raise ValueError("a calibration needs as many error values as thresholds")
        if list(self.thresholds) != sorted(self.thresholds):
            raise ValueError("calibration thresholds must ascend")
        if not all(0.0 <= x <= 1.0 for x in (*self.thresholds, *self.error)):
            raise ValueError("calibration values must lie in 0..1")

    def prior_error(self, threshold: float) -> float:
        i = bisect.bisect_right(self.thresholds, threshold) - 1
        return self.error[max(i, 0)]

    def operating_point(self, max_error: float) -> float:
        return choose_threshold((), max_error, self, prior_weight=1.0)


@dataclass(frozen=True)
class Audit:
    score: float
    correct: bool


def estimated_error(
    audits: Sequence[Audit], threshold: float, prior: Calibration, prior_weight: float
) -> float:
    above = [a for a in audits if a.score >= threshold]
    wrong = sum(not a.correct for a in above)
    return (wrong + prior_weight * prior.prior_error(threshold)) / (len(above) + prior_weight)


def choose_threshold(
    audits: Iterable[Audit],
    max_error: float,
    prior: Calibration,
    prior_weight: float = 50.0,
    ceiling: float = 0.999,
) -> float:
    """The lowest threshold (among the calibration's grid and the audited scores) whose
    estimated error is within `max_error`; `ceiling` when none is."""
    if not 0.0 < max_error < 1.0:
        raise ValueError(f"max_error {max_error} outside (0, 1)")
    records = list(audits)
    grid = sorted({*prior.thresholds, *(a.score for a in records if a.score <= ceiling)})
    for t in grid:
        if estimated_error(records, t, prior, prior_weight) <= max_error:
            return t
    return ceiling
