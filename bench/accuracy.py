"""How often does the semantic cache serve the right answer, a wrong one, or none?

    python -m bench.accuracy [extra.jsonl ...] [--target-precision 0.97]

Two modes, each with the second stage off and on:

- pairs: labelled pairs {a, b, same} -- the shared paraphrase set (all same), the
  hand-written traps (bench/data/traps.jsonl) and any JSON/JSONL file given on the
  command line. A pair is *served* when cosine >= threshold and the stage accepts.
  right = served & same, wrong = served & different, miss = not served & same.
- retrieval: all first questions of the shared set are indexed; each paraphrase is a
  query; its nearest neighbour is served when it passes threshold + stage. Right when
  the served entry is the query's own (same normalised text), wrong otherwise.
  `wrong_distinct` leaves out wrong entries that are the same statement as the
  query's own (the set repeats facts: "`iter_archive` method iterates over files in
  an archive" / "`iter_archive` function iterates over files within an archive"):
  cosine >= 0.9 between the two entries and the verifier accepts them as one.

Stages: `cosine` (threshold only), `guards` (+ hard-guard vetoes), `verifier`
(+ model with token alignment, as served), `verifier_text` (model without token
vectors). The operating point of each stage is the lowest threshold whose pooled
precision over the sets that contain negatives reaches --target-precision.

The table goes to stderr; stdout gets one JSON summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.build_pairs import SHARED_PAIRS, EmbeddingStore, load_labelled, load_shared, normalise
from cache import verify
from cache.verify import Verifier

ROOT = Path(__file__).resolve().parent.parent
TRAPS = ROOT / "bench" / "data" / "traps.jsonl"
THRESHOLDS = [round(float(t), 2) for t in np.arange(0.70, 0.99, 0.02)]
STAGES = ("cosine", "guards", "verifier", "verifier_text")


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


def retrieval(
    store: EmbeddingStore, verifiers: dict[str, Verifier]
) -> list[tuple[Judged, bool, bool]]:
    """(decision on the nearest neighbour, whether that neighbour is the right entry,
    whether a wrong neighbour is a duplicate of the right one)."""
    pairs = load_shared()
    origins = list(dict.fromkeys(o for o, _ in pairs))
    matrix = np.stack([store.sent[o] for o in origins])
    queries = [(s, o) for o, s in pairs]
    out = []
    for query, truth in queries:
        best = origins[int(np.argmax(matrix @ store.sent[query]))]
        correct = normalise(best) == normalise(truth)
        judged = judge([(query, best, correct)], store, verifiers)[0]
        duplicate = not correct and store.cosine(best, truth) >= 0.9
        if duplicate:
            tb, tt = store.tokens[best], store.tokens[truth]
            v = verifiers["verifier"].verify(truth, best, store.cosine(best, truth), tt, tb)
            duplicate = v.accept
        out.append((judged, correct, duplicate))
    return out


def retrieval_counts(
    results: Sequence[tuple[Judged, bool, bool]], stage: str, t: float
) -> dict[str, float]:
    served = [(bool(j.cosine >= t and j.accept[stage]), ok, dup) for j, ok, dup in results]
    n = len(results)
    right = sum(s and ok for s, ok, _ in served)
    wrong = sum(s and not ok for s, ok, _ in served)
    distinct = sum(s and not ok and not dup for s, ok, dup in served)
    return {
        "right": round(right / n, 4),
        "wrong": round(wrong / n, 4),
        "wrong_distinct": round(distinct / n, 4),
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
        verify._analyse.cache_clear()
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
    args = parser.parse_args(argv)

    verifiers = {
        "guards": Verifier(args.weights, lower_bound=0.0, use_model=False),
        "verifier": Verifier(args.weights, lower_bound=0.0),
        "verifier_text": Verifier(args.weights, lower_bound=0.0),
    }
    sources: dict[str, list[tuple[str, str, bool]]] = {
        "shared": [(o, s, True) for o, s in load_shared(SHARED_PAIRS)],
        "traps": [(r["a"], r["b"], bool(r["same"])) for r in load_labelled(TRAPS)],
    }
    for path in args.files:
        sources[path.stem] = [(r["a"], r["b"], bool(r["same"])) for r in load_labelled(path)]
    store = EmbeddingStore()
    store.ensure(t for pairs in sources.values() for a, b, _ in pairs for t in (a, b))

    timings: list[float] = []
    sets = {name: judge(pairs, store, verifiers, timings) for name, pairs in sources.items()}
    ret = retrieval(store, verifiers)

    sweep = []
    header = " ".join(f"{n:>34s}" for n in sets)
    log(f"{'stage':14s} {'thr':>5s} {header}  retrieval right/wrong(distinct)/miss")
    for stage in STAGES:
        for t in THRESHOLDS:
            row: dict[str, Any] = {"stage": stage, "threshold": t}
            cells = []
            for name, js in sets.items():
                c = counts(js, stage, t)
                row[name] = c
                cells.append(f"R{c['right']:4d} W{c['wrong']:4d} M{c['miss']:4d} "
                             f"P{_f(c['precision'])} R{_f(c['recall'])}")  # fmt: skip
            r = retrieval_counts(ret, stage, t)
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
            "retrieval": retrieval_counts(ret, stage, t) if t else None,
        }
        log(f"operating point {stage}: threshold {t} -> {json.dumps(chosen[stage])}")

    pairs_for_timing = [(a, b) for a, b, _ in sources["traps"]]
    timing = time_verifier(store, verifiers["verifier"], pairs_for_timing)
    timing_long = time_verifier(
        store, verifiers["verifier"], [(s, o) for o, s, _ in sources["shared"][:300]]
    )
    log(f"second stage cost per candidate: questions {timing}, long statements {timing_long}")
    summary = {
        "target_precision": args.target_precision,
        "weights": str(args.weights or verify.DEFAULT_WEIGHTS),
        "lower_bound": Verifier(args.weights).lower_bound,
        "operating_points": chosen,
        "verify_cost": {"questions": timing, "statements": timing_long},
        "sweep": sweep,
    }
    print(json.dumps(summary))


def _f(x: float | None) -> str:
    return "  -  " if x is None else f"{x:.3f}"


if __name__ == "__main__":
    main()
