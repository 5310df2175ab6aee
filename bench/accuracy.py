"""How often does the semantic cache serve the right answer, a wrong one, or none?

    python -m bench.accuracy [extra.jsonl ...] [--target-precision 0.97]

Two modes, each with the second stage off and on:

- pairs: labelled pairs {a, b, same} -- the shared paraphrase set (all same), the
  hand-written traps (bench/data/traps.jsonl) and any JSON/JSONL file given on the
  command line. A pair is *served* when cosine >= threshold and the stage accepts.
  right = served & same, wrong = served & different, miss = not served & same.
- retrieval: all first questions of the shared set are indexed; each paraphrase is a
  query; its K=3 nearest entries go to `Verifier.choose` (the function the answer task
  uses): among those above the threshold that the stage accepts, the best-scored one is
  served. `cosine` serves the nearest; `verifier_first` is the older rule (the first
  accepted in cosine order), for comparison. Right when the served entry is the
  query's own (same normalised text), wrong otherwise.
  `wrong_distinct` leaves out wrong entries that are the same statement as the
  query's own (the set repeats facts: "`iter_archive` method iterates over files in
  an archive" / "`iter_archive` function iterates over files within an archive"):
  cosine >= 0.9 between the two entries and the verifier accepts them as one.

Stages: `cosine` (threshold only), `guards` (+ hard-guard vetoes), `verifier`
(+ model with token alignment, as served), `verifier_text` (model without token
vectors). The operating point of each stage is the lowest threshold whose pooled
precision over the sets that contain negatives reaches --target-precision.

Honest figure: `--fold-weights var/verifier` (written by `bench.train_verifier --folds`)
judges every shared pair and every retrieval query with the verifier fitted on the
other folds (by source pair), i.e. one that never saw it. Traps and extra files use
--weights (the shipped model by default); traps are never trained on.

The table goes to stderr; stdout gets one JSON summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.build_pairs import (
    SHARED_PAIRS,
    EmbeddingStore,
    fold_of,
    load_labelled,
    load_shared,
    normalise,
)
from cache.verify import DEFAULT_WEIGHTS, Option, TokenVectors, Verdict, Verifier
from cache.verify.text import analyse

ROOT = Path(__file__).resolve().parent.parent
TRAPS = ROOT / "bench" / "data" / "traps.jsonl"
THRESHOLDS = [round(float(t), 2) for t in np.arange(0.70, 0.99, 0.02)]
STAGES = ("cosine", "guards", "verifier", "verifier_text")
RETRIEVAL_STAGES = ("cosine", "guards", "verifier_first", "verifier", "verifier_text")
K = 3  # candidates per lookup, as tasks/flow.py asks the index for


def log(message: str = "") -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Judged:
    """One pair (or one retrieval) with the stage decisions that do not depend on the
    threshold: the verifier runs with lower_bound 0 and the sweep applies cosine."""

    cosine: float
    same: bool
    accept: dict[str, bool]


def judge(
    pairs: Sequence[tuple[str, str, bool]],
    store: EmbeddingStore,
    verifiers: dict[str, Verifier],
    timings: list[float] | None = None,
) -> list[Judged]:
    out = []
    for a, b, same in pairs:
        cos = store.cosine(a, b)
        ta, tb = store.tokens[a], store.tokens[b]
        t0 = time.perf_counter()
        full = verifiers["verifier"].verify(a, b, cos, ta, tb)
        if timings is not None:
            timings.append(time.perf_counter() - t0)
        accept = {
            "cosine": True,
            "guards": verifiers["guards"].verify(a, b, cos).accept,
            "verifier": full.accept,
            "verifier_text": verifiers["verifier_text"].verify(a, b, cos).accept,
        }
        out.append(Judged(cos, same, accept))
    return out


def counts(judged: Sequence[Judged], stage: str, threshold: float) -> dict[str, Any]:
    served = [bool(j.cosine >= threshold and j.accept[stage]) for j in judged]
    right = int(sum(s and j.same for s, j in zip(served, judged, strict=True)))
    wrong = int(sum(s and not j.same for s, j in zip(served, judged, strict=True)))
    positives = sum(j.same for j in judged)
    negatives = len(judged) - positives
    return {
        "right": right,
        "wrong": wrong,
        "miss": positives - right,
        "precision": round(right / (right + wrong), 4) if right + wrong else None,
        "recall": round(right / positives, 4) if positives else None,
        "negatives_served": round(wrong / negatives, 4) if negatives else None,
    }


def unbounded(verifier: Verifier) -> Verifier:
    """`verifier` with no first stage of its own: the sweep applies cosine itself."""
    verifier.lower_bound = 0.0
    return verifier


def guards_only(verifier: Verifier, verdict: Verdict) -> Verdict:
    """The verdict as the guards alone give it (the "guards" stage): the model's check
    left out, a hard guard's veto decides."""
    if not any(c.name == "verifier" for c in verdict.checks):
        return verdict  # decided before the model: the first stage, identical texts
    checks = tuple(c for c in verdict.checks if c.name != "verifier")
    return replace(verdict, accept=not verifier._vetoed(checks), checks=checks)


