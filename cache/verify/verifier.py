"""The verifier: does a cached prompt ask the same question as the query?

For a candidate whose cosine passed the first stage:

1. both prompts must be ones the models can judge (language.foreign: English, Latin
   script), unless they are the same text up to case, spacing, punctuation and fillers
   (text.comparable), which is accepted at once;
2. no hard guard may find a conflict (guards.py: numbers with their units, symbols and
   operators, negation, opposites, named entities, quantifiers, direction, swapped
   roles, one word swapped for one that is no synonym) -- each a veto;
3. the pair model (a MiniLM cross-encoder reading both prompts together:
   inference/pair_model.py) must give P(same question) >= the score threshold, which
   the caller may set per namespace (cache/audit.py learns it). A pair beyond the
   model's window is not judged: no semantic hit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cache.verify.guards import run_guards
from cache.verify.language import foreign
from cache.verify.lexicon import synonym_groups
from cache.verify.results import Check, Option, PairScorer, Verdict, VerifierError
from cache.verify.text import comparable, without_fillers

# Guards whose conflicts (level 2) veto on their own; each measured on minimal pairs and on
# the public pairs (docs/BENCHMARKS.md, "Semantic accuracy": `swap` trades a little recall on
# the public pairs for most of the near-misses the pair model serves).
HARD_GUARDS = frozenset(
    "negation numbers entities direction order scope opposite symbols swap".split()
)


class Verifier:
    """`pair_model` scores a pair (None: does not fit); `score_threshold` is the default
    acceptance threshold on its score; `hard_guards` the guards that veto."""

    def __init__(
        self,
        pair_model: PairScorer,
        *,
        score_threshold: float,
        hard_guards: Iterable[str] = HARD_GUARDS,
    ) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise VerifierError(f"score threshold {score_threshold} outside 0..1")
        self.pair_model = pair_model
        self.score_threshold = float(score_threshold)
        self.hard_guards = frozenset(hard_guards)
        synonym_groups()  # read now, not on the first request

    def choose(
        self,
        query: str,
        candidates: Iterable[Option],
        *,
        threshold: float,
        score_threshold: float | None = None,
    ) -> tuple[Option, Verdict] | None:
        """The candidate to serve among the index's nearest entries, or None: the most
        similar one (cosine) that is >= `threshold` and accepted. Candidates are judged in
        cosine order and the first accepted is served, so a hit usually costs one pass of
        the pair model."""
        ranked = sorted(candidates, key=lambda o: -o.similarity)
        for option in ranked:
            if option.similarity < threshold:
                break
            verdict = self.verify(query, option.text, option.similarity, score_threshold)
            if verdict.accept:
                return option, verdict
        return None

    def verify(
        self,
        query: str,
        candidate: str,
        similarity: float,
        score_threshold: float | None = None,
    ) -> Verdict:
        similarity = float(similarity)
        bound = self.score_threshold if score_threshold is None else float(score_threshold)
        first = Check("cosine", True, score=similarity)
        if comparable(query) == comparable(candidate):
            return Verdict(True, similarity, 1.0, (first, Check("identical", True)))
        for text in (query, candidate):
            reason = foreign(text)
            if reason is not None:
                return Verdict(False, similarity, 0.0, (first, Check("language", False, reason)))
        checks = run_guards(without_fillers(query), without_fillers(candidate))
        if self._vetoed(checks):
            return Verdict(False, similarity, 0.0, (first, *checks))
        score = self.pair_model(query, candidate)
        if score is None:
            window = Check("window", False, "the pair is longer than the pair model reads")
            return Verdict(False, similarity, 0.0, (first, *checks, window))
        model = Check("pair_model", score >= bound, f">= {bound:.3f}", score=score)
        return Verdict(score >= bound, similarity, score, (first, *checks, model))

    def doubtful(self, verdict: Verdict, low: float) -> bool:
        """Refused by the pair model's score alone, with a score in [low, its threshold):
        the band where a second opinion (the LLM's yes/no) may accept. A guard's veto, a
        language or window refusal is never doubtful."""
        model = verdict.check("pair_model")
        return not verdict.accept and model is not None and low <= verdict.score

    def _vetoed(self, checks: Sequence[Check]) -> bool:
        return any(c.level == 2 and c.name in self.hard_guards for c in checks)
