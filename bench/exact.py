"""Exact hits: throughput of POST /api/v1/chat on a cached answer vs a bare Flask + Redis GET.

    python -m bench.exact [--duration 10] [--warmup 2] [--worker-class gevent gthread]
                          [--workers 2] [--threads 50] [--clients 2] [--connections 8]

Starts its own Ollama stand-in (in-process thread), a PostgreSQL database with one user and its
API key (bench.common), and a Flock stack on Redis DBs 13/14; asks one prompt once (a miss,
through the Celery workers) so that its answer is cached, then stops the workers: exact hits
do not use them. Then, for each gunicorn worker class, it measures

- Flock: gunicorn 'webapp:create_app()', every request an exact hit (X-Cache: exact), with
  everything the real path does (API key, rate limit with a limit nobody reaches, request log);
- bare:  gunicorn 'bench.bare_app:create_app()', which parses the body, does one Redis GET and
  returns the stored bytes: the very body Flock returned for that prompt;

with the same gunicorn flags (worker class, --workers, --threads for gthread), one after the
other, each for --warmup + --duration seconds. Everything stops at the end, also on error.

The load generator is pure Python in separate processes (--clients), each with --connections
threads on raw keep-alive sockets, in a closed loop: as fast as the server answers. The machine
may have few cores, which the generator shares with the server; the JSON says how much CPU the
generator, gunicorn and Redis each used, and the server CPU per request.

With --rounds R every measurement is repeated R times (the order of Flock and bare alternates);
each app's reported run is its median one, and each ratio is the median of the R ratios of two
runs measured back to back.

Prints one JSON summary on stdout; progress goes to stderr. Exit status 1 when Flock serves
fewer than --floor (0.8) times the bare app's requests/s under some worker class.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import redis
import requests

from bench.common import (
    CACHE_DB,
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
from tests.stack import Stack

WORKER_CLASSES = ("gevent", "gthread")
BARE_PREFIX = "bench:bare:"
FLOCK_APP = "webapp:create_app()"
BARE_APP = "bench.bare_app:create_app()"


# -- load generator (runs in the client processes) ----------------------------------------------


def _read_response(sock: socket.socket) -> bytes:
    """Read one response off a keep-alive socket; return its head (status line + headers)."""
    buf = b""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buf += chunk
    head = buf[:end].lower()
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        raise ValueError("response without Content-Length")
    line_end = head.find(b"\r\n", at + 2)
    length = int(head[at + 17 : line_end if line_end >= 0 else len(head)])
    need = end + 4 + length
    while len(buf) < need:
        chunk = sock.recv(max(65536, need - len(buf)))
        if not chunk:
            raise ConnectionError("the server closed the connection mid-body")
        buf += chunk
    return head


def _connection_loop(
    host: str, port: int, request: bytes, expect: bytes | None, window: tuple[float, float],
    out: dict[str, Any],
) -> None:
    """One keep-alive connection sending `request` back to back until the window closes.

    Counts only requests sent and answered inside the window (monotonic clock: shared by all
    processes on Linux); `expect` is a lower-case header line every answer must carry.
    """
    start, end = window
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sock: socket.socket | None = None
    while (sent_at := time.monotonic()) < end:
        try:
            if sock is None:
                sock = socket.create_connection((host, port), timeout=10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t0 = time.perf_counter()
            sock.sendall(request)
            head = _read_response(sock)
            elapsed = time.perf_counter() - t0
            if b"\r\nconnection: close" in head:
                sock.close()
                sock = None
        except (OSError, ValueError) as exc:
            if sock is not None:
                sock.close()
                sock = None
            if sent_at >= start:
                name = type(exc).__name__
                errors[name] = errors.get(name, 0) + 1
            time.sleep(0.01)
            continue
        if sent_at < start or time.monotonic() > end:
            continue  # warm-up, or answered after the window
        if not head.startswith(b"http/1.1 200") or (expect is not None and expect not in head):
            key = head.split(b"\r\n", 1)[0].decode(errors="replace")
            if expect is not None and expect not in head:
                key += f" without {expect.decode().strip()!r}"
            errors[key] = errors.get(key, 0) + 1
            continue
        latencies.append(elapsed)
    if sock is not None:
        sock.close()
    out["latencies"], out["errors"] = latencies, errors


def client_process(
    url: str, body: bytes, headers: dict[str, str], expect: bytes | None, connections: int,
    go: float, start: float, end: float,
) -> dict[str, Any]:
    """One client process: `connections` threads from `go` (monotonic) until `end`; the CPU
    time is that of the measured window [start, end] only."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        + "\r\n"
    ).encode() + body
    outs: list[dict[str, Any]] = [{"latencies": [], "errors": {}} for _ in range(connections)]
    time.sleep(max(0.0, go - time.monotonic()))
    threads = [
        threading.Thread(
            target=_connection_loop, args=(host, port, request, expect, (start, end), out)
        )
        for out in outs
    ]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, start - time.monotonic()))
    cpu = time.process_time()
    time.sleep(max(0.0, end - time.monotonic()))
    cpu = time.process_time() - cpu
    for thread in threads:
        thread.join()
    errors: dict[str, int] = {}
    for out in outs:
        for key, count in out["errors"].items():
            errors[key] = errors.get(key, 0) + count
    latencies = [lat for out in outs for lat in out["latencies"]]
    return {"pid": os.getpid(), "cpu_s": cpu, "latencies": latencies, "errors": errors}


