"""Train the second-stage verifier and write cache/verifier.json.

    python -m bench.train_verifier [--pairs var/verifier/pairs.jsonl] [--out cache/verifier.json]

1. Pairs come from bench/build_pairs.py (built first if missing), split by source pair.
2. Features come from cache.verify.features, the very code that serves.
3. Pairs vetoed by a hard guard are left out of the fit: the vetoes decide those
   alone, and the model spends its capacity on what the guards cannot see.
4. Two logistic regressions: "tokens" (with the MiniLM token alignment) and "text"
   (guards and cosine only, for callers without token vectors).
5. The acceptance threshold of each is chosen on out-of-fold predictions of the
   *train* split (grouped by source pair): the highest threshold that still keeps
   --keep-recall of the true paraphrases the guards let through. (A false-accept
   target was tried first: the generated long-statement near-misses are so close to
   the set's loose paraphrases that any low FPR target rejects most paraphrases.)
   The test split and the hand-written traps are only measured.

Weights are JSON (no pickle). Held-out metrics go to stderr and one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from bench.build_pairs import (
    DEFAULT_OUT,
    EmbeddingStore,
    build,
    load_labelled,
    load_shared,
    log,
)
from cache.verify import DEFAULT_WEIGHTS, features, run_guards

ROOT = Path(__file__).resolve().parent.parent
TRAPS = ROOT / "bench" / "data" / "traps.jsonl"
TOKEN_FEATURES = [
    "cosine", "align_min", "align_mean", "align_low", "align_low_frac", "novel_min",
    "one_for_one", "swap_score", "jaccard",
    "length_ratio", "content_len",
    "g_negation_soft", "g_negation_hard", "g_numbers_soft", "g_numbers_hard",
    "g_entities_soft", "g_entities_hard", "g_scope_soft", "g_scope_hard",
    "g_direction_soft", "g_direction_hard", "g_order_soft", "g_order_hard",
]  # fmt: skip
ALIGN_FEATURES = {"align_min", "align_mean", "align_low", "align_low_frac", "novel_min",
                  "one_for_one", "swap_score"}  # fmt: skip
TEXT_FEATURES = [f for f in TOKEN_FEATURES if f not in ALIGN_FEATURES]
# Generated swaps and scope changes of long statements are often not a different
# statement at all ("Pandas DataFrame" -> "DataFrame Pandas"): label noise. The
# guards judge those kinds; the model neither fits nor calibrates on them.
NOISY_KINDS = {"swap", "scope"}
# A paraphrase of a long statement with one word replaced is the hardest case and the
# rarest in a prompt cache; fitting on it made the model reject loose paraphrases.
# The minimal pairs ("_min" kinds) teach the same lesson without that cost.
NOT_FITTED = NOISY_KINDS | {"sibling", "substitute"}
DEFAULTS = {
    "lower_bound": 0.72,
    "align_bound": 0.45,
    "hard_guards": ["negation", "numbers", "entities", "direction", "order", "scope"],
    "keep_recall": 0.85,
    "C": 0.5,
}


class Featurised:
    """Feature rows plus the hard-guard veto of each pair."""

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        store: EmbeddingStore,
        align_bound: float,
        hard_guards: Sequence[str],
    ) -> None:
        self.rows = list(rows)
        self.cos = np.array([store.cosine(r["a"], r["b"]) for r in rows])
        self.y = np.array([bool(r["same"]) for r in rows])
        self.vetoed = np.zeros(len(rows), dtype=bool)
        feats = []
        for i, r in enumerate(rows):
            checks = run_guards(r["a"], r["b"])
            self.vetoed[i] = any(c.level == 2 and c.name in hard_guards for c in checks)
            feats.append(
                features(
                    r["a"],
                    r["b"],
                    self.cos[i],
                    store.tokens[r["a"]],
                    store.tokens[r["b"]],
                    align_bound,
                    checks,
                )
            )
        self.feats = feats

    def matrix(self, names: Sequence[str]) -> np.ndarray:
        return np.array([[f.get(n, 0.0) for n in names] for f in self.feats])


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> dict[str, Any]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit((x - mean) / scale, y)
    return {
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "coef": model.coef_[0].tolist(),
        "intercept": float(model.intercept_[0]),
    }


def _predict(params: dict[str, Any], x: np.ndarray) -> np.ndarray:
    z = (x - np.array(params["mean"])) / np.array(params["scale"]) @ np.array(params["coef"])
    return 1.0 / (1.0 + np.exp(-(z + params["intercept"])))


def _threshold(scores: np.ndarray, keep_recall: float) -> float:
    """Highest threshold that accepts `keep_recall` of the given positive scores."""
    return float(np.quantile(scores, 1.0 - keep_recall))


def _groups(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(r["group"], len(ids)) for r in rows])


def train(
    data: Featurised, names: Sequence[str], lower_bound: float, keep_recall: float, c: float
) -> dict[str, Any]:
    """Fit on the train split (cosine >= bound, not vetoed); threshold from out-of-fold."""
    use = np.array([r["split"] == "train" and r["kind"] not in NOT_FITTED for r in data.rows])
    use &= (data.cos >= lower_bound - 0.05) & ~data.vetoed
    x, y = data.matrix(names)[use], data.y[use]
    groups = _groups([r for r, u in zip(data.rows, use, strict=True) if u])
    oof = np.zeros(len(y))
    for fit_idx, val_idx in GroupKFold(n_splits=5).split(x, y, groups):
        oof[val_idx] = _predict(_fit(x[fit_idx], y[fit_idx], c), x[val_idx])
    kinds = np.array([r["kind"] for r, u in zip(data.rows, use, strict=True) if u])
    paraphrases = (data.cos[use] >= lower_bound) & (kinds == "paraphrase")
    threshold = _threshold(oof[paraphrases], keep_recall)
    params = _fit(x, y, c)
    return {"features": list(names), **params, "threshold": round(threshold, 6)}


def decide(
    data: Featurised, params: dict[str, Any], lower_bound: float, use_model: bool = True
) -> np.ndarray:
    accept = (data.cos >= lower_bound) & ~data.vetoed
    if use_model:
        scores = _predict(params, data.matrix(params["features"]))
        accept &= scores >= params["threshold"]
    return accept


def report(name: str, data: Featurised, accept: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """Per-kind served rates and precision/recall over the masked rows."""
    kinds: dict[str, list[int]] = defaultdict(list)
    for i in np.flatnonzero(mask):
        kinds[data.rows[i].get("kind", "same" if data.y[i] else "different")].append(i)
    y, acc = data.y[mask], accept[mask]
    tp, fp = int((acc & y).sum()), int((acc & ~y).sum())
    out = {
        "pairs": int(mask.sum()),
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / int(y.sum()), 4) if y.sum() else None,
        "negatives_served": round(fp / int((~y).sum()), 4) if (~y).sum() else None,
        "served_by_kind": {k: round(float(accept[v].mean()), 4) for k, v in sorted(kinds.items())},
    }
    log(f"{name}: {json.dumps(out)}")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--lower-bound", type=float, default=DEFAULTS["lower_bound"])
    parser.add_argument("--align-bound", type=float, default=DEFAULTS["align_bound"])
    parser.add_argument("--keep-recall", type=float, default=DEFAULTS["keep_recall"])
    parser.add_argument("--C", type=float, default=DEFAULTS["C"])
    parser.add_argument("--hard-guards", default=",".join(DEFAULTS["hard_guards"]))
    parser.add_argument("--dry-run", action="store_true", help="do not write weights")
    args = parser.parse_args(argv)
    hard = [g for g in args.hard_guards.split(",") if g]

    store = EmbeddingStore()
    if not args.pairs.exists():
        rows = [p.as_dict() for p in build(load_shared(), store)]
        args.pairs.parent.mkdir(parents=True, exist_ok=True)
        args.pairs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    rows = load_labelled(args.pairs)
    traps = load_labelled(TRAPS)
    store.ensure(t for r in rows + traps for t in (r["a"], r["b"]))
    log(f"featurising {len(rows)} pairs")
    data = Featurised(rows, store, args.align_bound, hard)
    trap_data = Featurised(traps, store, args.align_bound, hard)

    models = {}
    for name, names in (("tokens", TOKEN_FEATURES), ("text", TEXT_FEATURES)):
        models[name] = train(data, names, args.lower_bound, args.keep_recall, args.C)
        coefs = dict(zip(names, np.round(models[name]["coef"], 3), strict=True))
        log(f"{name}: threshold {models[name]['threshold']:.3f} coef {coefs}")

    test = np.array([r["split"] == "test" for r in rows])
    everything = np.ones(len(traps), dtype=bool)
    held_out: dict[str, Any] = {}
    for label, params, use_model in (
        ("cosine_only", models["tokens"], False),
        ("guards+tokens", models["tokens"], True),
        ("guards+text", models["text"], True),
    ):
        if label == "cosine_only":
            acc = data.cos >= args.lower_bound
            acc_t = trap_data.cos >= args.lower_bound
        else:
            acc = decide(data, params, args.lower_bound, use_model)
            acc_t = decide(trap_data, params, args.lower_bound, use_model)
        held_out[label] = {
            "shared_test": report(f"{label} shared test split", data, acc, test),
            "traps": report(f"{label} traps", trap_data, acc_t, everything),
        }

    weights = {
        "version": 1,
        "lower_bound": args.lower_bound,
        "align_bound": args.align_bound,
        "hard_guards": hard,
        "models": models,
        "trained": {
            "date": dt.date.today().isoformat(),
            "pairs": args.pairs.name,
            "train_pairs": int((~test).sum()),
            "test_pairs": int(test.sum()),
            "keep_recall": args.keep_recall,
            "C": args.C,
            "held_out": {k: v["shared_test"] for k, v in held_out.items()},
        },
    }
    if not args.dry_run:
        args.out.write_text(json.dumps(weights, indent=1) + "\n", encoding="utf-8")
        log(f"wrote {args.out}")
    print(json.dumps({"held_out": held_out, "thresholds": {
        k: m["threshold"] for k, m in models.items()}}))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
