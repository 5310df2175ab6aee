"""Speed and agreement of the two MiniLM embedders: torch (sentence-transformers) vs ONNX int8.

    python -m bench.embed_speed [--rounds 3] [--threads 1] [--cache-dir var/onnx]

Prints one JSON object: milliseconds per sentence for single-sentence calls (p50/p95 over
SAMPLE_SENTENCES x rounds) and for one call with a batch of 32, for both paths, the torch/ONNX
ratios, and the minimum cosine between the two paths over the sample. Both paths get the same
thread budget (default 1, as in a Celery child). Calls alternate between the paths so that
other load on the machine slows both alike; the load average is reported alongside.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from inference.embeddings import DEFAULT_CACHE_DIR, OnnxEmbedder, SentenceTransformerEmbedder

_LONG = (
    "Caching responses from large language models is attractive because the same questions "
    "come back again and again, often phrased slightly differently. An exact cache keyed on "
    "the normalised prompt catches verbatim repeats, while a semantic cache compares sentence "
    "embeddings and serves a stored answer when a new prompt is close enough to an old one. "
)

# Varied on purpose: questions, one-word and punctuation-only inputs, code, several scripts,
# emoji (which the vocabulary maps to [UNK]) and two texts longer than the 256-token limit.
SAMPLE_SENTENCES = [
    "What is the capital of France?",
    "Which city is the capital of France?",
    "How do I reverse a list in Python?",
    "What's the best way to reverse a Python list?",
    "hi",
    "ok",
    "Thanks!",
    "?",
    "!!!???...",
    "Explain quantum entanglement to a ten-year-old.",
    "Write a haiku about autumn leaves falling on a quiet pond.",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    "def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "Error: connection refused (ECONNREFUSED) at 127.0.0.1:11434",
    "The weather in Paris is lovely in the spring.",
    "My cat knocked a glass of water off the table this morning.",
    "Can you summarise the plot of Hamlet in three sentences?",
    "Translate 'good morning' into Japanese.",
    "Wie spät ist es in Berlin?",
    "¿Dónde está la biblioteca más cercana?",
    "Quelle est la différence entre un cache et une base de données ?",
    "これは日本語の文です。",
    "Как приготовить борщ?",
    "今天天气怎么样？",
    "مرحبا، كيف حالك؟",
    "🙂 👍 🚀",
    "e = mc^2, F = ma, and PV = nRT are famous equations.",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10",
    "Is it safe to eat raw cookie dough?",
    "Give me 5 ideas for a birthday party for a 7 year old.",
    "The stock market fell sharply on Tuesday after the interest rate announcement.",
    "Recommend a good science-fiction novel — something like Dune, but shorter.",
    "   leading and trailing whitespace   ",
    "ALL CAPS QUESTION: WHY IS THE SKY BLUE?",
    _LONG * 6,
    ("word " * 400).strip(),
]


def _ms(samples: Sequence[float], q: float) -> float:
    return round(float(np.percentile(samples, q)) * 1000, 3)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="passes over the sample")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR))
    args = parser.parse_args()

    started = time.perf_counter()
    onnx = OnnxEmbedder(cache_dir=args.cache_dir, intra_op_num_threads=args.threads)
    onnx_load_s = time.perf_counter() - started
    started = time.perf_counter()
    torch_path = SentenceTransformerEmbedder(num_threads=args.threads)
    torch_load_s = time.perf_counter() - started
    paths = {"torch": torch_path, "onnx_int8": onnx}

    for embedder in paths.values():  # warm-up: first calls allocate and pick kernels
        embedder.embed(SAMPLE_SENTENCES[:8])

    single: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for sentence in SAMPLE_SENTENCES:
            for name, embedder in paths.items():
                single[name].append(_timed(lambda e=embedder, s=sentence: e.embed([s])))

    batch = SAMPLE_SENTENCES[:32]
    batched: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, embedder in paths.items():
            batched[name].append(_timed(lambda e=embedder: e.embed(batch)) / len(batch))

    cosines = (torch_path.embed(SAMPLE_SENTENCES) * onnx.embed(SAMPLE_SENTENCES)).sum(axis=1)
    report: dict[str, object] = {
        "sentences": len(SAMPLE_SENTENCES),
        "rounds": args.rounds,
        "threads": args.threads,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    for name in paths:
        report[name] = {
            "single_ms_p50": _ms(single[name], 50),
            "single_ms_p95": _ms(single[name], 95),
            "batch32_ms_per_sentence": _ms(batched[name], 50),
        }
    report["torch_over_onnx_single_p50"] = round(
        float(np.median(single["torch"]) / np.median(single["onnx_int8"])), 2
    )
    report["torch_over_onnx_batch32"] = round(
        float(np.median(batched["torch"]) / np.median(batched["onnx_int8"])), 2
    )
    report["min_cosine_torch_vs_onnx"] = round(float(cosines.min()), 5)
    report["worst_sentence"] = SAMPLE_SENTENCES[int(cosines.argmin())][:40]
    report["load_s"] = {"torch": round(torch_load_s, 2), "onnx_int8": round(onnx_load_s, 2)}
    report["onnx_exported_now"] = onnx.exported
    print(json.dumps(report))


if __name__ == "__main__":
    main()