def _ready(delay: float) -> int:
    time.sleep(delay)
    return os.getpid()


# -- the bench ---------------------------------------------------------------------------------


def _measure(
    pool: ProcessPoolExecutor, args: argparse.Namespace, url: str, body: bytes,
    headers: dict[str, str], expect: bytes | None, server_pgid: int,
) -> dict[str, Any]:
    go = time.monotonic() + 0.3
    start = go + args.warmup
    end = start + args.duration
    futures = [
        pool.submit(client_process, f"{url}/api/v1/chat", body, headers, expect,
                    args.connections, go, start, end)
        for _ in range(args.clients)
    ]
    time.sleep(max(0.0, start - time.monotonic()))
    before = CpuSnapshot.take(server_pgid)
    time.sleep(max(0.0, end - time.monotonic()))
    after = CpuSnapshot.take(server_pgid)
    parts = [f.result(timeout=args.warmup + args.duration + 60) for f in futures]
    if len({p["pid"] for p in parts}) != len(parts):
        raise RuntimeError("two client loads ran in one process: results would be wrong")

    latencies = sorted(lat for p in parts for lat in p["latencies"])
    errors: dict[str, int] = {}
    for p in parts:
        for key, count in p["errors"].items():
            errors[key] = errors.get(key, 0) + count
    n = len(latencies)
    cpu = cpu_used(before, after, sum(p["cpu_s"] for p in parts))
    cores = {k: round(v / args.duration, 2) for k, v in cpu.items() if k != "gunicorn_by_process"}

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    return {
        "requests": n,
        "rps": round(n / args.duration, 1),
        "latency_ms": {
            "p50": ms(percentile(latencies, 50)),
            "p99": ms(percentile(latencies, 99)),
            "max": ms(latencies[-1] if latencies else None),
        },
        "errors": sum(errors.values()),
        "error_samples": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:3]),
        # CPU time over the measured window / its duration; "other" is the rest of the
        # machine (other people's jobs on a shared box show up there).
        "cpu_cores_used": cores,
        "gunicorn_cpu_us_per_request": round(cpu["gunicorn"] / n * 1e6) if n else None,
    }


