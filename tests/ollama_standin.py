"""An Ollama stand-in: a small HTTP server speaking Ollama's wire format, for tests and benchmarks.

Answers are deterministic functions of the request. Requests that Ollama would answer differently
(other model, messages, system prompt, options, format) get different answers; identical requests
get identical ones, so a cache in front of it can be checked token for token.

Behaviour (latency, token pacing, failures, hangs) is changed at run time with a JSON control API
under /_standin/, or in-process with StandIn.configure() / reset() / calls():

    POST /_standin/config  {"latency_s": 0.5, "fail_times": 2, ...}  -> the resulting config
    POST /_standin/reset                                              -> the initial config
    GET  /_standin/config                                             -> the current config
    GET  /_standin/calls   -> {"chat", "generate", "total", "in_flight", "prompts"}

Run in the foreground:  python -m tests.ollama_standin --port 11434 --latency 0.3
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import select
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VERSION = "0.6.0"
# Listed by /api/tags while `models` is None (in which case any name not starting with "missing"
# is served, so tests can use whatever model name they like).
DEFAULT_MODELS = ("llama3.2:1b", "smollm2:135m")
FILLER = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua"
).split()
# Request fields that do not change what Ollama generates. They stay out of the answer's hash,
# because a cache is right to leave them out of its key.
NON_SEMANTIC_FIELDS = ("stream", "keep_alive")
# Tokens streamed before a configured midstream_error is emitted.
TOKENS_BEFORE_MIDSTREAM_ERROR = 3

_CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "latency_s": (int, float),
    "token_interval_s": (int, float),
    "tokens": (int,),
    "models": (list, tuple, type(None)),
    "fail_status": (int, type(None)),
    "fail_times": (int, type(None)),
    "midstream_error": (str, type(None)),
    "hang": (bool,),
    "reply": (str, type(None)),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """Stand-in behaviour. Frozen: a call keeps the snapshot it started with."""

    latency_s: float = 0.0  # before the first token (model load + prompt evaluation)
    token_interval_s: float = 0.0  # between two tokens
    tokens: int = 12  # tokens per answer
    models: tuple[str, ...] | None = None  # None: any name except "missing*"
    fail_status: int | None = None  # fail calls with this HTTP status and an Ollama error body
    fail_times: int | None = None  # only the next N calls fail (with fail_status, default 500)
    midstream_error: str | None = None  # emit {"error": ...} after a few tokens, then close
    hang: bool = False  # hold calls unanswered until cleared, reset, or the client leaves
    reply: str | None = None  # answer every call with exactly this text (e.g. "Yes")

    def updated(self, changes: dict[str, Any]) -> Config:
        """A copy with `changes` applied; ValueError names the first bad setting."""
        for key, value in changes.items():
            types = _CONFIG_TYPES.get(key)
            if types is None:
                raise ValueError(f"unknown setting {key!r}")
            # bool is an int subclass; only "hang" may be a bool.
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise ValueError(f"bad value for {key!r}: {value!r}")
        changes = dict(changes)
        if changes.get("models") is not None:
            if not all(isinstance(name, str) for name in changes["models"]):
                raise ValueError("models must be a list of names")
            changes["models"] = tuple(changes["models"])
        config = dataclasses.replace(self, **changes)
        if config.tokens < 1 or config.latency_s < 0 or config.token_interval_s < 0:
            raise ValueError("tokens must be >= 1 and delays >= 0")
        return config

    def accepts(self, model: str) -> bool:
        if self.models is None:
            return not model.startswith("missing")
        # Ollama treats a name without a tag as "<name>:latest".
        return model in self.models or (":" not in model and f"{model}:latest" in self.models)

    def listed_models(self) -> tuple[str, ...]:
        return DEFAULT_MODELS if self.models is None else self.models

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["models"] = None if self.models is None else list(self.models)
        return data


class _State:
    """Config and call counters shared by all handler threads."""

    def __init__(self, initial: Config) -> None:
        self.initial = initial
        self.config = initial
        self.stopping = False
        # Guards everything; notified on every config change so hung calls re-check `hang`.
        self.cond = threading.Condition()
        self.counts = {"chat": 0, "generate": 0}
        self.in_flight = 0
        self.prompts: list[str] = []

    def configure(self, changes: dict[str, Any]) -> Config:
        with self.cond:
            self.config = self.config.updated(changes)
            self.cond.notify_all()
            return self.config

    def reset(self) -> Config:
        with self.cond:
            self.config = self.initial
            self.counts = {"chat": 0, "generate": 0}
            self.prompts = []
            # in_flight is not zeroed: it describes connections that are still open, and their
            # end_call() would otherwise drive it negative.
            self.cond.notify_all()
            return self.config

    def calls(self) -> dict[str, Any]:
        with self.cond:
            return {
                **self.counts,
                "total": sum(self.counts.values()),
                "in_flight": self.in_flight,
                "prompts": list(self.prompts),
            }

    def begin_call(self, kind: str, prompt: str) -> None:
        with self.cond:
            self.counts[kind] += 1
            self.in_flight += 1
            self.prompts.append(prompt)

    def end_call(self) -> None:
        with self.cond:
            self.in_flight -= 1

    def wait_while_hung(self, client_gone: Callable[[], bool]) -> bool:
        """Block while `hang` is set. False if the call should not be answered any more."""
        while True:
            with self.cond:
                if self.stopping:
                    return False
                if not self.config.hang:
                    return True
                self.cond.wait(0.1)
            if client_gone():
                return False

    def start_answer(self) -> tuple[Config, int | None]:
        """The config a call runs with, and the HTTP status to fail it with, if any."""
        with self.cond:
            config = self.config
            if config.fail_times is not None:
                if config.fail_times <= 0:
                    return config, None
                self.config = dataclasses.replace(config, fail_times=config.fail_times - 1)
                return config, config.fail_status or 500
            return config, config.fail_status


def request_digest(request: dict[str, Any]) -> str:
    """Short hash of everything in a request that changes what Ollama would generate."""
    semantic = {k: v for k, v in request.items() if k not in NON_SEMANTIC_FIELDS}
    canonical = json.dumps(semantic, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def prompt_of(kind: str, request: dict[str, Any]) -> str:
    """The last user message of a chat, or a generate call's prompt."""
    if kind == "generate":
        prompt = request.get("prompt")
        return prompt if isinstance(prompt, str) else ""
    messages = request.get("messages")
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def answer_tokens(kind: str, request: dict[str, Any], count: int) -> list[str]:
    """The answer to a request: `count` tokens, each a word with its trailing space.

    The hash comes first so that two different requests never share an answer, even when `count`
    cuts the echoed prompt short.
    """
    echo = f"Answer to: {prompt_of(kind, request)}."
    words = [f"[{request_digest(request)}]", *echo.split()]
    words += itertools.islice(itertools.cycle(FILLER), count)
    return [word + " " for word in words[:count]]


