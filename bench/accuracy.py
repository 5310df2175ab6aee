"""Semantic accuracy: how often the cache serves the answer of the same question, of a
different one, or none; the cosine first stage alone and with the second stage.

    python -m bench.accuracy [--target-precision 0.95] [--quick] [--calibrate]

A pair (query, cached prompt) is *served* when its cosine (the serving MiniLM embedder,
vectors cached in var/verifier/) is >= the cosine threshold and the stage accepts:
`cosine` (nothing more), `guards` (the verifier at score threshold 0: identical texts
accepted; language and window refusals; the hard guards' vetoes) or `verifier` (the full
second stage: the pair model's P(same) >= the score threshold; one thread, memoised).

Sets: the public question pairs (bench/qqp.py, split by question component: the operating
point is chosen on `val` only, `test` is only reported); bench/data/traps.jsonl;
bench/data/nearmiss.jsonl (`tune` and `holdout` reported apart, per kind; neither chooses
anything); bench/data/nearmiss_blind.jsonl, nearmiss_blind2.jsonl and nearmiss_blind3.jsonl
(written by readers blind to the code and to the other sets: report only); 160 val candidate
pairs (cosine >= 0.80, no guard veto) labelled again by one reader blind to the public label
and to every score (bench/data/QQP_REREAD.md): precision at the point by either label set;
retrieval on the shared paraphrase set: every first question indexed, each paraphrase gets
its K=3 nearest and `Verifier.choose` serves one (right: its own entry).
Questions that differ only in made-up lowercase words (generated, seed fixed; never the
same question): how many the pair model accepts on its own and how many are served.
`--both-orders` scores each pair in both orders and takes the mean (not what the cache
does: a measurement of what the second pass would buy).

Operating point: over a grid of cosine x score thresholds, the highest QQP val recall at
precision >= --target-precision (0.90 when out of reach). Reported there and at the
baseline (cosine 0.80, no second stage) with the floors, the val P/R curves and the cost
of the second stage per lookup (`Verifier.choose`, real model, one thread, text caches
cleared: p50/p99 ms). --calibrate writes the point and the val error curve (wrong share
among the pairs the verifier accepts, per score threshold, non-increasing) into
inference/models/pair-model.json for cache/audit.py. --quick subsamples (under 2 minutes).

The table goes to stderr; stdout gets one JSON summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import qqp
from bench.build_pairs import EmbeddingStore, load_labelled, load_shared, normalise
from cache.verify import Option, PairScorer, Verifier, comparable, foreign
from cache.verify.text import analyse, without_fillers
from inference.pair_model import MODEL_DIR, PairModel

ROOT = Path(__file__).resolve().parent.parent
TRAPS = ROOT / "bench" / "data" / "traps.jsonl"
NEARMISS = ROOT / "bench" / "data" / "nearmiss.jsonl"
NEARMISS_BLIND = ROOT / "bench" / "data" / "nearmiss_blind.jsonl"
NEARMISS_BLIND2 = ROOT / "bench" / "data" / "nearmiss_blind2.jsonl"
NEARMISS_BLIND3 = ROOT / "bench" / "data" / "nearmiss_blind3.jsonl"
REREAD = ROOT / "bench" / "data" / "qqp_val_reread.jsonl"
K = 3  # candidates per lookup, as the answer task asks the index for
BASELINE = 0.80  # SEMANTIC_THRESHOLD before the second stage
COSINES = [round(0.70 + 0.025 * i, 3) for i in range(9)]  # 0.70 .. 0.90
SCORES = [round(0.05 + 0.01 * i, 2) for i in range(95)]  # 0.05 .. 0.99
CURVE_SCORES = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
FALLBACK_PRECISION = 0.90
NEARMISS_SETS = (
    "nearmiss_tune",
    "nearmiss_holdout",
    "nearmiss_blind",
    "nearmiss_blind2",
    "nearmiss_blind3",
)
MIN_SUPPORT = 30  # served val pairs an operating or calibration point needs


@dataclass(frozen=True)
class Sizes:
    """How much of each set a run takes (None: all); `cost`: lookups timed."""

    val: int | None
    test: int | None
    retrieval: int | None
    cost: int


QUICK = Sizes(val=800, test=800, retrieval=200, cost=100)
FULL = Sizes(val=None, test=None, retrieval=None, cost=500)


Row = tuple[str, str, bool, str]  # a, b, same, kind


def log(message: str = "") -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Judged:
    """A set of pairs judged once: cosine, label, the verifier's verdict at score
    threshold 0 (`ok`: not refused before the score) and its score (1 for identical
    texts, 0 when refused). Every stage and threshold is read off these."""

    cosine: np.ndarray
    same: np.ndarray
    ok: np.ndarray
    score: np.ndarray
    kind: list[str]

    def served(self, stage: str, t_cos: float, t_score: float = 0.0) -> np.ndarray:
        above = self.cosine >= t_cos
        if stage == "cosine":
            return above
        if stage == "guards":
            return above & self.ok
        return above & self.ok & (self.score >= t_score)

    def rates(self, stage: str, t_cos: float, t_score: float = 0.0) -> dict[str, Any]:
        served = self.served(stage, t_cos, t_score)
        right, wrong = int((served & self.same).sum()), int((served & ~self.same).sum())
        pos, neg = int(self.same.sum()), int((~self.same).sum())
        return {
            "precision": round(right / (right + wrong), 4) if right + wrong else None,
            "recall": round(right / pos, 4) if pos else None,
            "negatives_served": round(wrong / neg, 4) if neg else None,
            "right": right,
            "wrong": wrong,
        }

    def per_kind(self, stage: str, t_cos: float, t_score: float = 0.0) -> dict[str, list[int]]:
        """kind -> [served, pairs]. A kind holding both labels (long_instruction) is split
        into `<kind>_same` and `<kind>_different`, so that a count is always of one label."""
        served = self.served(stage, t_cos, t_score)
        kinds = np.array(self.kind)
        out = {}
        for k in sorted(set(self.kind)):
            labels = sorted(set(self.same[kinds == k].tolist()))
            for label in labels:
                rows = (kinds == k) & (self.same == label)
                name = k if len(labels) == 1 else f"{k}_{'same' if label else 'different'}"
                out[name] = [int(served[rows].sum()), int(rows.sum())]
        return out


def scored(score: PairScorer, both_orders: bool) -> PairScorer:
    """`score` (the query first), or with `both_orders` the mean of both orders."""
    if not both_orders:
        return score

    def mean(a: str, b: str) -> float | None:
        first, second = score(a, b), score(b, a)
        return None if first is None or second is None else (first + second) / 2

    return mean


class Judge:
    """The verifier at score threshold 0 over a memoised pair model; pairs below the
    lowest cosine of the grid are never judged."""

    def __init__(self, store: EmbeddingStore, pair: PairModel, both_orders: bool = False) -> None:
        self.store, self.pair = store, pair
        self.memo: dict[tuple[str, str], float | None] = {}
        self.score = scored(self.one, both_orders)
        self.verifier = Verifier(self.score, score_threshold=0.0)

    def one(self, a: str, b: str) -> float | None:
        if (a, b) not in self.memo:
            self.memo[(a, b)] = self.pair.score(a, b)
        return self.memo[(a, b)]

    def pairs(self, rows: Sequence[Row]) -> Judged:
        self.store.ensure(t for a, b, _, _ in rows for t in (a, b))
        cos = np.array([self.store.cosine(a, b) for a, b, _, _ in rows])
        verdicts = [
            self.verifier.verify(a, b, c) if c >= COSINES[0] else None
            for (a, b, _, _), c in zip(rows, cos, strict=True)
        ]
        return Judged(
            cosine=cos,
            same=np.array([r[2] for r in rows], dtype=bool),
            ok=np.array([v is not None and v.accept for v in verdicts], dtype=bool),
            score=np.array([v.score if v is not None else 0.0 for v in verdicts]),
            kind=[r[3] for r in rows],
        )


MADE_UP_TEMPLATES = (
    "Who invented the {} and why is it {}?",
    "How do I clean a {} that smells {}?",
    "What is the best {} for a {} beginner?",
    "Why is the {} so {}?",
    "Where can I buy a {} near {}?",
)


def made_up_rows(n: int = 200, seed: int = 11) -> dict[str, list[Row]]:
    """Questions that differ only in made-up lowercase words (never the same question): one
    word changed (the other slot holds "big"), or both."""
    rng = random.Random(seed)

    def word() -> str:
        return "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(4))

    out: dict[str, list[Row]] = {}
    for changed in (1, 2):
        rows: list[Row] = []
        for i in range(n):
            t = MADE_UP_TEMPLATES[i % len(MADE_UP_TEMPLATES)]
            second = (word(), word()) if changed == 2 else ("big", "big")
            a, b = t.format(word(), second[0]), t.format(word(), second[1])
            rows.append((a, b, False, "made_up"))
        out[f"made_up_{changed}"] = rows
    return out


def made_up(judge: Judge, t_cos: float, t_score: float) -> dict[str, Any]:
    """Per set: pairs, how many the pair model accepts on its own (no cosine, no guard),
    how many the second stage serves (cosine >= t_cos, guards, pair model), the cosine's
    p50."""
    out: dict[str, Any] = {}
    for name, rows in made_up_rows().items():
        js = judge.pairs(rows)
        out[name] = {
            "pairs": len(rows),
            "pair_model_accepts": sum((judge.score(a, b) or 0.0) >= t_score for a, b, _, _ in rows),
            "served": int(js.served("verifier", t_cos, t_score).sum()),
            "cosine_p50": round(float(np.median(js.cosine)), 3),
        }
    return out


def choose_point(val: Judged, target: float) -> tuple[float, float, float]:
    """(cosine, score, precision goal): the highest val recall at precision >= target among
    grid points serving >= MIN_SUPPORT pairs; failing that at FALLBACK_PRECISION; failing
    that, the most precise point (its precision is then the goal returned)."""
    points = []
    for c in COSINES:
        for s in SCORES:
            r = val.rates("verifier", c, s)
            if r["right"] + r["wrong"] >= MIN_SUPPORT:
                points.append((r["recall"], r["precision"], c, s))
    for goal in (target, FALLBACK_PRECISION):
        reached = [p for p in points if p[1] >= goal]
        if reached:
            return *max(reached)[2:], goal
    best = max(points, key=lambda p: (p[1], p[0]))
    return best[2], best[3], best[1]


def curves(val: Judged) -> dict[str, Any]:
    """Val precision/recall per cosine threshold: [P, R] for cosine and guards,
    [[score threshold, P, R], ...] for the verifier."""

    def pr(stage: str, c: float, s: float = 0.0) -> list[float | None]:
        r = val.rates(stage, c, s)
        return [r["precision"], r["recall"]]

    return {
        "cosine": {f"{c:.3f}": pr("cosine", c) for c in COSINES},
        "guards": {f"{c:.3f}": pr("guards", c) for c in COSINES},
        "verifier": {
            f"{c:.3f}": [[s, *pr("verifier", c, s)] for s in CURVE_SCORES] for c in COSINES
        },
    }


def calibration(val: Judged, t_cos: float) -> dict[str, Any]:
    """error[i]: share of wrong pairs among the val pairs with cosine >= t_cos that the
    verifier accepts at thresholds[i], replaced by the max over higher thresholds so that it
    never increases with the threshold (cache/audit.py's Calibration). Thresholds that
    accept fewer than MIN_SUPPORT pairs are left out: their error is noise."""
    thresholds, raw = [], []
    for s in SCORES:
        served = val.served("verifier", t_cos, s)
        if served.sum() >= MIN_SUPPORT:
            thresholds.append(s)
            raw.append(float((served & ~val.same).sum() / served.sum()))
    error = [round(max(raw[i:]), 4) for i in range(len(raw))]
    return {"cosine": t_cos, "thresholds": thresholds, "error": error}


def retrieval(
    judge: Judge, pairs: Sequence[tuple[str, str]], stage: str, t_cos: float, t_score: float
) -> dict[str, float]:
    """Share of paraphrase queries served their own entry (right), another (wrong), none."""
    origins = list({normalise(o): o for o, _ in load_shared()}.values())
    matrix = np.stack([judge.store.sent[o] for o in origins])
    outcome = {"right": 0, "wrong": 0, "miss": 0}
    for truth, query in pairs:
        sims = matrix @ judge.store.sent[query]
        options = [Option(origins[i], float(sims[i])) for i in np.argsort(-sims)[:K]]
        if stage == "cosine":
            picked = options[0].text if options[0].similarity >= t_cos else None
        else:
            bound = 0.0 if stage == "guards" else t_score
            chosen = judge.verifier.choose(query, options, threshold=t_cos, score_threshold=bound)
            picked = chosen[0].text if chosen else None
        if picked is None:
            outcome["miss"] += 1
        else:
            outcome["right" if normalise(picked) == normalise(truth) else "wrong"] += 1
    return {k: round(v / len(pairs), 4) for k, v in outcome.items()}


def cost(
    store: EmbeddingStore,
    pair: PairModel,
    texts: list[str],
    t_cos: float,
    t_score: float,
    n: int,
    both_orders: bool = False,
) -> dict[str, Any]:
    """ms per `Verifier.choose` (guards + pair model on every candidate it judges) over
    lookups of QQP val questions into an index of the others, for lookups with a candidate
    >= t_cos. The text-analysis caches are cleared first: nothing is warm."""
    calls = 0

    def counted(a: str, b: str) -> float | None:
        nonlocal calls
        calls += 1
        return pair.score(a, b)

    verifier = Verifier(scored(counted, both_orders), score_threshold=t_score)
    matrix = np.stack([store.sent[t] for t in texts])
    times = []
    for query in random.Random(1).sample(texts, len(texts)):
        sims = matrix @ store.sent[query]
        top = [int(i) for i in np.argsort(-sims)[: K + 1] if texts[i] != query][:K]
        if sims[top[0]] < t_cos:
            continue
        for cached in (analyse, comparable, foreign, without_fillers):
            cached.cache_clear()
        started = time.perf_counter()
        verifier.choose(query, [Option(texts[i], float(sims[i])) for i in top], threshold=t_cos)
        times.append((time.perf_counter() - started) * 1000)
        if len(times) >= n:
            break
    return {
        "lookups": len(times),
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p99_ms": round(float(np.percentile(times, 99)), 2),
        "pair_model_calls_per_lookup": round(calls / len(times), 2),
    }


def calibrate(model_dir: Path, point: dict[str, Any], calib: dict[str, Any]) -> None:
    """Read-modify-write of the manifest; number lists kept on one line."""
    path = model_dir / "pair-model.json"
    manifest = json.loads(path.read_text())
    manifest |= {"operating_point": point, "calibration": calib}
    text = json.dumps(manifest, indent=2)
    text = re.sub(r"\[\s+([-0-9.,\s]+?)\s+\]", lambda m: f"[{' '.join(m[1].split())}]", text)
    path.write_text(text + "\n")
    log(f"wrote the operating point and calibration into {path}")


def report(sets: dict[str, Judged], stage: str, t_cos: float, t_score: float) -> dict[str, Any]:
    out: dict[str, Any] = {name: js.rates(stage, t_cos, t_score) for name, js in sets.items()}
    for name in NEARMISS_SETS:
        out[name]["per_kind"] = sets[name].per_kind(stage, t_cos, t_score)
    return out


def _f(x: float | None) -> str:
    return "  -  " if x is None else f"{x:.3f}"


def table(name: str, rows: dict[str, Any]) -> None:
    log(f"{name}:")
    for set_name, r in rows.items():
        if set_name == "retrieval":
            cells = f"right {r['right']:.3f}  wrong {r['wrong']:.3f}  miss {r['miss']:.3f}"
        else:
            cells = (
                f"P {_f(r['precision'])}  R {_f(r['recall'])}  "
                f"negatives served {_f(r['negatives_served'])}  "
                f"(right {r['right']}, wrong {r['wrong']})"
            )
        log(f"  {set_name:18s} {cells}")


def pair_id(a: str, b: str) -> str:
    return hashlib.sha256(f"{qqp.key(a)}\n{qqp.key(b)}".encode()).hexdigest()[:16]


def reread(rows: Sequence[Row], val: Judged, t_cos: float, t_score: float) -> dict[str, Any]:
    """Precision at the point on the val pairs labelled again (REREAD), by the public labels
    and by the reader's; `agree`: share of those pairs where the two labels agree."""
    with open(REREAD, encoding="utf-8") as fh:
        labels = {r["pair"]: bool(r["same"]) for r in map(json.loads, fh)}
    ids = [pair_id(a, b) for a, b, _, _ in rows]
    idx = [i for i, pid in enumerate(ids) if pid in labels]
    if not idx:
        return {"pairs": 0}
    served = val.served("verifier", t_cos, t_score)[idx]
    public = val.same[idx]
    reader = np.array([labels[ids[i]] for i in idx])

    def precision(labels_: np.ndarray) -> float | None:
        return round(float(labels_[served].mean()), 3) if served.any() else None

    return {
        "pairs": len(idx),
        "served": int(served.sum()),
        "agree": round(float((public == reader).mean()), 3),
        "precision_public_labels": precision(public),
        "precision_reread_labels": precision(reader),
    }


def floors(at: dict[str, Any], lookup: dict[str, Any]) -> dict[str, bool]:
    val, traps = at["qqp_val"], at["traps"]
    nearmiss = max(at[n]["negatives_served"] for n in NEARMISS_SETS)
    return {
        "val_precision>=0.90_at_recall>=0.50": (val["precision"] or 0.0) >= 0.90
        and val["recall"] >= 0.50,
        "traps_served<=2%_at_recall>=0.85": traps["negatives_served"] <= 0.02
        and traps["recall"] >= 0.85,
        "nearmiss_served<=3%": nearmiss <= 0.03,
        "second_stage_p50<=8ms": lookup["p50_ms"] <= 8.0,
    }


def load_rows(size: Sizes) -> tuple[dict[str, list[Row]], list[qqp.Pair]]:
    """The labelled sets by name, and the QQP val pairs they hold."""
    split = qqp.by_split(qqp.load())

    def sample(pairs: list[qqp.Pair], n: int | None) -> list[qqp.Pair]:
        return pairs if n is None else random.Random(0).sample(pairs, min(n, len(pairs)))

    val, test = sample(split["val"], size.val), sample(split["test"], size.test)
    nearmiss = load_labelled(NEARMISS)

    def labelled(records: list[dict[str, Any]]) -> list[Row]:
        return [(r["a"], r["b"], bool(r["same"]), r["kind"]) for r in records]

    return {
        "qqp_val": [(p.a, p.b, p.same, p.kind) for p in val],
        "qqp_test": [(p.a, p.b, p.same, p.kind) for p in test],
        "traps": labelled(load_labelled(TRAPS)),
        "nearmiss_tune": labelled([r for r in nearmiss if r["split"] == "tune"]),
        "nearmiss_holdout": labelled([r for r in nearmiss if r["split"] == "holdout"]),
        "nearmiss_blind": labelled(load_labelled(NEARMISS_BLIND)),
        "nearmiss_blind2": labelled(load_labelled(NEARMISS_BLIND2)),
        "nearmiss_blind3": labelled(load_labelled(NEARMISS_BLIND3)),
    }, val


def show_curves(curve: dict[str, Any]) -> None:
    head = " ".join(f"s>={s:<11}" for s in CURVE_SCORES)
    log(f"QQP val P/R   {'cosine':12s} {'guards':12s} verifier at {head}")
    for c, points in curve["verifier"].items():
        cells = [curve["cosine"][c], curve["guards"][c], *([p, r] for _, p, r in points)]
        log(f"cosine {c}  " + " ".join(f"{_f(p)}/{_f(r)}" for p, r in cells))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument("--quick", action="store_true", help="subsample QQP and retrieval")
    parser.add_argument("--calibrate", action="store_true", help="write into the manifest")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR, help="the pair model")
    parser.add_argument(
        "--both-orders", action="store_true", help="score pairs in both orders (mean)"
    )
    parser.add_argument(
        "--at",
        type=float,
        nargs=2,
        metavar=("COSINE", "SCORE"),
        help="report (and calibrate) at this point instead of choosing one",
    )
    args = parser.parse_args(argv)
    if args.quick and args.calibrate:
        parser.error("--calibrate needs the full val split, not --quick")
    size = QUICK if args.quick else FULL
    started = time.process_time()

    rows, val = load_rows(size)
    shared = load_shared()[: size.retrieval]
    store, pair = EmbeddingStore(), PairModel(args.model_dir)
    judge = Judge(store, pair, both_orders=args.both_orders)
    store.ensure(t for p in load_shared() for t in p)
    sets = {name: judge.pairs(r) for name, r in rows.items()}
    log(f"judged {sum(len(r) for r in rows.values())} pairs, {len(judge.memo)} pair-model scores")

    curve = curves(sets["qqp_val"])
    show_curves(curve)
    t_cos, t_score, goal = choose_point(sets["qqp_val"], args.target_precision)
    if args.at:
        t_cos, t_score = args.at
        goal = sets["qqp_val"].rates("verifier", t_cos, t_score)["precision"]
    if goal != args.target_precision:
        log(f"precision {args.target_precision} out of reach on val: fell back to {goal}")
    log(f"operating point: cosine {t_cos}, score {t_score}")
    point = {"cosine": t_cos, "score": t_score, "target_precision": goal}
    baseline = report(sets, "cosine", BASELINE, 0.0)
    baseline["retrieval"] = retrieval(judge, shared, "cosine", BASELINE, 0.0)
    table(f"baseline: cosine {BASELINE}, no second stage", baseline)
    chosen = {}
    for stage in ("cosine", "guards", "verifier"):
        chosen[stage] = report(sets, stage, t_cos, t_score)
        chosen[stage]["retrieval"] = retrieval(judge, shared, stage, t_cos, t_score)
        extra = f", score {t_score}" if stage == "verifier" else ""
        table(f"{stage} at cosine {t_cos}{extra}", chosen[stage])

    reread_at = reread(rows["qqp_val"], sets["qqp_val"], t_cos, t_score)
    log(f"val pairs labelled again: {reread_at}")
    made = made_up(judge, t_cos, t_score)
    log(f"questions differing only in made-up words: {made}")
    texts = list(dict.fromkeys(t for p in val for t in (p.a, p.b)))
    lookup = cost(store, pair, texts, t_cos, t_score, size.cost, args.both_orders)
    log(f"second stage per lookup: {lookup}")
    calib = calibration(sets["qqp_val"], t_cos)
    passed = floors(chosen["verifier"], lookup)
    log(f"floors: {passed}")
    if args.calibrate:
        calibrate(args.model_dir, point, calib)
    summary = {
        "quick": args.quick,
        "pair_model": f"{pair.name} ({pair.manifest.get('checkpoint', '?')})",
        "sizes": {name: len(r) for name, r in rows.items()} | {"retrieval": len(shared)},
        "target_precision": args.target_precision,
        "fell_back": goal != args.target_precision,
        "operating_point": point,
        "at_operating_point": chosen,
        "baseline_cosine_0.80": baseline,
        "val_reread": reread_at,
        "made_up_words": made,
        "both_orders": args.both_orders,
        "second_stage_cost": lookup,
        "floors": passed,
        "val_curves": curve,
        "calibration": calib,
        "cpu_seconds": round(time.process_time() - started, 1),
    }
    print(json.dumps(summary, separators=(",", ":")))
    return 0 if all(passed.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