def _seed(stack: Stack, headers: dict[str, str], prompt: str) -> bytes:
    """Ask once through the real stack (a miss), then check it is served as an exact hit."""
    log("seeding the cache: Celery workers + gunicorn, one miss")
    workers = [
        stack.start_worker("embedder", "embed", concurrency=2, pool="threads"),
        stack.start_worker("llm", "llm", concurrency=8, pool="threads"),
    ]
    seed_web, url = start_gunicorn(stack, "seed-web", FLOCK_APP)
    try:
        for _ in range(2):
            again = requests.post(f"{url}/api/v1/chat", json={"prompt": prompt},
                                  headers=headers, timeout=60)
            if again.status_code != 200:
                raise RuntimeError(f"seeding failed: HTTP {again.status_code} {again.text[:300]}")
        if again.json()["cache"]["status"] != "exact":
            raise RuntimeError(f"the seeded prompt is not an exact hit: {again.text[:300]}")
        return again.content
    finally:
        seed_web.stop()
        for proc in reversed(workers):  # not needed for exact hits: keep the cores quiet
            proc.stop()


def _check(url: str, body: bytes, headers: dict[str, str], target: str, name: str) -> None:
    """One request before the load: the app answers, and Flock answers with an exact hit."""
    for attempt in range(3):
        try:
            resp = requests.post(url, data=body, timeout=30,
                                 headers={"Content-Type": "application/json", **headers})
        except requests.RequestException as exc:
            if attempt == 2:
                raise RuntimeError(f"{name} does not answer: {exc}") from exc
            log(f"{name} did not answer ({exc}); trying again")
            continue
        hit = target != "flock" or resp.headers.get("X-Cache") == "exact"
        if resp.status_code != 200 or not hit:
            raise RuntimeError(
                f"{name}: unexpected answer {resp.status_code} {resp.text[:300]}"
                + (f"\nThe cached answer is gone: did something else flush Redis DB {CACHE_DB}?"
                   if resp.status_code in (404, 504) or not hit else "")
            )
        return


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = machine()
    prompt = f"Exact {uuid.uuid4().hex[:12]}: why is the sky blue?"
    body = json.dumps({"prompt": prompt}).encode()
    pool = ProcessPoolExecutor(
        max_workers=args.clients, mp_context=multiprocessing.get_context("spawn")
    )
    results: dict[str, dict[str, Any]] = {wc: {} for wc in args.worker_class}
    try:
        pids = set(pool.map(_ready, [0.5] * args.clients))
        log(f"{len(pids)} client process(es) ready")
        with bench_stack(lease_ms=10000, keep_logs=args.keep_logs) as bench:
            stack, headers = bench.stack, bench.headers
            stored = _seed(stack, headers, prompt)
            client = redis.Redis.from_url(stack.env["REDIS_URL"])
            client.set(BARE_PREFIX + prompt, stored)
            client.close()
            for r in range(args.rounds):
                for i, wc in enumerate(args.worker_class):
                    # Alternate who goes first, so a drift in machine load favours neither.
                    order = ("flock", "bare") if (i + r) % 2 == 0 else ("bare", "flock")
                    for target in order:
                        app = FLOCK_APP if target == "flock" else BARE_APP
                        expect = b"\r\nx-cache: exact" if target == "flock" else None
                        name = f"{target}-{wc}-{r}"
                        proc, url = start_gunicorn(
                            stack, name, app, wc, args.workers, args.threads,
                            extra_env={"BARE_PREFIX": BARE_PREFIX},
                        )
                        try:
                            _check(f"{url}/api/v1/chat", body, headers, target, name)
                            log(f"{name}: {args.warmup:g}s warm-up + {args.duration:g}s "
                                f"measured, {args.clients} x {args.connections} connections")
                            m = _measure(pool, args, url, body, headers, expect,
                                         proc.popen.pid)
                        finally:
                            proc.stop()
                        log(f"{name}: {m['rps']} req/s, p50 {m['latency_ms']['p50']} ms, "
                            f"p99 {m['latency_ms']['p99']} ms, {m['errors']} error(s) "
                            f"{m['error_samples'] or ''}, "
                            f"gunicorn {m['gunicorn_cpu_us_per_request']} us CPU/request, "
                            f"CPU cores {m['cpu_cores_used']}")
                        results[wc].setdefault(target, []).append(m)
    finally:
        pool.shutdown(cancel_futures=True)

    by_class: dict[str, Any] = {}
    for wc, targets in results.items():
        flock, bare = _median_run(targets["flock"]), _median_run(targets["bare"])
        # Ratios of the two runs of one round (measured back to back), median over rounds.
        rounds = list(zip(targets["flock"], targets["bare"], strict=True))
        rps_ratios = [f["rps"] / b["rps"] for f, b in rounds if b["rps"]]
        cpu_ratios = [
            f["gunicorn_cpu_us_per_request"] / b["gunicorn_cpu_us_per_request"]
            for f, b in rounds
            if f["gunicorn_cpu_us_per_request"] and b["gunicorn_cpu_us_per_request"]
        ]
        by_class[wc] = {
            "flock": flock,
            "bare": bare,
            "ratio_rps_flock_over_bare": rounded(statistics.median(rps_ratios))
            if rps_ratios else None,
            "ratio_cpu_per_request_flock_over_bare": rounded(statistics.median(cpu_ratios))
            if cpu_ratios else None,
        }
        if args.rounds > 1:
            by_class[wc]["by_round"] = {
                "rps": {t: [m["rps"] for m in ms] for t, ms in targets.items()},
                "gunicorn_cpu_us_per_request": {
                    t: [m["gunicorn_cpu_us_per_request"] for m in ms] for t, ms in targets.items()
                },
                "ratio_rps_flock_over_bare": [round(r, 3) for r in rps_ratios],
            }
    floors = {
        f"{wc}_rps_flock_over_bare": {
            "value": by_class[wc]["ratio_rps_flock_over_bare"],
            "floor": f">= {args.floor:g}",
            "ok": (by_class[wc]["ratio_rps_flock_over_bare"] or 0) >= args.floor
                  and by_class[wc]["flock"]["errors"] == 0,
        }
        for wc in by_class
    }
    fastest = max(by_class, key=lambda wc: by_class[wc]["flock"]["rps"])
    cheapest = min(by_class, key=lambda wc: by_class[wc]["flock"]["gunicorn_cpu_us_per_request"]
                   or float("inf"))
    return {
        "bench": "exact",
        "machine": info,
        "gunicorn": {"workers": args.workers, "threads_for_gthread": args.threads,
                     "worker_connections": 4000},
        "load": {
            "kind": "closed loop, raw HTTP/1.1 keep-alive sockets, one thread per connection",
            "client_processes": args.clients,
            "connections_per_process": args.connections,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "rounds": args.rounds,
        },
        "response_bytes": len(stored),
        "results": by_class,
        # Most requests/s, and least gunicorn CPU per request: on a machine shared with other
        # jobs the second is the steadier measure (the scheduler shares the cores by thread).
        "fastest_flock_worker_class": fastest,
        "cheapest_flock_worker_class": cheapest,
        "floors": floors,
        "ok": all(f["ok"] for f in floors.values()),
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median requests/s (the only one when --rounds 1; the lower middle one
    for an even count)."""
    median = statistics.median_low([m["rps"] for m in runs])
    return next(m for m in runs if m["rps"] == median)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Exact-hit throughput of Flock vs a bare Flask app doing one Redis GET."
    )
    parser.add_argument("--duration", type=float, default=10, help="measured seconds (10)")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds first (2)")
    parser.add_argument("--worker-class", nargs="+", choices=WORKER_CLASSES,
                        default=list(WORKER_CLASSES), help="gunicorn worker classes (both)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--threads", type=int, default=50, help="gunicorn --threads, gthread (50)")
    parser.add_argument("--clients", type=int, default=2, help="load generator processes (2)")
    parser.add_argument("--connections", type=int, default=8,
                        help="keep-alive connections (threads) per client process (8)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every measurement; the median run is reported (1)")
    parser.add_argument("--floor", type=float, default=0.8,
                        help="minimum Flock/bare requests/s ratio (0.8)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the gunicorn and Celery logs (kept anyway on error)")
    args = parser.parse_args(argv)
    if min(args.duration, args.workers, args.threads, args.clients, args.connections,
           args.rounds) <= 0 or args.warmup < 0:
        parser.error("durations, counts and --rounds must be positive")
    args.worker_class = list(dict.fromkeys(args.worker_class))
    exit_on_sigterm()
    summary = run(args)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
