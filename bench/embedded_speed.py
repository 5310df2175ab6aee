"""Speed of the embedded backend: load time, time to first token, tokens/s of a short answer.

    python -m bench.embedded_speed [--threads 1] [--runs 3] [--num-predict 32]

Prints one JSON object. Each run asks a different question, so only the chat template's
system prompt comes from llama.cpp's prompt cache, as it would for real traffic. The load
average is reported because other processes on the machine slow llama.cpp's threads down.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from inference.embedded import DEFAULT_MODEL_NAME, EmbeddedLLM

QUESTIONS = [
    "What is the capital of France?",
    "Why is the sky blue?",
    "Name three primary colours.",
    "What is two plus two?",
    "Who wrote Romeo and Juliet?",
]


def run_once(llm: EmbeddedLLM, question: str, num_predict: int) -> dict[str, float]:
    first_token_at: list[float] = []

    def on_token(_: str) -> None:
        if not first_token_at:
            first_token_at.append(time.perf_counter())

    start = time.perf_counter()
    completion = llm.chat(
        DEFAULT_MODEL_NAME,
        [{"role": "user", "content": question}],
        {"temperature": 0, "num_predict": num_predict},
        on_token,
    )
    end = time.perf_counter()
    first = first_token_at[0] if first_token_at else end
    # Decoding speed after the first token, so prompt processing does not dilute it.
    decode_s = end - first
    decoded = completion.completion_tokens - 1
    return {
        "ttft_s": first - start,
        "total_s": end - start,
        "completion_tokens": completion.completion_tokens,
        "prompt_tokens": completion.prompt_tokens,
        "tokens_per_s": decoded / decode_s if decoded > 0 and decode_s > 0 else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--num-predict", type=int, default=32)
    args = parser.parse_args()
    load_before = round(os.getloadavg()[0], 2)

    llm = EmbeddedLLM(n_threads=args.threads)
    start = time.perf_counter()
    llm.load()
    load_s = time.perf_counter() - start

    runs = [
        run_once(llm, QUESTIONS[i % len(QUESTIONS)], args.num_predict) for i in range(args.runs)
    ]
    summary = {
        "model": DEFAULT_MODEL_NAME,
        "model_file": os.path.basename(llm.model_path),
        "n_threads": args.threads,
        "cpus": os.cpu_count(),
        "loadavg_1m_before_and_after": [load_before, round(os.getloadavg()[0], 2)],
        "load_s": round(load_s, 3),
        "first_ttft_s": round(runs[0]["ttft_s"], 3),
        "median_ttft_s": round(statistics.median(r["ttft_s"] for r in runs), 3),
        "median_tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in runs), 2),
        "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