def _prompt_token_count(kind: str, request: dict[str, Any]) -> int:
    if kind == "generate":
        texts = [request.get("system"), request.get("prompt")]
    else:
        texts = [m.get("content") for m in request.get("messages") or [] if isinstance(m, dict)]
    return max(1, sum(len(t.split()) for t in texts if isinstance(t, str)))


def _stats(
    kind: str, request: dict[str, Any], config: Config, started: int, first: int, count: int
) -> dict[str, Any]:
    """The counters of Ollama's final object; durations in ns, as Ollama reports them."""
    now = time.monotonic_ns()
    prompt_tokens = _prompt_token_count(kind, request)
    return {
        "done_reason": "stop",
        "total_duration": now - started,
        "load_duration": int(config.latency_s * 1e9),
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": prompt_tokens * 1_000,  # fake: 1 µs per prompt token
        "eval_count": count,
        "eval_duration": max(1, now - first),
    }


def _encode(obj: dict[str, Any]) -> bytes:
    # Compact, like Go's encoding/json, so bytes on the wire look like Ollama's.
    return json.dumps(obj, separators=(",", ":")).encode()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _model_details() -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "1.2B",
        "quantization_level": "Q8_0",
    }


def _model_entry(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-01-01T00:00:00Z",
        "size": 1_321_098_329,
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": _model_details(),
    }


