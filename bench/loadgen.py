"""The load generator of bench.load: client processes that send one phase's requests to one
system, closed loop (C clients, each sending its next request when the last one is answered)
or open loop (requests sent at a fixed rate whatever the answers do), and record each answer.

Each process runs asyncio with raw HTTP/1.1 on keep-alive connections (the client of
bench/burst.py, kept alive: a hit costs the server one request, not a TCP handshake too). A
logical client holds one connection per server it talks to. Latency is measured from the
moment a request was due: in the open loop that is its scheduled time, so a server that falls
behind shows it in the latencies (no coordinated omission).

The three systems, as a user would call them:

- flock:    POST /api/v1/chat {"prompt"}; the answer says how it was served (cache.status).
- none:     POST /api/chat straight to the Ollama stand-in ("stream": false): every request
            is an LLM call.
- gptcache: GPTCache's own server: POST /get {"prompt"}; on a miss (answer null) the client
            calls the stand-in, then POST /put {"prompt", "answer"}, and only then counts the
            request as answered (GPTCache's adapters also store before they return).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench.workload import ollama_body

# One answer per request: (index in the phase's request list, seconds from the phase start to
# when it was due, latency in seconds, outcome, answer text, tokens the system says it saved,
# error message). Outcome: flock's cache.status, "hit" or "miss" for gptcache, "miss" for
# none, "error" for any failure.
Record = tuple[int, float, float, str, str | None, int | None, str | None]


@dataclass
class Target:
    kind: str  # flock | none | gptcache
    standin_url: str
    model: str
    url: str = ""  # flock's web tier or GPTCache's server; unused for none
    api_key: str = ""


@dataclass
class Plan:
    """What one client process sends: its share of the phase's requests."""

    target: Target
    prompts: list[tuple[int, str]]  # (index in the phase, prompt)
    timeout_s: float
    clients: int = 0  # closed loop: logical clients in this process
    min_seconds: float = 0.0  # closed loop: cycle the prompts again until this long
    rate: float = 0.0  # open loop: requests per second of the whole phase
    max_clients: int = 1000  # open loop: logical clients (connections) at most in this process
    start_at: float = 0.0  # time.monotonic() of the phase start, the same in every process


@dataclass
class Sync:
    """Shared between the parent and the client processes of one phase."""

    ready: Any  # multiprocessing.Value: processes imported and waiting for `go`
    done: Any  # multiprocessing.Value: requests answered so far (the progress bar)
    start_at: Any  # multiprocessing.Value: the phase start, set before `go`
    go: Any  # multiprocessing.Event
    results: Any  # multiprocessing.Queue: one dict per process


class HttpError(Exception):
    pass


