"""The uncertain band (LLM_VERIFY_BAND): what it costs and what it changes.

    python -m bench.llm_band [--band 0.0] [--shared 300] [--threads 1]

Runs the labelled pairs (bench/data/traps.jsonl and the first --shared pairs of the shared
paraphrase set) through the serving embedder and verifier at the pair model's operating
point (inference/models/pair-model.json, written by `bench.accuracy --calibrate`; cosine
0.8 and score 0.5 without one). The pairs the verifier refuses by its score alone with a
score >= --band ("doubtful", what the band would ask about) go to the LLM as the band's
yes/no question (`same_question`, as tasks/flow.py sends it). The LLM is the embedded
SmolLM2-135M (the only model that runs here); Ollama with a real model would be asked
the same.

Reports, on stdout as JSON: how many pairs are doubtful, how the LLM answered for pairs
that are / are not the same question, the traps served and the paraphrase recall with
and without the band, and the cost: latency of one yes/no question against a full answer
to the same question (--num-predict tokens) in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench.build_pairs import EmbeddingStore, load_labelled, load_shared
from cache.verify import Verifier, said_yes, same_question
from inference.embedded import DEFAULT_MODEL_NAME, EmbeddedLLM
from inference.pair_model import PairModel

ROOT = Path(__file__).resolve().parent.parent
TRAPS = ROOT / "bench" / "data" / "traps.jsonl"
DEFAULT_POINT = {"cosine": 0.8, "score": 0.5}  # without an operating point in the manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--band", type=float, default=0.0, help="lowest doubtful score (0.0)")
    parser.add_argument("--shared", type=int, default=300, help="shared-set pairs (300)")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1)")
    parser.add_argument("--num-predict", type=int, default=128, help="full answer (128)")
    args = parser.parse_args(argv)

    pair = PairModel()
    point = pair.manifest.get("operating_point", DEFAULT_POINT)
    threshold = float(point["cosine"])
    verifier = Verifier(pair.score, score_threshold=float(point["score"]))
    pairs = [(p["a"], p["b"], bool(p["same"])) for p in load_labelled(TRAPS)]
    pairs += [(o, s, True) for o, s in load_shared()[: args.shared]]
    store = EmbeddingStore()
    store.ensure(t for a, b, _ in pairs for t in (a, b))
    rows = []
    for a, b, same in pairs:
        cosine = store.cosine(a, b)
        if cosine < threshold:
            rows.append((same, False, False))
            continue
        verdict = verifier.verify(a, b, cosine)
        rows.append((same, verdict.accept, verifier.doubtful(verdict, args.band)))
    print(f"{sum(d for *_, d in rows)} doubtful of {len(rows)} pairs", file=sys.stderr)

    llm = EmbeddedLLM(n_threads=args.threads)
    llm.load()
    asked, yes = {True: 0, False: 0}, {True: 0, False: 0}
    band_ms: list[float] = []
    served = []
    for (a, b, _), (same, accept, doubtful) in zip(pairs, rows, strict=True):
        if doubtful:
            started = time.perf_counter()
            reply = llm.chat(DEFAULT_MODEL_NAME, *same_question(a, b)).content
            band_ms.append((time.perf_counter() - started) * 1000)
            asked[same] += 1
            yes[same] += said_yes(reply)
            accept = said_yes(reply)
        served.append((same, accept))

    full_ms = []
    for a, *_ in pairs[:5]:
        started = time.perf_counter()
        options = {"temperature": 0, "num_predict": args.num_predict}
        llm.chat(DEFAULT_MODEL_NAME, [{"role": "user", "content": a}], options)
        full_ms.append((time.perf_counter() - started) * 1000)

    def rates(decisions: list[tuple[bool, bool]]) -> dict[str, float]:
        negatives = [ok for same, ok in decisions if not same]
        positives = [ok for same, ok in decisions if same]
        return {
            "negatives_served": round(sum(negatives) / len(negatives), 4),
            "recall": round(sum(positives) / len(positives), 4),
        }

    band_p50 = statistics.median(band_ms) if band_ms else None
    full_p50 = statistics.median(full_ms)
    summary = {
        "llm": DEFAULT_MODEL_NAME,
        "band_from_score": args.band,
        "threshold": threshold,
        "score_threshold": verifier.score_threshold,
        "pairs": {"same": sum(s for s, *_ in rows), "different": sum(not s for s, *_ in rows)},
        "doubtful": {"same": asked[True], "different": asked[False]},
        "llm_said_yes": {"same": yes[True], "different": yes[False]},
        "without_band": rates([(s, a) for s, a, _ in rows]),
        "with_band": rates(served),
        "cost_ms": {
            "yes_no_p50": round(band_p50, 1) if band_p50 is not None else None,
            "full_answer_p50": round(full_p50, 1),
            "full_answer_num_predict": args.num_predict,
            "ratio": round(band_p50 / full_p50, 3) if band_p50 else None,
        },
    }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