def _injected_error(status: int) -> str:
    if status == 503:  # what Ollama says when its request queue is full
        return "server busy, please try again.  maximum pending requests exceeded"
    return f"stand-in: injected failure (HTTP {status})"


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 like Ollama (Go net/http): keep-alive, and chunked streaming so clients get each
    # line as soon as it is written.
    protocol_version = "HTTP/1.1"
    # A token line must leave at once, not wait for the ACK of the previous small write.
    disable_nagle_algorithm = True
    server: _Server

    @property
    def state(self) -> _State:
        return self.server.state

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    # -- routing --------------------------------------------------------------------------------

    def do_HEAD(self) -> None:  # the ollama CLI's heartbeat
        self.send_response(200 if self._route() == "/" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        route = self._route()
        if route == "/":
            self._send_text(200, "Ollama is running")
        elif route == "/api/tags":
            models = self.state.config.listed_models()
            self._send_json(200, {"models": [_model_entry(name) for name in models]})
        elif route == "/api/version":
            self._send_json(200, {"version": VERSION})
        elif route == "/_standin/calls":
            self._send_json(200, self.state.calls())
        elif route == "/_standin/config":
            self._send_json(200, self.state.config.to_json())
        else:
            self._send_text(404, "404 page not found")

    def do_POST(self) -> None:
        route = self._route()
        body, error = self._read_json()  # always read the body, or keep-alive desynchronises
        if route in ("/api/chat", "/api/generate"):
            self._call(route.removeprefix("/api/"), body, error)
        elif route == "/api/show":
            self._show(body, error)
        elif route == "/_standin/config":
            try:
                if error is not None:
                    raise ValueError(error)
                self._send_json(200, self.state.configure(body).to_json())
            except ValueError as exc:
                self._send_error(400, str(exc))
        elif route == "/_standin/reset":
            self._send_json(200, self.state.reset().to_json())
        else:
            self._send_text(404, "404 page not found")

    def _route(self) -> str:
        return self.path.split("?", 1)[0]

    # -- Ollama endpoints -----------------------------------------------------------------------

    def _show(self, body: dict[str, Any], error: str | None) -> None:
        name = body.get("model") or body.get("name")
        if error is not None or not isinstance(name, str):
            self._send_error(400, error or "model is required")
        elif not self.state.config.accepts(name):
            self._send_error(404, f'model "{name}" not found, try pulling it first')
        else:
            self._send_json(
                200,
                {
                    "modelfile": f"FROM {name}\n",
                    "parameters": "",
                    "template": "{{ .Prompt }}",
                    "details": _model_details(),
                    "model_info": {},
                    "capabilities": ["completion"],
                    "modified_at": "2025-01-01T00:00:00Z",
                },
            )

    def _call(self, kind: str, request: dict[str, Any], error: str | None) -> None:
        started = time.monotonic_ns()
        self.state.begin_call(kind, prompt_of(kind, request))
        try:
            if not self.state.wait_while_hung(self._client_gone):
                self.close_connection = True
                return
            config, fail_status = self.state.start_answer()
            if fail_status is not None:
                self._send_error(fail_status, _injected_error(fail_status))
            elif error is not None:
                self._send_error(400, error)
            elif not isinstance(request.get("model"), str) or not request["model"]:
                self._send_error(400, "model is required")
            elif not config.accepts(request["model"]):
                self._send_error(404, f'model "{request["model"]}" not found, try pulling it first')
            else:
                self._answer(kind, request, config, started)
        except OSError:  # the client left (or stop() shut the socket): nobody to answer
            self.close_connection = True
        finally:
            self.state.end_call()

    def _answer(self, kind: str, request: dict[str, Any], config: Config, started: int) -> None:
        model = request["model"]
        field = "message" if kind == "chat" else "response"

        def piece(text: str) -> Any:
            return {"role": "assistant", "content": text} if kind == "chat" else text

        if not request.get("messages" if kind == "chat" else "prompt"):
            # No input: Ollama only loads the model and says so, as one plain JSON object.
            load = {"model": model, "created_at": _now(), field: piece(""), "done_reason": "load"}
            self._send_json(200, {**load, "done": True})
            return

        tokens = answer_tokens(kind, request, config.tokens)
        if config.reply is not None:
            tokens = [word + " " for word in config.reply.split()] or [""]
        if config.midstream_error is not None:
            tokens = tokens[:TOKENS_BEFORE_MIDSTREAM_ERROR]
        time.sleep(config.latency_s)
        first_token = time.monotonic_ns()

        def reply(text: str, done: bool) -> dict[str, Any]:
            body = {"model": model, "created_at": _now(), field: piece(text), "done": done}
            if done:
                body |= _stats(kind, request, config, started, first_token, len(tokens))
            return body

        if request.get("stream") is False:
            # Same pacing, then one object (or a 500, as Ollama does when a run fails).
            time.sleep(config.token_interval_s * (len(tokens) - 1))
            if config.midstream_error is not None:
                self._send_error(500, config.midstream_error)
            else:
                self._send_json(200, reply("".join(tokens), done=True))
            return

        # Ollama streams unless told `"stream": false`, even for `"stream": null`.
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i, token in enumerate(tokens):
            if i:
                time.sleep(config.token_interval_s)
            self._send_chunk(reply(token, done=False))
        if config.midstream_error is not None:
            self._send_chunk({"error": config.midstream_error})
            self.close_connection = True
        else:
            self._send_chunk(reply("", done=True))
        self.wfile.write(b"0\r\n\r\n")  # last chunk: end of the response

    # -- I/O ------------------------------------------------------------------------------------

    def _read_json(self) -> tuple[dict[str, Any], str | None]:
        """The request body as a JSON object, or ({}, Ollama-style error message)."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True  # cannot tell where the next request starts
            return {}, "invalid Content-Length"
        raw = self.rfile.read(length) if length > 0 else b""
        if not raw.strip():
            return {}, "missing request body"
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return {}, f"invalid JSON: {exc}"
        if not isinstance(body, dict):
            return {}, "request body must be a JSON object"
        return body, None

    def _client_gone(self) -> bool:
        """True once the client closed its end: the socket is readable but has nothing to read."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _send_chunk(self, obj: dict[str, Any]) -> None:
        line = _encode(obj) + b"\n"
        # One write per chunk: size, data and CRLFs leave in a single segment.
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))

    def _send_body(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        self._send_body(status, "application/json; charset=utf-8", _encode(body))

    def _send_text(self, status: int, text: str) -> None:
        self._send_body(status, "text/plain; charset=utf-8", text.encode())

    def _send_error(self, status: int, message: str) -> None:
        self._send_json(status, {"error": message})


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # hung or streaming handlers must never keep the process alive
    request_queue_size = 1024  # benchmarks open hundreds of connections at once

    def __init__(self, address: tuple[str, int], state: _State, verbose: bool) -> None:
        self.state = state
        self.verbose = verbose
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on a machine without
        # DNS; nothing here needs it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that drops a kept-alive connection (a worker child exiting) is routine, as it
        # is for Ollama; anything else still gets socketserver's traceback.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """Cut open connections: a stopped stand-in must not keep serving kept-alive clients."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class StandIn:
    """The stand-in server, served from a daemon thread.

    Keyword settings are Config fields (latency_s, tokens, ...); they are also what reset()
    returns to.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False, **settings: Any
    ) -> None:
        self.host = host
        self._port = port
        self._verbose = verbose
        self._state = _State(Config().updated(settings))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def config(self) -> Config:
        return self._state.config

    def start(self) -> StandIn:
        """Bind (a free port unless one was given) and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("already started")
        self._state.stopping = False
        self._server = _Server((self.host, self._port), self._state, self._verbose)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits up to one poll interval
            name=f"ollama-standin:{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, release hung calls and cut open connections."""
        if self._server is None:
            return
        with self._state.cond:
            self._state.stopping = True
            self._state.cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def configure(self, **changes: Any) -> Config:
        """Same as POST /_standin/config."""
        return self._state.configure(changes)

    def reset(self) -> Config:
        """Same as POST /_standin/reset: initial config back, counters zeroed."""
        return self._state.reset()

    def calls(self) -> dict[str, Any]:
        """Same as GET /_standin/calls."""
        return self._state.calls()

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Ollama stand-in server for tests and benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before first token")
    parser.add_argument("--token-interval", type=float, default=0.0, help="seconds between tokens")
    parser.add_argument("--tokens", type=int, default=Config.tokens, help="tokens per answer")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    standin = StandIn(
        args.host,
        args.port,
        verbose=args.verbose,
        latency_s=args.latency,
        token_interval_s=args.token_interval,
        tokens=args.tokens,
    )
    with standin:
        print(f"Ollama stand-in listening on {standin.url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
