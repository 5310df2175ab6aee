"""Hold: N concurrent requests parked on ONE web process for one slow answer.

    python -m bench.hold [--n 10000] [--latency 25] [--clients 2] [--timeout 120]
                         [--no-baseline] [--keep-logs]

Starts its own Ollama stand-in (in-process thread), a PostgreSQL database with one user and its
API key, the Celery workers, and one web process: the Procfile's `web` command itself, run by
/bin/sh as honcho runs it, with WEB_CONCURRENCY=1 and every other setting at the Procfile's
defaults (worker connections, listen backlog, keep-alive), started with the soft open-file
limit of a systemd service (1024), which the command raises to the hard limit itself.

1. Flock: N concurrent POST /api/v1/chat with one fresh prompt, released together. The stand-in
   holds the one LLM call --latency seconds from the release, or longer when not all N have
   parked by then: until 3 s after they have (RSS sampled with all of them waiting), at most
   until --timeout - 40 s. Floors: all N answered (HTTP 200, one and the same answer), every
   one of them parked while the LLM ran (status miss or coalesced: none came after the
   answer), exactly one LLM call, peak RSS of the gunicorn worker <= 500 MB.
2. Baseline: the same N requests on the same command serving bench/sleep_app.py instead, a
   Flask app that parks each request on one event, set as long after the first request as
   Flock's LLM call was held. What remains there is gunicorn, gevent and Flask holding N
   sockets and greenlets, so "Flock minus baseline" is what Flock's waiting itself costs
   (API key, rate limit, lease, wake-up registration, polling, request log): RSS per request
   and CPU, side by side.

A thread samples every 0.1 s: the worker's and the master's RSS (VmRSS from /proc); how many
connections the worker has accepted (server-side established connections of the port minus
its listen queue, from `ss`); how many requests have parked, counted as MGET calls on the
Redis server (each request's first look at its key, right before it waits: exact when the
bench has its Redis server to itself, e.g. FLOCK_BENCH_REDIS pointing at a private one); and
the stand-in's call counter (when the LLM call started and returned). Times are seconds from
the release of the requests; "answer_all_after_llm_s" runs from the stand-in's answer to the
last response.

The clients run in --clients processes of their own (asyncio, raw HTTP/1.1, one connection
per request, `Connection: close`; see bench/burst.py for why not httpx), each with its
RLIMIT_NOFILE raised to the hard limit, all released at the same instant. cpu_s.client is
their own CPU time. TcpExtListenOverflows/ListenDrops (/proc/net/netstat, the whole machine)
say whether the kernel dropped connection attempts because the listen queue was full. Needs
`ss` (iproute2).

Prints one JSON summary on stdout; progress goes to stderr. Exit status 1 when a floor is
missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import resource
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from honcho.environ import parse_procfile

from bench.burst import _request_bytes
from bench.common import (
    CACHE_URL,
    CpuSnapshot,
    bench_stack,
    cpu_used,
    exit_on_sigterm,
    log,
    machine,
    percentile,
    rounded,
)
from tests.ollama_standin import StandIn
from tests.stack import ROOT, Proc, Stack, _get_ok, _wait_for, free_port

RSS_FLOOR_MB = 500
FLOCK_APP = "webapp:create_app()"
BASELINE_APP = "bench.sleep_app:create_app()"
SAMPLE_S = 0.1
SETTLE_S = 3.0  # RSS sampled this long with all N parked before the LLM answers
HOLD_MARGIN_S = 40  # held at most until --timeout minus this: time left to answer all N
SYSTEMD_SOFT_NOFILE = 1024


# --- the web process: the Procfile's command ------------------------------------------


def procfile_web() -> str:
    return parse_procfile((ROOT / "Procfile").read_text()).processes["web"]


def start_web(stack: Stack, name: str, app: str, extra_env: dict[str, str]) -> tuple[Proc, str]:
    """The Procfile's web command through /bin/sh (as honcho runs it), serving `app`, with
    one worker on a free port. Its metrics directory is private (the command empties it)."""
    command = procfile_web()
    if FLOCK_APP not in command:
        raise RuntimeError(f"the Procfile's web command does not serve {FLOCK_APP}: {command}")
    port = free_port()
    env = {
        **os.environ,
        **stack.env,
        **extra_env,
        "WEB_CONCURRENCY": "1",
        "PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(stack.logdir / f"prometheus-{name}"),
        # gunicorn of this virtualenv, as scripts/run.py does for honcho
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    # Started as systemd starts a service: a soft open-file limit of 1024 (LimitNOFILE's
    # default), which the command must raise itself to hold N sockets.
    command = f"ulimit -Sn {SYSTEMD_SOFT_NOFILE}; {command.replace(FLOCK_APP, app)}"
    log_path = stack.logdir / f"{name}.log"
    with open(log_path, "wb") as out:
        popen = subprocess.Popen(
            ["/bin/sh", "-c", command], cwd=ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    proc = Proc(name, popen, log_path)
    stack.procs[name] = proc  # stopped with the stack, also on error
    url = f"http://127.0.0.1:{port}"
    _wait_for(lambda: _get_ok(f"{url}/healthz"), proc, name)
    return proc, url


def worker_pid(master_pid: int) -> int:
    """The one gunicorn worker: the master's child (`exec gunicorn` kept the shell's pid)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(raw[raw.rindex(")") + 2 :].split()[1]) == master_pid:
                return int(entry)
    raise RuntimeError(f"gunicorn master {master_pid} has no worker")


def rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) / 1024 if match else None


def nofile_limit(pid: int) -> dict[str, int | str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return {"soft": int(soft) if soft.isdigit() else soft,
                    "hard": int(hard) if hard.isdigit() else hard}  # fmt: skip
    return {}


def listen_queue(port: int) -> tuple[int, int]:
    """(connections waiting in the listen queue, the queue's size) of the port's socket."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True)
    fields = out.stdout.split()
    return (int(fields[1]), int(fields[2])) if len(fields) >= 3 else (0, 0)


def established(port: int) -> int:
    out = subprocess.run(["ss", "-tnH", "state", "established", f"sport = :{port}"],
                         capture_output=True, text=True)  # fmt: skip
    return out.stdout.count("\n")


def listen_counters() -> dict[str, int]:
    """TcpExt ListenOverflows and ListenDrops of the machine (network namespace)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return {k: int(table.get(k, 0)) for k in ("ListenOverflows", "ListenDrops")}
    return {"ListenOverflows": 0, "ListenDrops": 0}


def sysctl(name: str) -> int | None:
    try:
        return int(Path(f"/proc/sys/{name.replace('.', '/')}").read_text().split()[0])
    except (OSError, ValueError):
        return None


# --- the sampler ----------------------------------------------------------------------


def redis_counts(client: redis.Redis | None) -> dict[str, int]:
    """Commands the Redis server has processed: MGET calls (each parked request's first look
    at its key) and all of them."""
    if client is None:
        return {"mget": 0, "total": 0}
    stats = client.info("commandstats")
    return {"mget": int(stats.get("cmdstat_mget", {}).get("calls", 0)),
            "total": sum(int(v["calls"]) for v in stats.values())}  # fmt: skip


@dataclass
class Sampler:
    """Samples RSS, accepted and parked requests, and the stand-in while the requests wait."""

    master: int
    worker: int
    port: int
    n: int
    standin: StandIn | None = None
    redis: redis.Redis | None = None
    started: float = 0.0
    rss_worker_peak: float = 0.0
    rss_master_peak: float = 0.0
    accepted_peak: int = 0
    queue_peak: int = 0
    all_accepted_at: float | None = None
    all_parked_at: float | None = None
    _mget_before: int = 0
    llm_started_at: float | None = None
    llm_released_at: float | None = None
    llm_returned_at: float | None = None
    hold_s: float = 0.0  # the stand-in answers this long after the release...
    hold_max_s: float = 0.0  # ...or later, when not all have parked by then, up to this
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, at: float) -> None:
        self.started = at
        self._mget_before = redis_counts(self.redis)["mget"]
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._release()  # the LLM call is never left hanging

    def _release(self) -> None:
        if self.standin is not None and self.llm_released_at is None:
            self.standin.configure(hang=False)
            self.llm_released_at = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            now = time.monotonic()
            self.rss_worker_peak = max(self.rss_worker_peak, rss_mb(self.worker) or 0.0)
            self.rss_master_peak = max(self.rss_master_peak, rss_mb(self.master) or 0.0)
            if self.standin is not None:
                calls = self.standin.calls()
                if calls["chat"] and self.llm_started_at is None:
                    self.llm_started_at = now
                if self.llm_started_at is not None and self.llm_returned_at is None:
                    if calls["in_flight"] == 0:
                        self.llm_returned_at = now
            if self.all_accepted_at is None and now >= self.started:
                # Established connections not yet accepted sit in the listen queue.
                queued, _ = listen_queue(self.port)
                accepted = established(self.port) - queued
                self.queue_peak = max(self.queue_peak, queued)
                self.accepted_peak = max(self.accepted_peak, accepted)
                if accepted >= self.n:
                    self.all_accepted_at = now
            if self.redis is not None and self.all_parked_at is None and now >= self.started:
                # A request parks right after its first MGET of the key (webapp.chat._wait).
                if redis_counts(self.redis)["mget"] - self._mget_before >= self.n:
                    self.all_parked_at = now
            # The stand-in holds the one LLM call for hold_s, and longer until all N have
            # parked and RSS has been sampled a while with all of them waiting (hold_max_s).
            parked = self.all_parked_at is not None and now >= self.all_parked_at + SETTLE_S
            if now >= self.started + self.hold_s and (parked or self.standin is None):
                self._release()
            elif now >= self.started + self.hold_max_s:
                self._release()


