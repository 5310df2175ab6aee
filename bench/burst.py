"""Burst: N concurrent identical prompts through Flock vs the same N straight to the LLM.

    python -m bench.burst [--n 1000] [--latency 2.0] [--lease-ms 10000] [--timeout 60]
                          [--worker-class gevent] [--threads 50]

Starts its own Ollama stand-in (in-process thread), a PostgreSQL database with one user and its
API key, and a Flock stack (gunicorn, 2 workers of --worker-class, default gevent; the Celery
workers) on Redis DBs 13/14, and stops them at the end, also on error.

1. Flock: N concurrent POST /api/v1/chat with one fresh prompt. Single-flight should make
   one LLM call, and everyone should have the answer about one LLM latency after the burst.
2. Baseline: N concurrent POST /api/chat ("stream": false) straight to the stand-in, with
   the same latency: N LLM calls, all in parallel (a real Ollama would queue them).

The client runs in a process of its own (the stand-in's threads live in this one): asyncio
with raw HTTP/1.1, one connection per request, all N released together. Not httpx: its
connection pool scans every connection for every request (httpcore
AsyncConnectionPool._assign_requests_to_connections), which cost 35 s of CPU for 1000
concurrent requests here. The baseline doubles as the client's calibration: its wall time
minus the latency is what the client and the stand-in add on their own; cpu_s.client is the
client's own CPU time.

Prints one JSON summary on stdout; progress goes to stderr. Exit status 1 when a floor is
missed (Flock: exactly 1 LLM call, no error, wall time <= latency + 1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench.common import (
    MODEL,
    Bench,
    CpuSnapshot,
    bench_stack,
    cpu_used,
    exit_on_sigterm,
    log,
    machine,
    percentile,
    rounded,
    start_gunicorn,
)

WEB_WORKERS = 2
OVERHEAD_FLOOR_S = 1.0


@dataclass
class Result:
    latency_s: float
    http_status: int | None = None
    cache_status: str | None = None
    content: str | None = None
    error: str | None = None


def _request_bytes(
    url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[str, int, bytes]:
    """One HTTP/1.1 POST, built once and sent N times; `Connection: close`, so a response
    ends at EOF and no keep-alive bookkeeping is needed on either side."""
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        + "Connection: close\r\n\r\n"
    )
    return parts.hostname or "127.0.0.1", parts.port or 80, head.encode() + payload


async def _post(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        raw = await reader.read()  # until the server closes
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        raise ConnectionError(f"not an HTTP response: {raw[:60]!r}")
    return int(head.split(b" ", 2)[1]), body


def _parse(kind: str, status: int, body: bytes, result: Result) -> None:
    result.http_status = status
    if status != 200:
        result.error = f"HTTP {status}: {body[:200].decode(errors='replace')}"
        return
    try:
        data = json.loads(body)
        result.content = data["message"]["content"]
        if kind == "flock":
            result.cache_status = data["cache"]["status"]
    except (ValueError, KeyError, TypeError) as exc:
        result.error = f"bad body: {type(exc).__name__}: {exc}"


async def _burst_async(
    url: str, body: dict[str, Any], headers: dict[str, str], n: int, timeout_s: float, kind: str
) -> tuple[list[Result], float]:
    host, port, request = _request_bytes(url, body, headers)
    gate = asyncio.Event()

    async def one() -> Result:
        await gate.wait()
        started = time.perf_counter()
        try:
            status, raw = await asyncio.wait_for(_post(host, port, request), timeout_s)
        except (OSError, TimeoutError, ValueError) as exc:
            return Result(time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
        result = Result(time.perf_counter() - started)
        _parse(kind, status, raw, result)
        return result

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    await asyncio.sleep(0.05)  # every task is parked at the gate
    started = time.perf_counter()
    gate.set()
    results = await asyncio.gather(*tasks)
    return results, time.perf_counter() - started


def client_burst(
    url: str, body: dict[str, Any], headers: dict[str, str], n: int, timeout_s: float, kind: str
) -> tuple[list[Result], float, float]:
    """Runs in the client process: N identical POSTs released together.

    Returns each result, the burst's wall time and the CPU time the client spent on it.
    """
    cpu = time.process_time()
    results, wall = asyncio.run(_burst_async(url, body, headers, n, timeout_s, kind))
    return results, wall, time.process_time() - cpu


def _summary(
    results: list[Result], wall_s: float, cpu: dict[str, Any], latency_s: float, llm_calls: int
) -> dict[str, Any]:
    latencies = sorted(r.latency_s for r in results)
    errors = [r.error for r in results if r.error is not None]
    summary: dict[str, Any] = {
        "requests": len(results),
        "llm_calls": llm_calls,
        "wall_s": rounded(wall_s),
        "wall_minus_latency_s": rounded(wall_s - latency_s),
        "errors": len(errors),
        "error_samples": sorted(Counter(errors).items(), key=lambda kv: -kv[1])[:3],
        "distinct_answers": len({r.content for r in results if r.content is not None}),
        "latency_s": {
            "p50": rounded(percentile(latencies, 50)),
            "p95": rounded(percentile(latencies, 95)),
            "max": rounded(latencies[-1] if latencies else None),
        },
        # CPU seconds spent during the burst, by whom ("other": the rest of the machine, the
        # stand-in and Celery workers included).
        "cpu_s": cpu,
    }
    if any(r.cache_status for r in results):
        statuses = Counter(r.cache_status for r in results if r.cache_status)
        summary["statuses"] = {s: statuses.get(s, 0) for s in ("miss", "coalesced", "exact")}
        summary["statuses"] |= {s: c for s, c in statuses.items() if s not in summary["statuses"]}
    return summary


def _ollama_body(prompt: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": False}


def _warm_up(client: ProcessPoolExecutor, bench: Bench, web_url: str) -> None:
    """Open each gunicorn worker's pools, wake-up hub and broker connection, and load the
    embedding model in the workers (distinct prompts: each one dispatches a task), so the
    burst measures steady state, not start-up."""
    warm = [(f"{web_url}/api/v1/chat", {"prompt": f"warm-up {uuid.uuid4().hex}"},
             bench.headers, "flock") for _ in range(8)]
    warm.append((f"{bench.standin.url}/api/chat", _ollama_body("warm-up"), {}, "ollama"))
    for url, body, headers, kind in warm:
        results, _, _ = client.submit(client_burst, url, body, headers, 16, 120, kind).result()
        bad = [r.error for r in results if r.error]
        if bad:
            raise RuntimeError(f"warm-up failed at {url}: {bad[0]}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = machine()
    # The client runs in a process of its own: the stand-in's handler threads (1000 of them
    # in the baseline) live in this one and would otherwise share its GIL.
    client = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    try:
        with bench_stack(args.lease_ms, args.timeout, args.keep_logs) as bench:
            standin, stack = bench.standin, bench.stack
            log("starting Celery workers and gunicorn")
            stack.start_worker("embedder", "embed", concurrency=2, pool="threads")
            stack.start_worker("llm", "llm", concurrency=8, pool="threads")
            web, web_url = start_gunicorn(stack, "web", "webapp:create_app()",
                                        args.worker_class, WEB_WORKERS, args.threads)
            _warm_up(client, bench, web_url)

            prompt = f"Burst {uuid.uuid4().hex[:12]}: why is the sky blue?"
            standin.reset()
            standin.configure(latency_s=args.latency)
            log(f"Flock: {args.n} concurrent POST /api/v1/chat, LLM latency {args.latency}s")
            before = CpuSnapshot.take(web.popen.pid)
            results, wall, cpu = client.submit(
                client_burst, f"{web_url}/api/v1/chat", {"prompt": prompt}, bench.headers,
                args.n, args.timeout, "flock",
            ).result()
            time.sleep(0.2)  # a late duplicate LLM call would show up here
            cpu_s = cpu_used(before, CpuSnapshot.take(web.popen.pid), cpu)
            flock = _summary(results, wall, cpu_s, args.latency, standin.calls()["chat"])
            log(f"Flock: {flock['wall_s']}s, {flock['llm_calls']} LLM call(s), "
                f"{flock.get('statuses')}, {flock['errors']} error(s)")

            standin.reset()
            standin.configure(latency_s=args.latency)
            log(f"baseline: {args.n} concurrent POST /api/chat straight to the stand-in")
            before = CpuSnapshot.take(web.popen.pid)
            results, wall, cpu = client.submit(
                client_burst, f"{standin.url}/api/chat", _ollama_body(f"Baseline {prompt}"),
                {}, args.n, args.timeout, "ollama",
            ).result()
            cpu_s = cpu_used(before, CpuSnapshot.take(web.popen.pid), cpu)
            cpu_s.pop("gunicorn_by_process")
            baseline = _summary(results, wall, cpu_s, args.latency, standin.calls()["chat"])
            log(f"baseline: {baseline['wall_s']}s, {baseline['llm_calls']} LLM call(s), "
                f"{baseline['errors']} error(s)")
    finally:
        client.shutdown(cancel_futures=True)

    floors = {
        "flock_llm_calls": {"value": flock["llm_calls"], "floor": "== 1",
                            "ok": flock["llm_calls"] == 1},
        "flock_errors": {"value": flock["errors"], "floor": "== 0", "ok": flock["errors"] == 0},
        "flock_wall_s": {"value": flock["wall_s"],
                         "floor": f"<= latency + {OVERHEAD_FLOOR_S:g} s",
                         "ok": flock["wall_s"] <= args.latency + OVERHEAD_FLOOR_S},
    }
    return {
        "bench": "burst",
        "n": args.n,
        "llm_latency_s": args.latency,
        "lease_ms": args.lease_ms,
        "machine": info,
        "web": {"server": "gunicorn", "worker_class": args.worker_class, "workers": WEB_WORKERS,
                **({"threads": args.threads} if args.worker_class == "gthread" else {})},
        "client": {
            "kind": "asyncio, raw HTTP/1.1, one connection per request (Connection: close)",
            "processes": 1,
            "concurrency": args.n,
            "timeout_s": args.timeout,
        },
        "flock": flock,
        "baseline": baseline,
        "ratios": {
            "llm_calls_baseline_over_flock": (
                round(baseline["llm_calls"] / flock["llm_calls"], 1) if flock["llm_calls"]
                else None
            ),
            "wall_flock_over_baseline": rounded(flock["wall_s"] / baseline["wall_s"]),
            "p50_flock_over_baseline": rounded(
                flock["latency_s"]["p50"] / baseline["latency_s"]["p50"]
            ),
        },
        "floors": floors,
        "ok": all(f["ok"] for f in floors.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="N concurrent identical prompts: Flock vs straight to the LLM stand-in."
    )
    parser.add_argument("--n", type=int, default=1000, help="concurrent requests (default 1000)")
    parser.add_argument("--latency", type=float, default=2.0,
                        help="stand-in LLM latency in seconds (default 2.0)")
    parser.add_argument("--lease-ms", type=int, default=10000,
                        help="LOCK_LEASE_MS of the stack (default 10000)")
    parser.add_argument("--timeout", type=float, default=60,
                        help="client timeout and REQUEST_TIMEOUT_S, seconds (default 60)")
    parser.add_argument("--worker-class", choices=("gevent", "gthread"), default="gevent",
                        help="gunicorn worker class of the web tier (default gevent)")
    parser.add_argument("--threads", type=int, default=50,
                        help="gunicorn --threads per worker, gthread only (default 50)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the gunicorn and Celery logs (kept anyway on error)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.latency < 0:
        parser.error("--n must be >= 1 and --latency >= 0")
    exit_on_sigterm()
    summary = run(args)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
