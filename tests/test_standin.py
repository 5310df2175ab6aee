"""Tests of the Ollama stand-in, over real HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.ollama_standin import StandIn

MODEL = "llama3.2:1b"
TIMEOUT = 5


@pytest.fixture(scope="module")
def server() -> Iterator[StandIn]:
    with StandIn() as standin:
        yield standin


@pytest.fixture
def standin(server: StandIn) -> StandIn:
    server.reset()
    return server


def chat_body(content: str = "Why is the sky blue?", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def post(standin: StandIn, path: str, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(standin.url + path, json=body, timeout=TIMEOUT, **kwargs)


def stream_lines(standin: StandIn, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with post(standin, path, body, stream=True) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/x-ndjson"
        return [json.loads(line) for line in response.iter_lines() if line]


def chat_text(standin: StandIn, body: dict[str, Any]) -> str:
    response = post(standin, "/api/chat", {**body, "stream": False})
    assert response.status_code == 200, response.text
    return response.json()["message"]["content"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- Ollama wire format ---------------------------------------------------------------------------


def test_chat_not_streamed(standin: StandIn) -> None:
    response = post(standin, "/api/chat", chat_body(stream=False))
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["model"] == MODEL and body["created_at"].endswith("Z")
    assert body["message"]["role"] == "assistant"
    assert "Answer to: Why is the sky blue?" in body["message"]["content"]
    assert body["done"] is True and body["done_reason"] == "stop"
    assert body["eval_count"] == 12 == len(body["message"]["content"].split())
    for counter in (
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_duration",
    ):
        assert isinstance(body[counter], int)


def test_chat_streamed_matches_not_streamed(standin: StandIn) -> None:
    lines = stream_lines(standin, "/api/chat", chat_body())  # stream defaults to true
    *tokens, final = lines
    assert len(tokens) == 12
    assert all(not line["done"] and line["message"]["role"] == "assistant" for line in tokens)
    assert all(line["message"]["content"].endswith(" ") for line in tokens)
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["eval_count"] == 12 and final["prompt_eval_count"] == 5
    streamed = "".join(line["message"]["content"] for line in tokens)
    assert streamed == chat_text(standin, chat_body())


def test_generate_streamed_and_not(standin: StandIn) -> None:
    body = {"model": MODEL, "prompt": "Hello there", "system": "Be brief."}
    *tokens, final = stream_lines(standin, "/api/generate", body)
    assert final["done"] is True and final["response"] == "" and "message" not in final
    whole = post(standin, "/api/generate", {**body, "stream": False}).json()
    assert whole["response"] == "".join(t["response"] for t in tokens)
    assert "Answer to: Hello there." in whole["response"]


def test_answer_depends_on_what_changes_generation(standin: StandIn) -> None:
    base = chat_text(standin, chat_body())
    assert chat_text(standin, chat_body()) == base  # deterministic
    assert chat_text(standin, chat_body(keep_alive="5m")) == base  # does not change the output
    system = [{"role": "system", "content": "Be terse."}, *chat_body()["messages"]]
    variants = [
        chat_text(standin, {**chat_body(), "model": "smollm2:135m"}),
        chat_text(standin, {**chat_body(), "messages": system}),
        chat_text(standin, chat_body(options={"temperature": 0})),
        chat_text(standin, chat_body(format="json")),
        chat_text(standin, chat_body("Why is grass green?")),
    ]
    assert len({base, *variants}) == 6


def test_model_listing_and_metadata(standin: StandIn) -> None:
    assert requests.get(standin.url + "/api/version", timeout=TIMEOUT).json() == {
        "version": "0.6.0"
    }
    assert requests.get(standin.url + "/", timeout=TIMEOUT).text == "Ollama is running"
    models = requests.get(standin.url + "/api/tags", timeout=TIMEOUT).json()["models"]
    assert [m["name"] for m in models] == ["llama3.2:1b", "smollm2:135m"]
    assert {"name", "model", "modified_at", "size", "digest", "details"} <= set(models[0])
    shown = post(standin, "/api/show", {"model": MODEL})
    assert shown.status_code == 200 and "details" in shown.json()


def test_errors_look_like_ollama(standin: StandIn) -> None:
    missing = post(standin, "/api/chat", {**chat_body(), "model": "missing-model"})
    assert missing.status_code == 404
    assert missing.json() == {"error": 'model "missing-model" not found, try pulling it first'}
    bad = requests.post(standin.url + "/api/chat", data=b"{not json", timeout=TIMEOUT)
    assert bad.status_code == 400 and "error" in bad.json()
    no_model = post(standin, "/api/generate", {"prompt": "hi"})
    assert no_model.status_code == 400 and no_model.json() == {"error": "model is required"}
    assert requests.get(standin.url + "/api/nope", timeout=TIMEOUT).status_code == 404


def test_empty_input_loads_the_model(standin: StandIn) -> None:
    body = post(standin, "/api/chat", {"model": MODEL, "messages": []}).json()
    assert body["done"] is True and body["done_reason"] == "load"
    assert body["message"]["content"] == ""


def test_model_list_restricts_names(standin: StandIn) -> None:
    assert post(standin, "/api/chat", {**chat_body(), "model": "anything:7b"}).status_code == 200
    post(standin, "/_standin/config", {"models": ["only:1b", "plain:latest"]})
    assert post(standin, "/api/chat", {**chat_body(), "model": MODEL}).status_code == 404
    assert post(standin, "/api/chat", {**chat_body(), "model": "only:1b"}).status_code == 200
    assert post(standin, "/api/chat", {**chat_body(), "model": "plain"}).status_code == 200
    names = [
        m["name"] for m in requests.get(standin.url + "/api/tags", timeout=TIMEOUT).json()["models"]
    ]
    assert names == ["only:1b", "plain:latest"]


# -- timing ---------------------------------------------------------------------------------------


def test_each_line_arrives_as_it_is_produced(standin: StandIn) -> None:
    standin.configure(tokens=8, token_interval_s=0.05)
    start = time.monotonic()
    arrivals = []
    with post(standin, "/api/chat", chat_body(), stream=True) as response:
        for _ in response.iter_lines():
            arrivals.append(time.monotonic() - start)
    assert len(arrivals) == 9
    # The last token is produced 7 intervals (0.35 s) after the first.
    assert arrivals[0] < 0.2
    assert arrivals[-1] - arrivals[0] >= 0.3


def test_latency_before_first_token(standin: StandIn) -> None:
    post(standin, "/_standin/config", {"latency_s": 0.2})
    start = time.monotonic()
    body = post(standin, "/api/chat", chat_body(stream=False)).json()
    assert time.monotonic() - start >= 0.2
    assert body["load_duration"] == 200_000_000 and body["total_duration"] >= 200_000_000


def test_concurrent_streams_run_in_parallel(standin: StandIn) -> None:
    standin.configure(tokens=5, token_interval_s=0.05)  # 0.2 s per call
    start = time.monotonic()
    with ThreadPoolExecutor(64) as pool:
        results = list(
            pool.map(lambda i: stream_lines(standin, "/api/chat", chat_body(f"q{i}")), range(64))
        )
    assert time.monotonic() - start < 2  # 12.8 s if served one at a time
    assert all(len(lines) == 6 and lines[-1]["done"] for lines in results)
    assert standin.calls()["total"] == 64


# -- control API ----------------------------------------------------------------------------------


def test_calls_are_counted_on_arrival(standin: StandIn) -> None:
    standin.configure(latency_s=0.3)
    slow = threading.Thread(target=chat_text, args=(standin, chat_body("slow one")))
    slow.start()
    time.sleep(0.1)
    calls = requests.get(standin.url + "/_standin/calls", timeout=TIMEOUT).json()
    assert calls == {"chat": 1, "generate": 0, "total": 1, "in_flight": 1, "prompts": ["slow one"]}
    slow.join()
    standin.configure(latency_s=0)
    post(standin, "/api/generate", {"model": MODEL, "prompt": "second", "stream": False})
    # The server counts a call ended just after its reply has left: wait for that moment.
    deadline = time.monotonic() + 2
    while standin.calls()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    calls = standin.calls()
    assert calls["total"] == 2 and calls["in_flight"] == 0
    assert calls["prompts"] == ["slow one", "second"]
    post(standin, "/_standin/reset", {})
    assert standin.calls()["total"] == 0 and standin.config.latency_s == 0


def test_config_rejects_bad_settings(standin: StandIn) -> None:
    for bad in ({"nope": 1}, {"tokens": "many"}, {"tokens": 0}, {"hang": 1}, {"latency_s": True}):
        response = post(standin, "/_standin/config", bad)
        assert response.status_code == 400 and "error" in response.json(), bad
    response = post(standin, "/_standin/config", {"tokens": 3, "latency_s": 0.01})
    assert response.json()["tokens"] == 3 and response.json()["latency_s"] == 0.01
    assert len(chat_text(standin, chat_body()).split()) == 3


def test_fail_status_fails_every_call(standin: StandIn) -> None:
    standin.configure(fail_status=503)
    for _ in range(3):
        response = post(standin, "/api/chat", chat_body())
        assert response.status_code == 503 and "server busy" in response.json()["error"]
    assert standin.calls()["chat"] == 3


def test_fail_times_fails_only_the_next_calls(standin: StandIn) -> None:
    standin.configure(fail_times=2)
    statuses = [post(standin, "/api/chat", chat_body(stream=False)).status_code for _ in range(4)]
    assert statuses == [500, 500, 200, 200]


def test_midstream_error(standin: StandIn) -> None:
    standin.configure(midstream_error="runner crashed")
    *tokens, error = stream_lines(standin, "/api/chat", chat_body())
    assert len(tokens) == 3 and error == {"error": "runner crashed"}
    whole = post(standin, "/api/chat", chat_body(stream=False))
    assert whole.status_code == 500 and whole.json() == {"error": "runner crashed"}


def test_hang_until_client_leaves(standin: StandIn) -> None:
    standin.configure(hang=True)
    with pytest.raises(requests.ReadTimeout):
        requests.post(standin.url + "/api/chat", json=chat_body(), timeout=0.3)
    # Other endpoints keep answering while a call hangs.
    assert requests.get(standin.url + "/api/version", timeout=TIMEOUT).ok
    deadline = time.monotonic() + 2
    while standin.calls()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert standin.calls() | {"prompts": []} == {
        "chat": 1,
        "generate": 0,
        "total": 1,
        "in_flight": 0,
        "prompts": [],
    }


def test_hang_until_reset(standin: StandIn) -> None:
    standin.configure(hang=True)
    with ThreadPoolExecutor(1) as pool:
        hung = pool.submit(chat_text, standin, chat_body())
        time.sleep(0.2)
        assert not hung.done() and standin.calls()["in_flight"] == 1
        post(standin, "/_standin/reset", {})
        assert "Answer to:" in hung.result(timeout=2)


# -- lifecycle ------------------------------------------------------------------------------------


def test_stop_cuts_kept_alive_connections() -> None:
    session = requests.Session()
    with StandIn(tokens=2) as standin:
        url = standin.url
        assert session.post(url + "/api/chat", json=chat_body(), timeout=TIMEOUT).ok
    with pytest.raises(requests.ConnectionError):
        session.post(url + "/api/chat", json=chat_body(), timeout=TIMEOUT)


def test_command_line() -> None:
    port = free_port()
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.ollama_standin", "--port", str(port), "--tokens", "4"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert f"127.0.0.1:{port}" in process.stdout.readline()
        response = requests.post(
            f"http://127.0.0.1:{port}/api/chat", json=chat_body(stream=False), timeout=TIMEOUT
        )
        assert response.json()["eval_count"] == 4
    finally:
        process.terminate()
        process.wait(timeout=TIMEOUT)