# --- the clients ----------------------------------------------------------------------


@dataclass
class Reply:
    done_at: float
    connected_at: float | None = None  # the request was written (the kernel accepted it)
    status: int | None = None
    content: str | None = None
    cache_status: str | None = None
    error: str | None = None  # its kind: "connect: TimeoutError", "HTTP 504 timeout"...
    detail: str | None = None


async def _one(host: str, port: int, request: bytes, timeout_s: float) -> Reply:
    connected_at = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                await writer.drain()
                connected_at = time.monotonic()
                raw = await reader.read()  # until the server closes (Connection: close)
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        phase = "response" if connected_at else "connect"
        return Reply(time.monotonic(), connected_at, error=f"{phase}: {type(exc).__name__}",
                     detail=str(exc)[:200])  # fmt: skip
    reply = Reply(time.monotonic(), connected_at)
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        reply.error, reply.detail = "response: not HTTP", repr(raw[:100])
        return reply
    reply.status = int(head.split(b" ", 2)[1])
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if reply.status != 200:
        code = data.get("error", {}).get("code") if isinstance(data, dict) else None
        reply.error = f"HTTP {reply.status} {code or ''}".strip()
        reply.detail = body[:200].decode(errors="replace")
    elif not isinstance(data, dict) or "message" not in data:
        reply.error, reply.detail = "bad body", body[:200].decode(errors="replace")
    else:
        reply.content = data["message"].get("content")
        reply.cache_status = (data.get("cache") or {}).get("status")
    return reply


async def _hold_async(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    n: int,
    timeout_s: float,
    start_at: float,
) -> list[Reply]:
    host, port, request = _request_bytes(url, body, headers)
    gate = asyncio.Event()

    async def one() -> Reply:
        await gate.wait()
        return await _one(host, port, request, timeout_s)

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    gate.set()
    return await asyncio.gather(*tasks)


