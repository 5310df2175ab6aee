"""One fault, one status, on every chat surface: the native API, OpenAI's and Ollama's,
each in its own error shape (ours, OpenAI's, Ollama's `{"error": str}`).

Faults that need a broken setting get a web process of their own (the session's stack and
its web process are never touched): Redis or the broker on a closed port, a one-second
REQUEST_TIMEOUT_S. The LLM failure and bad input go through the session's stack.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.conftest import auth
from tests.stack import Stack, free_port

MODEL = "llama3.2:1b"


def _messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


# surface -> (path, the body asking `prompt`, a body it must refuse)
SURFACES: dict[str, tuple[str, Callable[[str], dict], dict]] = {
    "native": ("/api/v1/chat", lambda p: {"prompt": p}, {"prompt": 5}),
    "openai": (
        "/v1/chat/completions",
        lambda p: {"model": MODEL, "messages": _messages(p)},
        {"model": MODEL, "messages": "hello"},
    ),
    "ollama-chat": (
        "/api/chat",
        lambda p: {"model": MODEL, "messages": _messages(p), "stream": False},
        {"model": MODEL, "messages": "hello", "stream": False},
    ),
    "ollama-chat-streamed": (  # Ollama's default: NDJSON, the status decided before the body
        "/api/chat",
        lambda p: {"model": MODEL, "messages": _messages(p)},
        {"model": MODEL, "messages": [{"role": "user", "content": ""}]},
    ),
    "ollama-generate": (
        "/api/generate",
        lambda p: {"model": MODEL, "prompt": p, "stream": False},
        {"model": MODEL, "prompt": 5, "stream": False},
    ),
}


def ask(url: str, surface: str, body: dict, timeout: float = 30) -> requests.Response:
    path = SURFACES[surface][0]
    return requests.post(f"{url}{path}", json=body, headers=auth(), timeout=timeout)


def error_code(surface: str, resp: requests.Response) -> str | None:
    """The error's code, checking the surface's shape (Ollama's carries no code)."""
    body = resp.json()
    if surface.startswith("ollama"):
        assert set(body) == {"error"} and isinstance(body["error"], str), body
        return None
    assert {"code", "message"} <= set(body["error"]), body
    if surface == "openai":
        assert {"type", "param"} <= set(body["error"]), body
    return body["error"]["code"]


@pytest.fixture(scope="module")
def web(stack, stack_env, tmp_path_factory) -> Iterator[Callable[..., str]]:
    """A web process of its own with some settings changed, one per set of changes."""
    started: dict[tuple, Stack] = {}
    logdir = tmp_path_factory.mktemp("errors-logs")

    def start(**env: str) -> str:
        wanted = tuple(sorted(env.items()))
        if wanted not in started:
            started[wanted] = Stack(env=stack_env, logdir=logdir)
            started[wanted].start_web(workers=1, extra_env=env)
        return started[wanted].url

    yield start
    for extra in started.values():  # a web process keeps nothing: no graceful stop
        for proc in extra.procs.values():
            proc.kill()
            proc.popen.wait(10)


def closed(scheme: str) -> str:
    return f"{scheme}127.0.0.1:{free_port()}/0"  # nothing listens there


@pytest.mark.parametrize("surface", SURFACES)
def test_redis_down_is_503_everywhere(web, surface, prompt):
    url = web(REDIS_URL=closed("redis://"))
    resp = ask(url, surface, SURFACES[surface][1](prompt))
    assert resp.status_code == 503, resp.text
    assert error_code(surface, resp) in ("redis_unavailable", None)


@pytest.mark.parametrize("surface", SURFACES)
def test_broker_down_is_503_everywhere(web, surface, prompt):
    url = web(CELERY_BROKER_URL=closed("redis://"))
    resp = ask(url, surface, SURFACES[surface][1](prompt))
    assert resp.status_code == 503, resp.text
    assert error_code(surface, resp) in ("broker_unavailable", None)


@pytest.mark.parametrize("surface", SURFACES)
def test_llm_failure_is_502_everywhere(stack, standin, surface, prompt):
    standin.configure(fail_status=500)  # every try fails: the retries give up
    resp = ask(stack.url, surface, SURFACES[surface][1](prompt))
    assert resp.status_code == 502, resp.text
    assert error_code(surface, resp) in ("llm_unavailable", None)
    assert standin.calls()["chat"] == 3  # the call and its two retries (LLM_MAX_RETRIES)


@pytest.mark.parametrize("surface", SURFACES)
def test_timeout_is_504_everywhere(web, standin, surface, prompt):
    url = web(REQUEST_TIMEOUT_S="1")
    standin.configure(latency_s=3)
    resp = ask(url, surface, SURFACES[surface][1](prompt))
    assert resp.status_code == 504, resp.text
    assert error_code(surface, resp) in ("timeout", None)
    deadline = time.monotonic() + 10  # let the generation end before the next test
    while standin.calls()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.parametrize("surface", SURFACES)
def test_bad_input_is_400_everywhere(stack, standin, surface):
    resp = ask(stack.url, surface, SURFACES[surface][2])
    assert resp.status_code == 400, resp.text
    assert error_code(surface, resp) in ("bad_request", None)
    assert standin.calls()["chat"] == 0
