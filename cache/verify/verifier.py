"""The verifier: does a cached prompt ask the same question as the query? The first stage
(cosine >= a lower bound), the guards, the alignment and the model, and the choice among
the index's nearest entries."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from cache.verify.features import features
from cache.verify.guards import run_guards
from cache.verify.model import DEFAULT_WEIGHTS, Model
from cache.verify.results import (
    Check,
    LazyTokens,
    Option,
    TokenVectors,
    Verdict,
    VerifierError,
    resolve,
)


class Verifier:
    """Decides whether a cached prompt asks the same question as the query.

    From the weights file: `lower_bound`, candidates with cosine below it are rejected
    without further work (the first stage should not send them); `hard_guards`, the
    guards whose conflicts (level 2) veto on their own, whatever the model says;
    `margin` (see `choose`). `threshold` and `margin` may be given to override the file's.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        threshold: float | None = None,
        margin: float | None = None,
    ) -> None:
        path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise VerifierError(f"cannot read verifier weights {path}: {exc}") from exc
        try:
            self.lower_bound = float(raw["lower_bound"])
            self.align_bound = float(raw["align_bound"])
            models = raw["models"]
            self._models = {k: Model.from_json(v) for k, v in models.items()}
            self.hard_guards = frozenset(str(g) for g in raw["hard_guards"])
            choice = raw.get("choose", {})
            self.margin = float(choice.get("margin", 0.0) if margin is None else margin)
            self.rank_score = float(choice.get("rank_score", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise VerifierError(f"bad verifier weights {path}: {exc}") from exc
        if not 0.0 <= self.lower_bound <= 1.0:
            raise VerifierError(f"lower_bound {self.lower_bound} outside 0..1")
        if not {"tokens", "text"} <= self._models.keys():
            raise VerifierError("weights need a 'tokens' and a 'text' model")
        if threshold is not None:
            if not 0.0 <= threshold <= 1.0:
                raise VerifierError(f"threshold {threshold} outside 0..1")
            self._models = {k: m.with_threshold(threshold) for k, m in self._models.items()}

    def choose(
        self,
        query: str,
        query_tokens: LazyTokens,
        candidates: Iterable[Option],
        *,
        threshold: float | None = None,
    ) -> tuple[Option, Verdict] | None:
        """The candidate to serve among the index's nearest entries, or None.

        Every candidate with similarity >= `threshold` (and >= the lower bound) is
        verified; among those accepted the highest rank wins, rank = similarity +
        `rank_score` * verifier score (weights file, "choose"; 0 = cosine order, which
        measured best: the verifier score is no better than cosine at telling the
        query's own entry from another entry stating the same thing). When the
        runner-up is accepted too and ranks within `margin` of the winner, the query is
        ambiguous between two entries and nothing is served (margin 0: never).
        Candidates may come in any order; tokens (lazy or not) are fetched only for
        candidates above the threshold.
        """
        bound = max(self.lower_bound, float(threshold) if threshold is not None else 0.0)
        accepted: list[tuple[float, float, int, Option, Verdict]] = []
        q_tokens: TokenVectors | None = None
        fetched = False
        for i, option in enumerate(candidates):
            if option.similarity < bound:
                continue
            if not fetched:
                q_tokens, fetched = resolve(query_tokens), True
            verdict = self.verify(
                query, option.text, option.similarity, q_tokens, resolve(option.tokens)
            )
            if verdict.accept:
                rank = verdict.similarity + self.rank_score * verdict.score
                accepted.append((rank, verdict.similarity, -i, option, verdict))
        if not accepted:
            return None
        accepted.sort(key=lambda x: (x[0], x[1], x[2]), reverse=True)
        if len(accepted) > 1 and accepted[0][0] - accepted[1][0] < self.margin:
            # Two accepted entries about as close: serving either is a coin toss.
            return None
        return accepted[0][3], accepted[0][4]

    def doubtful(self, verdict: Verdict, low: float) -> bool:
        """Refused by the model's score alone, with a score in [low, the model's threshold):
        the band where a second opinion (the LLM's yes/no) may accept. A hard guard's veto
        or a failed first stage is never doubtful."""
        if verdict.accept or self._vetoed(verdict.checks):
            return False
        return any(c.name == "verifier" for c in verdict.checks) and low <= verdict.score

    def _vetoed(self, checks: Sequence[Check]) -> bool:
        """A hard guard found a conflict: refused whatever the model says."""
        return any(c.level == 2 and c.name in self.hard_guards for c in checks)

    def threshold(self, with_tokens: bool = True) -> float:
        return self._models["tokens" if with_tokens else "text"].threshold

    def verify(
        self,
        query: str,
        candidate: str,
        similarity: float,
        query_tokens: TokenVectors | None = None,
        candidate_tokens: TokenVectors | None = None,
    ) -> Verdict:
        similarity = float(similarity)
        first = Check("cosine", similarity >= self.lower_bound,
                      f">= {self.lower_bound}", score=similarity)  # fmt: skip
        if not first.passed:
            return Verdict(False, similarity, 0.0, (first,))
        if _normalised(query) == _normalised(candidate):
            return Verdict(True, similarity, 1.0, (first, Check("identical", True)))
        checks = run_guards(query, candidate)
        vetoed = self._vetoed(checks)
        with_tokens = query_tokens is not None and candidate_tokens is not None
        feats = features(query, candidate, similarity, query_tokens, candidate_tokens,
                         self.align_bound, checks)  # fmt: skip
        all_checks = [first, *checks]
        if with_tokens:
            low = feats["align_low"] > 0
            all_checks.append(Check("alignment", not low, f"min {feats['align_min']:.2f}",
                                    score=feats["align_min"]))  # fmt: skip
        model = self._models["tokens" if with_tokens else "text"]
        score = model.score(feats)
        all_checks.append(Check("verifier", score >= model.threshold,
                                f">= {model.threshold:.3f}", score=score))  # fmt: skip
        accept = not vetoed and score >= model.threshold
        return Verdict(accept, similarity, score, tuple(all_checks))


def _normalised(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))
