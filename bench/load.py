"""Load: a mixed workload through Flock, straight to the LLM (no cache) and through GPTCache,
in front of the same Ollama stand-in with the same latency, in one run.

    python -m bench.load [--questions 200] [--requests 2000] [--concurrency 16 | --rate R]
                         [--latency 0.5] [--reworded 0.2] [--zipf 1.0] [--tokens 64]
                         [--threshold 0.8] [--seed 1]
                         [--systems flock none gptcache flock-cluster]

The workload (bench/workload.py): Zipf over N distinct questions (the paraphrase set's
questions and Quora's), a share of the requests reworded with the paraphrase set's `similar`.
Each system gets the very same request sequence:

1. mixed phase, cold cache: the sequence once, closed loop with --concurrency clients, or
   open loop at --rate requests/s. Outcomes per request (exact / semantic / coalesced / miss /
   error) with p50/p95/p99, LLM calls (the stand-in's counter) against the unique questions
   asked, tokens saved, answers that belong to another question (wrong).
2. warm phase (flock and gptcache): the same sequence again, every prompt already asked once,
   closed loop with --concurrency clients, for at least --warm-seconds. Its cache-answered
   requests (exact + semantic) per second of wall time are the system's *hit throughput*.

The systems:

- flock: bench_stack (stand-in, PostgreSQL database, Redis DBs 13/14), Celery workers and
  gunicorn as Stack.start_default (gevent, WEB_WORKERS processes), SEMANTIC_THRESHOLD
  --threshold; POST /api/v1/chat.
- none: POST /api/chat straight to the stand-in; every request is an LLM call.
- gptcache: GPTCache 0.1.44's own server (FastAPI /get and /put) under uvicorn with the same
  number of worker processes as Flock's web tier, in its own venv (var/gptcache-venv, made on
  first use), embedding with the same MiniLM files (its SBERT class), sqlite + faiss,
  SearchDistanceEvaluation with the similarity threshold equal to Flock's cosine threshold
  ((1 + cos) / 2, for unit vectors under faiss's squared L2); its files in /dev/shm unless
  --gptcache-on-disk; --gptcache-embedding onnx gives it Flock's int8 ONNX export instead.
  Each worker process is a cache of its own (bench/gptcache_server.py).
  GPTCache has no Ollama adapter: the client does /get, on a miss calls the stand-in, then
  /put (bench/loadgen.py).
- flock-cluster: flock again with its cache on a Redis Cluster of three primaries on this
  machine (tests/redis_servers.py; REDIS_CLUSTER=1, the broker still Redis DB 14) and a
  PostgreSQL database of its own; reported beside flock, no floor of its own.

Flock and GPTCache never run at the same time: Flock's processes stop before GPTCache starts.

Prints one JSON summary on stdout, a progress bar and log lines on stderr. Exit status 1 when
a floor is missed: Flock's LLM calls <= unique questions x 1.02 (mixed phase); Flock's hit
throughput >= 10x GPTCache's; Flock's cached-hit p99 below GPTCache's cached-hit p50 (warm
phase); no Flock request failed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests

from bench import gptcache_venv
from bench.common import (
    MODEL,
    bench_database,
    bench_stack,
    create_api_key,
    exit_on_sigterm,
    group_cpu,
    log,
    machine,
    machine_busy_seconds,
    named_cpu,
    percentile,
    rounded,
)
from bench.loadgen import Plan, Record, Sync, Target, run_plan
from bench.workload import Judge, Workload, build, prompt_tokens
from tests.redis_servers import RedisCluster3
from tests.stack import ROOT, Stack

WEB_WORKERS = 2  # Stack.start_web's default: Flock's web tier, and GPTCache's worker count
LLM_CALLS_FLOOR = 1.02
HIT_THROUGHPUT_FLOOR = 10.0
SYSTEMS = ("flock", "none", "gptcache", "flock-cluster")
CACHED = ("exact", "semantic")


# -- running one phase -------------------------------------------------------------------------


def _progress(label: str, done: int, total: int, elapsed: float, tty: bool) -> str:
    width = 30
    filled = min(width, width * done // max(1, total))
    rate = done / elapsed if elapsed > 0 else 0.0
    text = (f"{label:<16} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
            f"{rate:7.1f} req/s {elapsed:5.1f}s")
    return f"\r{text}" if tty else text


def run_phase(
    target: Target, prompts: list[str], args: argparse.Namespace, label: str, warm: bool,
    groups: dict[str, int],
) -> tuple[list[Record], float, dict[str, float]]:
    """Send `prompts` (index = position) from the client processes; returns the records, the
    wall time and the CPU seconds spent meanwhile (clients, `groups`, the whole machine).
    Closed loop for a warm phase, whatever --rate."""
    ctx = multiprocessing.get_context("spawn")  # this process runs the stand-in's threads
    closed = warm or not args.rate
    n_proc = min(args.client_processes, args.concurrency) if closed else args.client_processes
    sync = Sync(ctx.Value("q", 0), ctx.Value("q", 0), ctx.Value("d", 0.0), ctx.Event(),
                ctx.Queue())
    procs = []
    for k in range(n_proc):
        share = [(i, p) for i, p in enumerate(prompts) if i % n_proc == k]
        plan = Plan(target, share, args.timeout)
        if closed:
            plan.clients = args.concurrency // n_proc + (k < args.concurrency % n_proc)
            plan.min_seconds = args.warm_seconds if warm else 0.0
        else:
            plan.rate = args.rate
            plan.max_clients = max(1, args.max_connections // n_proc)
        proc = ctx.Process(target=run_plan, args=(plan, sync), daemon=True)
        proc.start()
        procs.append(proc)

    def check_alive() -> None:
        if not any(p.is_alive() for p in procs) and sync.results.empty():
            raise RuntimeError(f"{label}: the client processes died")

    while sync.ready.value < n_proc:  # every process imported and waiting
        check_alive()
        time.sleep(0.05)
    meter = CpuMeter(groups)
    start_at = time.monotonic() + 0.05
    sync.start_at.value = start_at
    sync.go.set()

    tty = sys.stderr.isatty()
    outs: list[dict[str, Any]] = []
    last_line = 0.0
    while len(outs) < n_proc:
        try:
            outs.append(sync.results.get(timeout=0.25))
        except queue.Empty:
            check_alive()
        now = time.monotonic()
        if tty or now - last_line >= 5:
            line = _progress(label, sync.done.value, len(prompts), now - start_at, tty)
            print(line, end="" if tty else "\n", file=sys.stderr, flush=True)
            last_line = now
    cpu = meter.spent(sum(out["cpu_s"] for out in outs))
    for proc in procs:
        proc.join(5)
    records = [r for out in outs for r in out["records"]]
    wall = max((r[1] + r[2] for r in records), default=0.0)
    if tty:
        print(_progress(label, len(records), len(prompts), wall, tty), file=sys.stderr)
    return records, wall, cpu


# -- summaries ---------------------------------------------------------------------------------


def _latency(values_s: list[float]) -> dict[str, Any]:
    ms = sorted(v * 1000 for v in values_s)
    return {"n": len(ms), "p50_ms": rounded(percentile(ms, 50), 2),
            "p95_ms": rounded(percentile(ms, 95), 2), "p99_ms": rounded(percentile(ms, 99), 2)}


def summarize(
    kind: str, records: list[Record], wall: float, workload: Workload, judge: Judge,
    tokens: int, llm_calls: int, cpu: dict[str, float],
) -> dict[str, Any]:
    by_outcome: dict[str, list[float]] = {}
    errors: Counter[str] = Counter()
    wrong: list[dict[str, str]] = []
    saved = reported_saved = 0
    asked: set[int] = set()
    for index, _, latency, outcome, answer, reported, error in records:
        request = workload.requests[index]
        asked.add(index)
        if outcome == "error" or answer is None:
            errors[error or "no answer"] += 1
            by_outcome.setdefault("error", []).append(latency)
            continue
        verdict = judge.verdict(request, answer)
        if kind == "gptcache" and outcome == "hit":
            # GPTCache does not say how it matched; an answer stored for this very text is
            # counted as exact, any other as semantic (it embedded and searched either way).
            outcome = "exact" if verdict == "own" else "semantic"
        if verdict == "wrong":
            wrong.append({"asked": request.prompt, "served": answer[:120]})
        by_outcome.setdefault(outcome, []).append(latency)
        if outcome != "miss":
            saved += prompt_tokens(request.prompt) + tokens
            reported_saved += reported or 0
    cached = [v for o in CACHED for v in by_outcome.get(o, [])]
    questions = {workload.requests[i].question for i in asked}
    prompts = {workload.requests[i].prompt for i in asked}
    order = ("exact", "semantic", "coalesced", "miss", "error")
    outcomes = {o: _latency(by_outcome[o]) for o in order if o in by_outcome}
    outcomes |= {o: _latency(v) for o, v in by_outcome.items() if o not in order}
    summary: dict[str, Any] = {
        "requests": len(records),
        "wall_s": rounded(wall),
        "throughput_rps": rounded(len(records) / wall if wall else None, 1),
        "hit_throughput_rps": rounded(len(cached) / wall if wall else None, 1),
        "outcomes": outcomes,
        "cached_hits": _latency(cached),
        "llm_calls": llm_calls,
        "unique_questions": len(questions),
        "unique_prompts": len(prompts),
        "llm_calls_per_unique_question": rounded(llm_calls / len(questions), 3),
        "tokens_saved": saved,
        "wrong_answers": len(wrong),
        "wrong_samples": wrong[:3],
        "errors": sum(errors.values()),
        "error_samples": [{"error": e, "n": n} for e, n in errors.most_common(3)],
        "cpu_s": cpu,
    }
    if kind.startswith("flock"):
        summary["tokens_saved_reported"] = reported_saved
    return summary


def repeated_calls(workload: Workload, prompts_sent: list[str]) -> dict[str, Any]:
    """The questions the LLM was asked more than once, and with which prompts: where LLM calls
    above the number of unique questions went."""
    question_of = {r.prompt: r.question for r in workload.requests}
    sent: dict[int, list[str]] = {}
    for prompt in prompts_sent:
        if prompt in question_of:  # not a warm-up prompt
            sent.setdefault(question_of[prompt], []).append(prompt)
    repeated = {q: ps for q, ps in sent.items() if len(ps) > 1}
    same_text = sum(1 for ps in repeated.values() if len(set(ps)) < len(ps))
    return {
        "questions": len(repeated),
        "extra_calls": sum(len(ps) - 1 for ps in repeated.values()),
        # the same text sent twice: no single flight; else each form (question, rewording)
        # once: the rewording was not served from the other form's answer
        "questions_with_a_text_sent_twice": same_text,
        "samples": [{"calls": len(ps), "prompts": sorted(set(ps))}
                    for ps in list(repeated.values())[:3]],
    }


class CpuMeter:
    """CPU seconds over one phase: of named process groups, of the Redis and PostgreSQL
    servers, and of the whole machine (`machine_busy`: every process, other people's jobs
    included; at most 2 x the wall time here)."""

    SERVERS = ("redis-server", "postgres")

    def __init__(self, groups: dict[str, int]) -> None:
        self.groups = groups
        self.before = self._take()
        self.busy = machine_busy_seconds()

    def _take(self) -> dict[str, dict[int, float]]:
        taken = {name: group_cpu(pgid) for name, pgid in self.groups.items()}
        return taken | {name: named_cpu(name) for name in self.SERVERS}

    def spent(self, client_s: float) -> dict[str, float]:
        after = self._take()
        spent = {  # a process that exited meanwhile took its time with it
            name: round(sum(cpu - self.before[name].get(pid, 0.0) for pid, cpu in now.items()), 2)
            for name, now in after.items()
        }
        return {**spent, "client": round(client_s, 2),
                "machine_busy": round(machine_busy_seconds() - self.busy, 2)}


# -- the systems -------------------------------------------------------------------------------


def _phases(
    kind: str, target: Target, workload: Workload, judge: Judge, args: argparse.Namespace,
    standin: Any, groups: dict[str, int], warm: bool = True,
) -> dict[str, Any]:
    prompts = [r.prompt for r in workload.requests]
    out: dict[str, Any] = {}
    for phase in ("mixed", "warm") if warm else ("mixed",):
        standin.reset()
        standin.configure(latency_s=args.latency, tokens=args.tokens)
        log(f"{kind}: {phase} phase, {len(prompts)} requests")
        records, wall, cpu = run_phase(target, prompts, args, f"{kind} {phase}",
                                       phase == "warm", groups)
        time.sleep(0.2)  # a late LLM call would show up here
        calls = standin.calls()
        out[phase] = summarize(kind, records, wall, workload, judge, args.tokens, calls["chat"],
                               cpu)
        out[phase]["repeated_llm_calls"] = repeated_calls(workload, calls["prompts"])
        if groups:  # the system's own processes; Redis and PostgreSQL serve others too
            own = sum(cpu[name] for name in groups)
            out[phase]["own_cpu_ms_per_request"] = rounded(1000 * own / len(records), 2)
        s = out[phase]
        log(f"{kind} {phase}: {s['throughput_rps']} req/s, hits {s['hit_throughput_rps']}/s, "
            f"{s['llm_calls']} LLM calls for {s['unique_questions']} questions, "
            f"{s['errors']} errors, {s['wrong_answers']} wrong")
    return out


def _warm_up_flock(url: str, headers: dict[str, str]) -> None:
    """Load the embedding model and open each web worker's pools (distinct prompts, not from
    the workload), so the mixed phase measures steady state, not start-up."""
    with requests.Session() as session:
        for _ in range(8):
            resp = session.post(f"{url}/api/v1/chat", json={"prompt": f"warm-up {uuid.uuid4()}"},
                                headers=headers, timeout=120)
            resp.raise_for_status()


def run_flock(bench: Any, workload: Workload, judge: Judge, args: argparse.Namespace) -> dict:
    return _run_flock_on(bench.stack, bench.api_key, bench, workload, judge, args)


def run_flock_cluster(
    bench: Any, workload: Workload, judge: Judge, args: argparse.Namespace
) -> dict:
    """Flock again, its cache on a Redis Cluster of three primaries (local redis-server
    binaries; the broker stays a plain Redis), with a database of its own: nothing the
    single-Redis run stored is there to serve."""
    with ExitStack() as cleanup:
        folder = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="flock-cluster-")))
        cluster = RedisCluster3(folder)
        cleanup.callback(cluster.stop)
        log("flock-cluster: starting a 3-node Redis Cluster")
        cluster.start()
        database = cleanup.enter_context(bench_database("cluster"))
        env = {**bench.stack.env, "DATABASE_URL": database, "REDIS_URL": cluster.url,
               "REDIS_CLUSTER": "1"}  # fmt: skip
        stack = Stack(env=env, logdir=bench.stack.logdir / "cluster")
        stack.logdir.mkdir(exist_ok=True)
        return _run_flock_on(stack, create_api_key(env, "bench-cluster"), bench, workload,
                             judge, args, label="flock-cluster")  # fmt: skip


def _run_flock_on(
    stack: Stack, api_key: str, bench: Any, workload: Workload, judge: Judge,
    args: argparse.Namespace, label: str = "flock",
) -> dict:  # fmt: skip
    stack.env["SEMANTIC_THRESHOLD"] = str(args.threshold)
    log(f"{label}: starting Celery workers and gunicorn")
    stack.start_default()
    try:
        headers = {"Authorization": f"Bearer {api_key}"}
        _warm_up_flock(stack.url, headers)
        groups = {name: proc.popen.pid for name, proc in stack.procs.items()}
        target = Target("flock", bench.standin.url, MODEL, stack.url, api_key)
        return _phases(label, target, workload, judge, args, bench.standin, groups)
    finally:
        stack.stop()  # GPTCache must not share the machine with an idle Flock


def run_none(bench: Any, workload: Workload, judge: Judge, args: argparse.Namespace) -> dict:
    target = Target("none", bench.standin.url, MODEL)
    return _phases("none", target, workload, judge, args, bench.standin, {}, warm=False)


def run_gptcache(bench: Any, workload: Workload, judge: Judge, args: argparse.Namespace) -> dict:
    from inference.embeddings import default_model_path

    gptcache_venv.ensure()
    if args.gptcache_on_disk or not Path("/dev/shm").is_dir():
        data_dir = ROOT / "var" / "gptcache-data"
    else:  # in memory: its sqlite commits (two per hit) do not wait for this machine's disk
        data_dir = Path(tempfile.mkdtemp(prefix="flock-bench-gptcache-", dir="/dev/shm"))
    onnx_file = None
    if args.gptcache_embedding == "onnx":
        from inference.embeddings import DEFAULT_CACHE_DIR
        from inference.onnx_export import ensure_quantized_model

        onnx_file, _ = ensure_quantized_model(default_model_path(), DEFAULT_CACHE_DIR)
    log(f"gptcache: starting its server ({args.gptcache_embedding}), data in {data_dir}")
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, data_dir, True)
        url, pgid = cleanup.enter_context(gptcache_venv.gptcache_server(
            str(default_model_path()), WEB_WORKERS, (1 + args.threshold) / 2, data_dir,
            bench.stack.logdir, onnx_file,
        ))
        with requests.Session() as session:  # connections and first requests, nothing stored
            for i in range(8):
                session.post(f"{url}/get", json={"prompt": f"warm-up {i}"}, timeout=120)
        target = Target("gptcache", bench.standin.url, MODEL, url)
        return _phases("gptcache", target, workload, judge, args, bench.standin,
                       {"server": pgid})


# -- the bench ---------------------------------------------------------------------------------


def _floors(results: dict[str, Any]) -> dict[str, Any]:
    floors: dict[str, Any] = {}
    flock = results.get("flock")
    if flock is None:
        return floors
    mixed, warm = flock["mixed"], flock["warm"]
    floors["flock_llm_calls"] = {
        "value": mixed["llm_calls"], "floor": f"<= {mixed['unique_questions']} unique questions"
        f" x {LLM_CALLS_FLOOR}",
        "ok": mixed["llm_calls"] <= mixed["unique_questions"] * LLM_CALLS_FLOOR,
    }
    floors["flock_errors"] = {"value": mixed["errors"] + warm["errors"], "floor": "== 0",
                              "ok": mixed["errors"] + warm["errors"] == 0}
    gpt = results.get("gptcache")
    if gpt is None:
        for name in ("hit_throughput_over_gptcache", "cached_hit_p99_below_gptcache_p50"):
            floors[name] = {"value": None, "floor": "not measured: gptcache not in --systems",
                            "ok": None}
    else:
        ours, theirs = warm["hit_throughput_rps"] or 0.0, gpt["warm"]["hit_throughput_rps"]
        floors["hit_throughput_over_gptcache"] = {
            "value": rounded(ours / theirs, 2) if theirs else None,
            "floor": f">= {HIT_THROUGHPUT_FLOOR:g}",
            "ok": bool(theirs) and ours >= HIT_THROUGHPUT_FLOOR * theirs,
        }
        p99, p50 = warm["cached_hits"]["p99_ms"], gpt["warm"]["cached_hits"]["p50_ms"]
        floors["cached_hit_p99_below_gptcache_p50"] = {
            "value": {"flock_p99_ms": p99, "gptcache_p50_ms": p50}, "floor": "flock p99 < p50",
            "ok": p99 is not None and p50 is not None and p99 < p50,
        }
    return floors


def _ratios(results: dict[str, Any]) -> dict[str, Any]:
    flock, none, gpt, cluster = (results.get(s) for s in SYSTEMS)
    ratios: dict[str, Any] = {}
    if flock and cluster:
        ratios["hit_throughput_cluster_over_single_redis"] = rounded(
            cluster["warm"]["hit_throughput_rps"] / flock["warm"]["hit_throughput_rps"], 2)
        ratios["mixed_throughput_cluster_over_single_redis"] = rounded(
            cluster["mixed"]["throughput_rps"] / flock["mixed"]["throughput_rps"], 2)
    if flock and none:
        ratios["llm_calls_none_over_flock"] = rounded(
            none["mixed"]["llm_calls"] / max(1, flock["mixed"]["llm_calls"]), 2)
        ratios["mixed_throughput_flock_over_none"] = rounded(
            flock["mixed"]["throughput_rps"] / none["mixed"]["throughput_rps"], 2)
    if flock and gpt:
        ratios["llm_calls_gptcache_over_flock"] = rounded(
            gpt["mixed"]["llm_calls"] / max(1, flock["mixed"]["llm_calls"]), 2)
        ratios["mixed_throughput_flock_over_gptcache"] = rounded(
            flock["mixed"]["throughput_rps"] / gpt["mixed"]["throughput_rps"], 2)
        ratios["hit_throughput_flock_over_gptcache"] = rounded(
            flock["warm"]["hit_throughput_rps"] / gpt["warm"]["hit_throughput_rps"], 2)
    return ratios


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = machine()
    workload = build(args.questions, args.requests, args.zipf, args.reworded, args.seed)
    judge = Judge(workload, args.tokens)
    log(f"workload: {args.requests} requests over {args.questions} questions, "
        f"{workload.unique_questions()} of them asked, reworded share "
        f"{workload.reworded_share:.3f}")
    if "gptcache" in args.systems:
        gptcache_venv.ensure()  # before anything starts: the first time takes minutes
    results: dict[str, Any] = {}
    runners = {"flock": run_flock, "none": run_none, "gptcache": run_gptcache,
               "flock-cluster": run_flock_cluster}  # fmt: skip
    with bench_stack(args.lease_ms, args.timeout, args.keep_logs) as bench:
        for system in SYSTEMS:
            if system in args.systems:
                results[system] = runners[system](bench, workload, judge, args)
    floors = _floors(results)
    return {
        "bench": "load",
        "workload": {
            "questions": args.questions,
            "requests": args.requests,
            "unique_questions": workload.unique_questions(),
            "unique_prompts": workload.unique_prompts(),
            "asked_in_both_forms": workload.asked_in_both_forms(),
            "zipf_s": args.zipf,
            "reworded_share": round(workload.reworded_share, 3),
            "seed": args.seed,
        },
        "llm_latency_s": args.latency,
        "tokens_per_answer": args.tokens,
        "semantic_threshold": {"flock_cosine": args.threshold,
                               "gptcache_similarity": (1 + args.threshold) / 2},
        "gptcache_setup": {"embedding": args.gptcache_embedding,
                           "data": "var/ (disk)" if args.gptcache_on_disk else "/dev/shm (memory)"},
        "client": {
            "mixed": (f"open loop at {args.rate} req/s" if args.rate
                      else f"closed loop, {args.concurrency} clients"),
            "warm": f"closed loop, {args.concurrency} clients, >= {args.warm_seconds} s",
            "processes": args.client_processes,
            "timeout_s": args.timeout,
        },
        "web_workers": WEB_WORKERS,
        "machine": info,
        **results,
        "ratios": _ratios(results),
        "floors": floors,
        # Floors left unmeasured (ok null) by --systems do not count; without flock, none is.
        "ok": bool(floors) and all(f["ok"] for f in floors.values() if f["ok"] is not None),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=200, help="distinct questions N")
    parser.add_argument("--requests", type=int, default=2000, help="requests per phase")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop clients")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="open loop at this many requests/s in the mixed phase (0: closed)")
    parser.add_argument("--max-connections", type=int, default=2000,
                        help="open loop: connections at most (default 2000)")
    parser.add_argument("--latency", type=float, default=0.5, help="stand-in LLM latency, s")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per stand-in answer")
    parser.add_argument("--reworded", type=float, default=0.2,
                        help="share of requests asking the rewording (default 0.2)")
    parser.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent s (default 1)")
    parser.add_argument("--threshold", type=float, default=0.8,
                        help="cosine threshold: Flock's SEMANTIC_THRESHOLD, and GPTCache's "
                             "similarity_threshold set to match it (default 0.8)")
    parser.add_argument("--warm-seconds", type=float, default=5.0,
                        help="the warm phase repeats the sequence until this long (default 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--gptcache-embedding", choices=("sbert", "onnx"), default="sbert",
                        help="GPTCache's embedding: its SBERT class on the MiniLM files "
                             "(default), or Flock's int8 ONNX export of the same model")
    parser.add_argument("--gptcache-on-disk", action="store_true",
                        help="GPTCache's sqlite and faiss files under var/ (default: /dev/shm)")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60,
                        help="client timeout and REQUEST_TIMEOUT_S, seconds (default 60)")
    parser.add_argument("--lease-ms", type=int, default=10000, help="LOCK_LEASE_MS")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the process logs (kept anyway on error)")
    args = parser.parse_args(argv)
    if min(args.questions, args.requests, args.concurrency, args.client_processes) < 1:
        parser.error("--questions, --requests, --concurrency, --client-processes must be >= 1")
    if not 0 <= args.reworded <= 1 or not 0 < args.threshold < 1 or args.rate < 0:
        parser.error("--reworded must be within 0..1, --threshold within (0, 1), --rate >= 0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    exit_on_sigterm()
    summary = run(args)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