class MemoVerifier(Verifier):
    """verify() memoised per (query, candidate): the sweep calls choose() once per
    threshold, and with no lower bound a verdict does not depend on the threshold.
    `guards`: the guards stage (see guards_only)."""

    def __init__(self, weights: Path | None, guards: bool = False) -> None:
        super().__init__(weights)
        unbounded(self)
        self.guards = guards
        self._memo: dict[tuple[str, str, bool], Verdict] = {}

    def verify(
        self,
        query: str,
        candidate: str,
        similarity: float,
        query_tokens: TokenVectors | None = None,
        candidate_tokens: TokenVectors | None = None,
    ) -> Verdict:
        key = (query, candidate, query_tokens is not None and candidate_tokens is not None)
        if key not in self._memo:
            verdict = super().verify(query, candidate, similarity, query_tokens, candidate_tokens)
            self._memo[key] = guards_only(self, verdict) if self.guards else verdict
        return self._memo[key]


def make_verifiers(weights: Path | None) -> dict[str, Verifier]:
    return {
        "guards": MemoVerifier(weights, guards=True),
        "verifier": MemoVerifier(weights),
        "verifier_text": MemoVerifier(weights),
    }


def retrieval(
    store: EmbeddingStore, verifiers_of: Any, thresholds: Sequence[float] = THRESHOLDS
) -> dict[str, dict[float, list[str]]]:
    """Outcome of every query per stage and threshold: "right", "wrong", "wrong_dup"
    (a wrong entry that states the same as the query's own) or "miss".
    `verifiers_of(origin)` gives the verifier set that judges the query of `origin`."""
    pairs = load_shared()
    origins = list(dict.fromkeys(o for o, _ in pairs))
    matrix = np.stack([store.sent[o] for o in origins])
    out: dict[str, dict[float, list[str]]] = {s: {t: [] for t in thresholds} for s in
                                              RETRIEVAL_STAGES}  # fmt: skip
    dup_memo: dict[tuple[str, str], bool] = {}

    def outcome(served: str | None, truth: str, vs: dict[str, Verifier]) -> str:
        if served is None:
            return "miss"
        if normalise(served) == normalise(truth):
            return "right"
        key = (served, truth)
        if key not in dup_memo:
            cos = store.cosine(served, truth)
            dup_memo[key] = (
                cos >= 0.9
                and vs["verifier"]
                .verify(truth, served, cos, store.tokens[truth], store.tokens[served])
                .accept
            )
        return "wrong_dup" if dup_memo[key] else "wrong"

    for truth, query in pairs:
        vs = verifiers_of(truth)
        sims = matrix @ store.sent[query]
        top = [int(i) for i in np.argsort(-sims)[:K]]
        qt = store.tokens[query]
        for t in thresholds:
            nearest = origins[top[0]] if sims[top[0]] >= t else None
            out["cosine"][t].append(outcome(nearest, truth, vs))
            first = next(
                (
                    origins[i]
                    for i in top
                    if sims[i] >= t
                    and vs["verifier"]
                    .verify(query, origins[i], float(sims[i]), qt, store.tokens[origins[i]])
                    .accept
                ),
                None,
            )
            out["verifier_first"][t].append(outcome(first, truth, vs))
            for stage, with_tokens in (
                ("guards", False),
                ("verifier", True),
                ("verifier_text", False),
            ):
                options = [Option(origins[i], float(sims[i]),
                                  store.tokens[origins[i]] if with_tokens else None)
                           for i in top]  # fmt: skip
                picked = vs[stage].choose(query, qt if with_tokens else None, options,
                                          threshold=t)  # fmt: skip
                out[stage][t].append(outcome(picked[0].text if picked else None, truth, vs))
    return out


def retrieval_counts(outcomes: Sequence[str]) -> dict[str, float]:
    n = len(outcomes)
    right = outcomes.count("right")
    wrong = outcomes.count("wrong") + outcomes.count("wrong_dup")
    return {
        "right": round(right / n, 4),
        "wrong": round(wrong / n, 4),
        "wrong_distinct": round(outcomes.count("wrong") / n, 4),
        "miss": round((n - right - wrong) / n, 4),
    }


def operating_point(sets: dict[str, list[Judged]], stage: str, target: float) -> float | None:
    pooled = [j for name, js in sets.items() if any(not j.same for j in js) for j in js]
    for t in THRESHOLDS:
        p = counts(pooled, stage, t)["precision"]
        if p is not None and p >= target:
            return t
    return None