def client_hold(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    n: int,
    timeout_s: float,
    start_at: float,
) -> tuple[list[Reply], float]:
    """Runs in a client process: n identical POSTs released at `start_at` (monotonic, the
    same clock in every process). Returns the replies and this process's CPU seconds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        if hard != resource.RLIM_INFINITY and hard < n + 64:
            raise RuntimeError(f"RLIMIT_NOFILE hard limit {hard} < {n + 64}: use more --clients")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cpu = time.process_time()
    replies = asyncio.run(_hold_async(url, body, headers, n, timeout_s, start_at))
    return replies, time.process_time() - cpu


def hold(
    pool: ProcessPoolExecutor,
    clients: int,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    n: int,
    timeout_s: float,
    start_at: float,
) -> tuple[list[Reply], float]:
    shares = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
    futures = [pool.submit(client_hold, url, body, headers, share, timeout_s, start_at)
               for share in shares if share]  # fmt: skip
    replies: list[Reply] = []
    cpu = 0.0
    for future in futures:
        part, part_cpu = future.result()
        replies += part
        cpu += part_cpu
    return replies, cpu


# --- one measurement ------------------------------------------------------------------


def measure(
    pool: ProcessPoolExecutor,
    args: argparse.Namespace,
    web: Proc,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    standin: StandIn | None,
    client: redis.Redis | None,
) -> dict[str, Any]:
    master = web.popen.pid
    worker = worker_pid(master)
    port = int(url.rsplit(":", 1)[1])
    rss_before = rss_mb(worker) or 0.0
    log(f"gunicorn master {master}, worker {worker}, port {port}")
    overflows_before = listen_counters()
    commands_before = redis_counts(client)["total"]
    before = CpuSnapshot.take(master)
    sampler = Sampler(
        master, worker, port, args.n, standin, client,
        hold_s=args.latency, hold_max_s=args.timeout - HOLD_MARGIN_S,
    )  # fmt: skip
    start_at = time.monotonic() + 1.0  # every client process has its tasks parked by then
    sampler.start(start_at)
    try:
        replies, client_cpu = hold(pool, args.clients, f"{url}/api/v1/chat", body, headers,
                                   args.n, args.timeout + 10, start_at)  # fmt: skip
        time.sleep(0.5)  # a late duplicate LLM call would show up here
    finally:
        sampler.stop()
    cpu = cpu_used(before, CpuSnapshot.take(master), client_cpu)
    overflows = {k: v - overflows_before[k] for k, v in listen_counters().items()}
    out = summarize(args, replies, sampler, rss_before, cpu, overflows, start_at, worker)
    if client is not None:
        out["redis_commands_per_request"] = rounded(
            (redis_counts(client)["total"] - commands_before) / args.n, 2
        )
    return out


def summarize(
    args: argparse.Namespace,
    replies: list[Reply],
    sampler: Sampler,
    rss_before: float,
    cpu: dict[str, Any],
    overflows: dict[str, int],
    start_at: float,
    worker: int,
) -> dict[str, Any]:
    ok = [r for r in replies if r.error is None]
    errors: dict[str, dict[str, Any]] = {}
    for r in sorted(replies, key=lambda r: r.done_at):
        if r.error is None:
            continue
        kind = errors.setdefault(r.error, {"count": 0, "first_s": rounded(r.done_at - start_at),
                                           "sample": r.detail or ""})  # fmt: skip
        kind["count"] += 1
        kind["last_s"] = rounded(r.done_at - start_at)  # seconds after the release
    done = sorted(r.done_at for r in ok)
    connected = [r.connected_at for r in replies if r.connected_at is not None]
    latencies = sorted(r.done_at - start_at for r in ok)
    statuses = Counter(r.cache_status for r in ok if r.cache_status)
    out: dict[str, Any] = {
        "requests": len(replies),
        "answered": len(ok),
        "errors": sum(kind["count"] for kind in errors.values()),
        "errors_by_kind": dict(sorted(errors.items(), key=lambda kv: -kv[1]["count"])),
        "distinct_answers": len({r.content for r in ok}),
    }
    if statuses:
        out["statuses"] = dict(statuses.most_common())
    out |= {
        # from the release of the requests: accepted by the worker, parked (Flock: waiting
        # for the answer after its first look at the key)
        "all_accepted_s": rounded(
            sampler.all_accepted_at - start_at if sampler.all_accepted_at else None
        ),
        "all_parked_s": rounded(
            sampler.all_parked_at - start_at if sampler.all_parked_at else None
        ),
        "all_connected_s": rounded(max(connected) - start_at if connected else None),
        "accepted_peak": sampler.accepted_peak,
        "listen_queue_peak": sampler.queue_peak,
        "listen_overflows": overflows["ListenOverflows"],
        "listen_drops": overflows["ListenDrops"],
    }
    if sampler.llm_returned_at is not None:
        out["llm_started_s"] = rounded(sampler.llm_started_at - start_at)  # type: ignore[operator]
        out["llm_released_s"] = rounded(sampler.llm_released_at - start_at)  # type: ignore[operator]
        out["llm_returned_s"] = rounded(sampler.llm_returned_at - start_at)
        out["answer_all_after_llm_s"] = rounded(done[-1] - sampler.llm_returned_at if done
                                                else None)  # fmt: skip
    out |= {
        "answer_spread_s": rounded(done[-1] - done[0] if done else None),
        "latency_s": {"p50": rounded(percentile(latencies, 50)),
                      "max": rounded(latencies[-1] if latencies else None)},
        "rss_mb": {
            "worker_before": round(rss_before, 1),
            "worker_peak": round(sampler.rss_worker_peak, 1),
            "master_peak": round(sampler.rss_master_peak, 1),
            "worker_per_request_kb": round(
                (sampler.rss_worker_peak - rss_before) * 1024 / max(1, args.n), 1),
        },
        "worker_nofile": nofile_limit(worker) if Path(f"/proc/{worker}").exists() else None,
        "cpu_s": cpu,
    }  # fmt: skip
    return out


# --- the run --------------------------------------------------------------------------


def _warm_up(pool: ProcessPoolExecutor, url: str, headers: dict[str, str]) -> None:
    """Distinct prompts through the web process: its pools and wake-up hub open, the
    embedder loads its model, the API key is remembered (for 10 s: the burst follows)."""
    for i in range(4):
        body = {"prompt": f"warm-up {i} {uuid.uuid4().hex}"}
        replies, _ = pool.submit(client_hold, f"{url}/api/v1/chat", body, headers, 8, 120,
                                 time.monotonic()).result()  # fmt: skip
        bad = [r for r in replies if r.error]
        if bad:
            raise RuntimeError(f"warm-up failed: {bad[0].error} {bad[0].detail}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = machine()
    pool = ProcessPoolExecutor(max_workers=args.clients,
                               mp_context=multiprocessing.get_context("spawn"))  # fmt: skip
    baseline = None
    try:
        # REQUEST_TIMEOUT_S = --timeout; the client gives up 10 s later, so a 504 shows.
        with bench_stack(10000, args.timeout, args.keep_logs) as bench:
            standin, stack = bench.standin, bench.stack
            log("starting Celery workers and the Procfile's web command (one worker)")
            stack.start_worker("embedder", "embed", concurrency=2, pool="threads")
            stack.start_worker("llm", "llm", concurrency=8, pool="threads")
            web, url = start_web(stack, "web", FLOCK_APP, {})
            limits = {
                "command": procfile_web(),
                "listen_backlog": listen_queue(int(url.rsplit(":", 1)[1]))[1],
                "nofile_soft_at_start": SYSTEMD_SOFT_NOFILE,
                "master_nofile": nofile_limit(web.popen.pid),
                "somaxconn": sysctl("net.core.somaxconn"),
                "tcp_max_syn_backlog": sysctl("net.ipv4.tcp_max_syn_backlog"),
            }
            _warm_up(pool, url, bench.headers)
            standin.reset()
            standin.configure(hang=True)  # released by the Sampler
            prompt = f"Hold {uuid.uuid4().hex[:12]}: why is the sky blue?"
            log(
                f"Flock: {args.n} concurrent POST /api/v1/chat; the LLM answers after "
                f"{args.latency:g} s, or 3 s after all have parked if later"
            )
            client = redis.Redis.from_url(CACHE_URL)
            flock = measure(pool, args, web, url, {"prompt": prompt}, bench.headers, standin,
                            client)  # fmt: skip
            client.close()
            flock["llm_calls"] = standin.calls()["chat"]
            log(
                f"Flock: {flock['answered']}/{args.n} answered, {flock['llm_calls']} LLM "
                f"call(s), {flock['errors']} error(s), peak worker RSS "
                f"{flock['rss_mb']['worker_peak']} MB, all parked after {flock['all_parked_s']} s"
            )
            web.stop()

            if not args.no_baseline:
                # Held as long as Flock's requests were (from the first one on).
                hold_s = flock.get("llm_released_s") or args.latency
                log(f"baseline: {args.n} requests on bench.sleep_app, released after {hold_s} s")
                bare, bare_url = start_web(stack, "sleep", BASELINE_APP, {"SLEEP_S": str(hold_s)})
                baseline = measure(pool, args, bare, bare_url, {"prompt": prompt}, {}, None,
                                   None)  # fmt: skip
                log(
                    f"baseline: {baseline['answered']}/{args.n} answered, "
                    f"{baseline['errors']} error(s), peak worker RSS "
                    f"{baseline['rss_mb']['worker_peak']} MB"
                )
    finally:
        pool.shutdown(cancel_futures=True)

    waited = sum(flock.get("statuses", {}).get(s, 0) for s in ("miss", "coalesced"))
    rss_peak = flock["rss_mb"]["worker_peak"]
    floors = {
        "answered": {"value": flock["answered"], "floor": f"== {args.n}",
                     "ok": flock["answered"] == args.n},
        "distinct_answers": {"value": flock["distinct_answers"], "floor": "== 1",
                             "ok": flock["distinct_answers"] == 1},
        # Otherwise some arrived after the answer: a longer --latency is needed to measure.
        "parked_while_llm_ran": {"value": waited, "floor": f"== {args.n}",
                                 "ok": waited == args.n},
        "llm_calls": {"value": flock["llm_calls"], "floor": "== 1",
                      "ok": flock["llm_calls"] == 1},
        "worker_rss_peak_mb": {"value": rss_peak, "floor": f"<= {RSS_FLOOR_MB}",
                               "ok": 0 < rss_peak <= RSS_FLOOR_MB},
    }  # fmt: skip
    summary: dict[str, Any] = {
        "bench": "hold",
        "n": args.n,
        "llm_latency_s": args.latency,
        "machine": info,
        "web": {"server": "gunicorn, gevent, one worker (the Procfile's web command)", **limits},
        "client": {
            "kind": "asyncio, raw HTTP/1.1, one connection per request (Connection: close)",
            "processes": args.clients,
            "timeout_s": args.timeout + 10,
        },
        "flock": flock,
    }
    if baseline is not None:
        summary["baseline"] = baseline
        summary["ratios"] = ratios(flock, baseline)
    summary["floors"] = floors
    summary["ok"] = all(f["ok"] for f in floors.values())
    return summary


def ratios(flock: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    def ratio(a: float | None, b: float | None) -> float | None:
        return rounded(a / b) if a is not None and b else None

    return {
        "worker_rss_peak_flock_over_baseline": ratio(flock["rss_mb"]["worker_peak"],
                                                     baseline["rss_mb"]["worker_peak"]),
        "rss_per_request_flock_over_baseline": ratio(
            flock["rss_mb"]["worker_per_request_kb"], baseline["rss_mb"]["worker_per_request_kb"]),
        "gunicorn_cpu_flock_over_baseline": ratio(flock["cpu_s"]["gunicorn"],
                                                  baseline["cpu_s"]["gunicorn"]),
        "all_accepted_flock_over_baseline": ratio(flock["all_accepted_s"],
                                                  baseline["all_accepted_s"]),
        "answer_spread_flock_over_baseline": ratio(flock["answer_spread_s"],
                                                   baseline["answer_spread_s"]),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="N concurrent requests parked on one web process for one slow answer."
    )
    parser.add_argument("--n", type=int, default=10_000, help="concurrent requests (default 10000)")
    parser.add_argument(
        "--latency",
        type=float,
        default=25.0,
        help="seconds the stand-in holds the LLM call; longer if not all N have parked by "
        "then: until 3 s after they have, at most --timeout - 40 s (default 25)",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=2,
        help="client processes sharing the N connections (default 2)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120,
        help="REQUEST_TIMEOUT_S of the web; the client waits 10 s longer (default 120)",
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the bench.sleep_app baseline"
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the gunicorn and Celery logs (kept anyway on error)",
    )
    args = parser.parse_args(argv)
    if args.n < 1 or args.clients < 1 or args.latency <= 0:
        parser.error("--n and --clients must be >= 1, --latency > 0")
    if args.timeout - HOLD_MARGIN_S < args.latency:
        parser.error(f"--timeout must leave {HOLD_MARGIN_S} s after --latency to answer all")
    exit_on_sigterm()
    summary = run(args)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