class _Connection:
    """One keep-alive HTTP/1.1 connection; reopened after an error or a `Connection: close`."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.netloc = parts.netloc
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def post(self, path: str, body: bytes, headers: str = "") -> tuple[int, bytes]:
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.netloc}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body
        )
        reused = self._writer is not None
        try:
            return await self._exchange(request)
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            # A server closes a keep-alive connection left idle too long (gunicorn after 2 s);
            # the request then meets a closed socket before any answer. Like urllib3, send it
            # once more on a new connection: the server never saw it.
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            return await self._exchange(request)

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        try:
            self._writer.write(request)
            head = await self._reader.readuntil(b"\r\n\r\n")
            status, length, close = _parse_head(head)
            data = await self._reader.readexactly(length)
        except BaseException:
            self.close()  # the stream is out of step (or cancelled mid-request)
            raise
        if close:
            self.close()
        return status, data


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1."):
        raise HttpError(f"not an HTTP response: {lines[0][:60]!r}")
    status = int(lines[0].split(" ", 2)[1])
    length, close = None, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            close = value.strip().lower() == "close"
        elif name == "transfer-encoding":
            raise HttpError("chunked responses are not expected here")
    if length is None:
        raise HttpError("response without Content-Length")
    return status, length, close


def _json_ok(status: int, data: bytes, what: str) -> Any:
    if status != 200:
        raise HttpError(f"{what}: HTTP {status}: {data[:200].decode(errors='replace')}")
    return json.loads(data)


class _Client:
    """One logical client: a connection to each server it talks to."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.llm = _Connection(target.standin_url)
        self.cache = _Connection(target.url) if target.url else None
        self.auth = f"Authorization: Bearer {target.api_key}\r\n" if target.api_key else ""

    def close(self) -> None:
        self.llm.close()
        if self.cache is not None:
            self.cache.close()

    async def _llm(self, prompt: str) -> str:
        body = json.dumps(ollama_body(self.target.model, prompt)).encode()
        data = _json_ok(*await self.llm.post("/api/chat", body), "LLM")
        return data["message"]["content"]

    async def ask(self, prompt: str) -> tuple[str, str, int | None]:
        """(outcome, answer, tokens saved as the system reports them)."""
        kind = self.target.kind
        if kind == "none":
            return "miss", await self._llm(prompt), None
        assert self.cache is not None
        body = json.dumps({"prompt": prompt}).encode()
        if kind == "flock":
            data = _json_ok(*await self.cache.post("/api/v1/chat", body, self.auth), "flock")
            status = data["cache"]["status"]
            usage = data.get("usage") or {}
            saved = 0 if status == "miss" else (
                (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
            )
            return status, data["message"]["content"], saved
        data = _json_ok(*await self.cache.post("/get", body), "gptcache /get")
        if data.get("answer"):
            return "hit", data["answer"], None
        answer = await self._llm(prompt)
        put = json.dumps({"prompt": prompt, "answer": answer}).encode()
        _json_ok(*await self.cache.post("/put", put), "gptcache /put")
        return "miss", answer, None


async def _one(client: _Client, index: int, prompt: str, due: float, start_at: float,
               timeout_s: float) -> Record:
    try:
        outcome, answer, saved = await asyncio.wait_for(client.ask(prompt), timeout_s)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
            HttpError, ValueError, KeyError, TypeError) as exc:
        client.close()
        message = f"{type(exc).__name__}: {exc}"[:300]
        return index, due - start_at, time.monotonic() - due, "error", None, None, message
    return index, due - start_at, time.monotonic() - due, outcome, answer, saved, None


async def _closed(plan: Plan, done: Any) -> list[Record]:
    records: list[Record] = []
    order = itertools.cycle(plan.prompts)
    deadline = plan.start_at + plan.min_seconds
    issued = 0

    def next_request() -> tuple[int, str] | None:
        nonlocal issued
        if issued >= len(plan.prompts) and time.monotonic() >= deadline:
            return None
        issued += 1
        return next(order)

    async def client_loop() -> None:
        client = _Client(plan.target)
        try:
            while (item := next_request()) is not None:
                due = time.monotonic()
                records.append(await _one(client, *item, due, plan.start_at, plan.timeout_s))
                with done.get_lock():
                    done.value += 1
        finally:
            client.close()

    await asyncio.sleep(max(0.0, plan.start_at - time.monotonic()))
    await asyncio.gather(*(client_loop() for _ in range(plan.clients)))
    return records


async def _open(plan: Plan, done: Any) -> list[Record]:
    idle: list[_Client] = []
    slots = asyncio.Semaphore(plan.max_clients)
    opened: set[_Client] = set()

    async def fire(index: int, prompt: str, due: float) -> Record:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        async with slots:  # beyond max_clients a request waits; its latency counts from `due`
            client = idle.pop() if idle else _Client(plan.target)
            opened.add(client)
            try:
                return await _one(client, index, prompt, due, plan.start_at, plan.timeout_s)
            finally:
                idle.append(client)
                with done.get_lock():
                    done.value += 1

    tasks = [
        asyncio.create_task(fire(index, prompt, plan.start_at + index / plan.rate))
        for index, prompt in plan.prompts
    ]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for client in opened:
            client.close()


def run_plan(plan: Plan, sync: Sync) -> None:
    """Entry point of a client process: waits for the start, sends the plan, puts its
    records and the CPU time it spent sending."""
    with sync.ready.get_lock():
        sync.ready.value += 1
    sync.go.wait()
    plan.start_at = sync.start_at.value
    cpu = time.process_time()
    loop = _closed if plan.clients else _open
    records = asyncio.run(loop(plan, sync.done))
    sync.results.put({"pid": os.getpid(), "records": records,
                      "cpu_s": time.process_time() - cpu})
