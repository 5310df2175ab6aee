"""Semantic-hit latency end to end, unloaded and under load, against an exact hit in the
same run (its baseline). Floor: semantic p50 <= 10 ms unloaded.

Seeds the cache with the first questions of ../shared/data/paraphrase_pairs.json, then
asks their paraphrases (each one new: a semantic lookup, not an exact alias) and the
original questions again (exact hits), one at a time and then from concurrent clients.
A paraphrase the verifier refuses is a miss: those are counted and left out of the
semantic latencies.

    python -m bench.semantic [--pairs 300] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.common import bench_stack, exit_on_sigterm, log, machine, percentile, rounded

PAIRS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "paraphrase_pairs.json"


def _timed(session: requests.Session, url: str, headers: dict, prompt: str) -> tuple[str, float]:
    started = time.perf_counter()
    resp = session.post(f"{url}/api/v1/chat", json={"prompt": prompt}, headers=headers, timeout=60)
    elapsed_ms = (time.perf_counter() - started) * 1000
    resp.raise_for_status()
    return resp.json()["cache"]["status"], elapsed_ms


def _run(url: str, headers: dict, prompts: list[str], concurrency: int) -> list[tuple[str, float]]:
    sessions = [requests.Session() for _ in range(concurrency)]
    with ThreadPoolExecutor(concurrency) as pool:
        futures = [
            pool.submit(_timed, sessions[i % concurrency], url, headers, p)
            for i, p in enumerate(prompts)
        ]
        return [f.result() for f in futures]


def _summary(results: list[tuple[str, float]], status: str) -> dict:
    times = sorted(ms for s, ms in results if s == status)
    return {
        "n": len(times),
        "p50_ms": rounded(percentile(times, 50)),
        "p95_ms": rounded(percentile(times, 95)),
        "statuses": {s: sum(1 for r, _ in results if r == s) for s in {r for r, _ in results}},
    }


def run(args: argparse.Namespace) -> dict:
    pairs = json.loads(PAIRS.read_text())[: args.pairs]
    half = len(pairs) // 2
    with bench_stack(lease_ms=10000) as bench:
        bench.stack.start_default()
        url, headers = bench.stack.url, bench.headers
        log(f"seeding {len(pairs)} questions")
        _run(url, headers, [p["origin"] for p in pairs], concurrency=8)
        calls_after_seed = bench.standin.calls()["chat"]

        log("unloaded: one request at a time")
        semantic_1 = _run(url, headers, [p["similar"] for p in pairs[:half]], concurrency=1)
        exact_1 = _run(url, headers, [p["origin"] for p in pairs[:half]], concurrency=1)
        log(f"under load: {args.concurrency} concurrent clients")
        semantic_n = _run(url, headers, [p["similar"] for p in pairs[half:]], args.concurrency)
        exact_n = _run(url, headers, [p["origin"] for p in pairs[half:]], args.concurrency)

    unloaded = {"semantic": _summary(semantic_1, "semantic"), "exact": _summary(exact_1, "exact")}
    loaded = {"semantic": _summary(semantic_n, "semantic"), "exact": _summary(exact_n, "exact")}

    def ratio(part: dict) -> float | None:
        s, e = part["semantic"]["p50_ms"], part["exact"]["p50_ms"]
        return rounded(s / e, 2) if s and e else None

    p50 = unloaded["semantic"]["p50_ms"]
    return {
        "pairs": len(pairs),
        "seeded_llm_calls": calls_after_seed,
        "unloaded": unloaded,
        "under_load": {"concurrency": args.concurrency, **loaded},
        "ratios": {
            "semantic_over_exact_p50_unloaded": ratio(unloaded),
            "semantic_over_exact_p50_loaded": ratio(loaded),
        },  # fmt: skip
        "floors": {"semantic_p50_unloaded_ms<=10": "ok" if p50 and p50 <= 10 else "missed"},
        "machine": machine(),
        "ok": bool(p50 and p50 <= 10),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=300, help="paraphrase pairs (default 300)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients under load")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    summary = run(args)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