def time_verifier(store: EmbeddingStore, verifier: Verifier, pairs: Sequence[tuple[str, str]]):
    """Cost of the second stage per candidate (guards + alignment + model), token
    vectors given. Cold: the per-text analysis cache cleared before every call (a
    never-seen query and candidate); warm: the candidate's analysis cached, as for
    entries that were checked before."""
    cold, warm = [], []
    for a, b in pairs:
        ta, tb = store.tokens[a], store.tokens[b]
        cos = store.cosine(a, b)
        analyse.cache_clear()
        t0 = time.perf_counter()
        verifier.verify(a, b, cos, ta, tb)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        verifier.verify(a, b, cos, ta, tb)
        warm.append(time.perf_counter() - t0)

    def pct(xs: list[float], q: float) -> float:
        return round(float(np.percentile(xs, q)) * 1000, 3)

    return {
        "calls": len(pairs),
        "cold_ms": {"p50": pct(cold, 50), "p95": pct(cold, 95)},
        "warm_ms": {"p50": pct(warm, 50), "p95": pct(warm, 95)},
        "mean_words": round(statistics.mean(len(a.split()) for a, _ in pairs), 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="extra {a, b, same} JSON/JSONL")
    parser.add_argument("--target-precision", type=float, default=0.97)
    parser.add_argument("--weights", type=Path, default=None, help="verifier JSON")
    parser.add_argument(
        "--fold-weights", type=Path, default=None, help="dir of fold-<f>.json: held-out shared"
    )
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args(argv)

    verifiers = make_verifiers(args.weights)
    by_fold: dict[int, dict[str, Verifier]] = {}
    if args.fold_weights is not None:
        for path in sorted(args.fold_weights.glob("fold-*.json")):
            by_fold[int(path.stem.split("-")[1])] = make_verifiers(path)
        if not by_fold:
            parser.error(f"no fold-<f>.json in {args.fold_weights}")

    def verifiers_of(origin: str) -> dict[str, Verifier]:
        return by_fold[fold_of(origin, len(by_fold))] if by_fold else verifiers

    sources: dict[str, list[tuple[str, str, bool]]] = {
        "shared": [(o, s, True) for o, s in load_shared(SHARED_PAIRS)],
        "traps": [(r["a"], r["b"], bool(r["same"])) for r in load_labelled(TRAPS)],
    }
    for path in args.files:
        sources[path.stem] = [(r["a"], r["b"], bool(r["same"])) for r in load_labelled(path)]
    store = EmbeddingStore()
    store.ensure(t for pairs in sources.values() for a, b, _ in pairs for t in (a, b))

    sets = {
        name: [judge([p], store, verifiers_of(p[0]))[0] for p in pairs]
        if name == "shared"
        else judge(pairs, store, verifiers)
        for name, pairs in sources.items()
    }
    ret = retrieval(store, verifiers_of)

    sweep = []
    header = " ".join(f"{n:>34s}" for n in sets)
    log(f"{'stage':14s} {'thr':>5s} {header}  retrieval right/wrong(distinct)/miss")
    for stage in (*STAGES, "verifier_first"):
        for t in THRESHOLDS:
            row: dict[str, Any] = {"stage": stage, "threshold": t}
            cells = []
            for name, js in sets.items():
                if stage not in STAGES:
                    cells.append("")
                    continue
                c = counts(js, stage, t)
                row[name] = c
                cells.append(f"R{c['right']:4d} W{c['wrong']:4d} M{c['miss']:4d} "
                             f"P{_f(c['precision'])} R{_f(c['recall'])}")  # fmt: skip
            r = retrieval_counts(ret[stage][t])
            row["retrieval"] = r
            cells.append(f"{r['right']:.3f}/{r['wrong']:.3f}({r['wrong_distinct']:.3f})"
                         f"/{r['miss']:.3f}")  # fmt: skip
            sweep.append(row)
            log(f"{stage:14s} {t:5.2f} " + " ".join(f"{c:>34s}" for c in cells))
        log()

    chosen = {}
    for stage in STAGES:
        t = operating_point(sets, stage, args.target_precision)
        chosen[stage] = {
            "threshold": t,
            **({name: counts(js, stage, t) for name, js in sets.items()} if t else {}),
            "retrieval": retrieval_counts(ret[stage][t]) if t else None,
        }
        log(f"operating point {stage}: threshold {t} -> {json.dumps(chosen[stage])}")

    summary: dict[str, Any] = {
        "target_precision": args.target_precision,
        "weights": str(args.weights or DEFAULT_WEIGHTS),
        "fold_weights": str(args.fold_weights) if args.fold_weights else None,
        "lower_bound": Verifier(args.weights).lower_bound,
        "operating_points": chosen,
        "sweep": sweep,
    }
    if not args.no_timing:
        plain = unbounded(Verifier(args.weights))  # not memoised
        timing = time_verifier(store, plain, [(a, b) for a, b, _ in sources["traps"]])
        timing_long = time_verifier(store, plain, [(s, o) for o, s, _ in sources["shared"][:300]])
        log(f"second stage cost per candidate: questions {timing}, statements {timing_long}")
        summary["verify_cost"] = {"questions": timing, "statements": timing_long}
    print(json.dumps(summary))


def _f(x: float | None) -> str:
    return "  -  " if x is None else f"{x:.3f}"


if __name__ == "__main__":
    main()
