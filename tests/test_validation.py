"""Bad input gets a clear JSON error with the right status, never a 500 nor a reset
connection: first the native chat's table, then the malformed-input table crossed with
every surface that reads a JSON body (each in its own error shape), Ollama's options,
OpenAI's parameters and the URL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.conftest import auth, create_user

LONG = "x" * 2001  # MAX_PROMPT_CHARS is 2000 in the test stack
MODEL = "llama3.2:1b"

CASES = [
    ("not json", 400, "invalid_json", "valid JSON"),
    ([1, 2], 400, "bad_request", "JSON object"),
    ({}, 400, "bad_request", "'messages' is required"),
    ({"prompt": 3}, 400, "bad_request", "'prompt' must be a string"),
    ({"prompt": "   "}, 400, "bad_request", "empty"),
    ({"prompt": "hi", "messages": []}, 400, "bad_request", "not both"),
    ({"messages": []}, 400, "bad_request", "non-empty list"),
    ({"messages": "hi"}, 400, "bad_request", "non-empty list"),
    ({"messages": ["hi"]}, 400, "bad_request", "must be an object"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "bad_request", "role must be"),
    ({"messages": [{"role": "user"}]}, 400, "bad_request", "content must be a string"),
    ({"messages": [{"role": "user", "content": ""}]}, 400, "bad_request", "empty"),
    ({"messages": [{"role": "system", "content": "be brief"}]}, 400, "bad_request", "last message"),
    ({"prompt": "hi", "model": ""}, 400, "bad_request", "'model'"),
    ({"prompt": "hi", "model": 7}, 400, "bad_request", "'model'"),
    ({"prompt": "hi", "options": []}, 400, "bad_request", "'options'"),
    ({"prompt": "hi", "cache": "no"}, 400, "bad_request", "'cache'"),
    ({"prompt": "hi", "cache": {"mode": "sometimes"}}, 400, "bad_request", "cache.mode"),
    ({"prompt": "hi", "cache": {"colour": 1}}, 400, "bad_request", "unknown cache field"),
    ({"prompt": "hi", "temperature": 1}, 400, "bad_request", "unknown field"),
    ({"prompt": "hi", "cache": {"threshold": 1.5}}, 400, "bad_request", "cache.threshold"),
    ({"prompt": "hi", "cache": {"threshold": "high"}}, 400, "bad_request", "cache.threshold"),
    ({"prompt": "hi", "cache": {"threshold": True}}, 400, "bad_request", "cache.threshold"),
    ({"prompt": LONG}, 413, "too_large", "limit is 2000"),
]


@pytest.mark.parametrize(("body", "status", "code", "message"), CASES)
def test_bad_input(stack, standin, body, status, code, message):
    if isinstance(body, str):
        resp = requests.post(
            f"{stack.url}/api/v1/chat",
            data=body,
            headers={"Content-Type": "application/json", **auth()},
            timeout=10,
        )
    else:
        resp = requests.post(f"{stack.url}/api/v1/chat", json=body, timeout=10, headers=auth())
    assert resp.status_code == status
    error = resp.json()["error"]
    assert error["code"] == code
    assert message in error["message"]
    assert standin.calls()["total"] == 0


def test_unknown_route_and_method_are_json(stack):
    resp = requests.get(f"{stack.url}/api/v1/nope", timeout=10)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"
    resp = requests.get(f"{stack.url}/api/v1/chat", timeout=10, headers=auth())
    assert resp.status_code == 405
    assert resp.json()["error"]["code"] == "method_not_allowed"


def test_oversized_body_is_413(stack):
    resp = requests.post(
        f"{stack.url}/api/v1/chat",
        data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
        headers={"Content-Type": "application/json", **auth()},
        timeout=10,
    )
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "too_large"


# --- malformed input on every surface --------------------------------------------------


@dataclass(frozen=True)
class Surface:
    path: str
    body: Callable[[str], dict]  # a valid body that carries `text` where a text goes
    shape: str  # "native" {"error": {code, message}}, "openai" (+ type, param), "ollama"

    def error(self, resp: requests.Response) -> tuple[str | None, str]:
        """(code, message) of an error answer, checking the surface's shape."""
        body = resp.json()
        if self.shape == "ollama":
            assert set(body) == {"error"} and isinstance(body["error"], str), body
            return None, body["error"]
        error = body["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str), body
        if self.shape == "openai":
            assert {"type", "param"} <= set(error), body
        return error["code"], error["message"]


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


SURFACES = {
    "native-chat": Surface("/api/v1/chat", lambda t: {"prompt": t}, "native"),
    "native-chat-messages": Surface("/api/v1/chat", lambda t: {"messages": _user(t)}, "native"),
    "openai-chat": Surface(
        "/v1/chat/completions", lambda t: {"model": MODEL, "messages": _user(t)}, "openai"
    ),
    "ollama-chat": Surface(
        "/api/chat", lambda t: {"model": MODEL, "messages": _user(t), "stream": False}, "ollama"
    ),
    "ollama-generate": Surface(
        "/api/generate", lambda t: {"model": MODEL, "prompt": t, "stream": False}, "ollama"
    ),
    "native-embed": Surface("/api/v1/embed", lambda t: {"input": t}, "native"),
    "ollama-embed": Surface("/api/embed", lambda t: {"model": MODEL, "input": [t]}, "native"),
    "openai-embed": Surface("/v1/embeddings", lambda t: {"input": t}, "native"),
    "feedback": Surface("/api/v1/feedback", lambda t: {"id": t, "good": False}, "native"),
    "login": Surface(
        "/api/v1/auth/login", lambda t: {"name": t, "password": "pw-long-enough"}, "native"
    ),  # fmt: skip
    "register": Surface(
        "/api/v1/auth/register", lambda t: {"name": t, "password": "pw-long-enough"}, "native"
    ),
}


def _nested(levels: int) -> Any:
    value: Any = "deep"
    for _ in range(levels):
        value = [value]
    return value


# case -> (the raw body for a surface, status, code where the shape has one, message part)
MALFORMED: dict[str, tuple[Callable[[Surface], bytes], int, str | None, str]] = {
    "lone-surrogate": (
        lambda s: json.dumps(s.body("hi \ud800 there")).encode(),
        400,
        "invalid_json",
        "lone surrogate (U+D800)",
    ),  # fmt: skip
    "lone-low-surrogate-in-key": (
        lambda s: json.dumps({**s.body("hi"), "\udc00": 1}).encode(),
        400,
        "invalid_json",
        "a key at \\udc00 contains a lone surrogate",
    ),
    "lone-surrogate-raw-utf8-bytes": (  # json.loads decodes bytes with "surrogatepass"
        lambda s: json.dumps(s.body("hi XX")).encode().replace(b"XX", b"\xed\xa0\x80"),
        400,
        "invalid_json",
        "lone surrogate (U+D800)",
    ),
    "lone-surrogate-in-utf16": (  # json.loads detects UTF-16 too
        lambda s: json.dumps(s.body("hi \ud800")).encode("utf-16-le"),
        400,
        "invalid_json",
        "lone surrogate (U+D800)",
    ),
    "nul": (
        lambda s: json.dumps(s.body("hi\x00there")).encode(),
        400,
        "invalid_json",
        "NUL character",
    ),  # fmt: skip
    "nested-100k": (
        lambda s: b"[" * 100_000 + b"]" * 100_000,
        400,
        "invalid_json",
        "nested deeper than 64",
    ),  # fmt: skip
    "nested-100k-objects": (
        lambda s: b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        400,
        "invalid_json",
        "nested deeper than 64",
    ),  # fmt: skip
    "nested-200-in-a-field": (
        lambda s: json.dumps({**s.body("hi"), "x": _nested(200)}).encode(),
        400,
        "invalid_json",
        "nested deeper than 64",
    ),  # fmt: skip
    "nan": (lambda s: json.dumps({**s.body("hi"), "x": float("nan")}).encode(), 400, None, ""),
    "not-utf8": (lambda s: b'{"prompt": "\xff\xfe"}', 400, None, ""),
    "over-max-body-5mb": (
        lambda s: json.dumps(s.body("x" * 5 * 1024 * 1024)).encode(),
        413,
        "too_large",
        "over the limit of 1048576 bytes",
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", MALFORMED)
@pytest.mark.parametrize("surface", SURFACES)
def test_malformed_input_everywhere(stack, standin, surface, case):
    s = SURFACES[surface]
    raw, status, code, message = MALFORMED[case]
    resp = requests.post(
        f"{stack.url}{s.path}",
        data=raw(s),
        headers={"Content-Type": "application/json", **auth()},
        timeout=30,
    )
    assert resp.status_code == status, resp.text[:500]
    got_code, got_message = s.error(resp)
    if code and got_code is not None:
        assert got_code == code
    assert message in got_message
    assert standin.calls()["total"] == 0


@pytest.mark.parametrize("surface", SURFACES)
def test_chunked_body_over_the_limit_is_413(stack, standin, surface):
    """Without a Content-Length (Transfer-Encoding: chunked) the limit holds the same."""
    s = SURFACES[surface]
    raw = json.dumps(s.body("x" * 5 * 1024 * 1024)).encode()
    chunks = (raw[i : i + 65536] for i in range(0, len(raw), 65536))
    resp = requests.post(
        f"{stack.url}{s.path}",
        data=chunks,
        headers={"Content-Type": "application/json", **auth()},
        timeout=30,
    )
    assert resp.status_code == 413, resp.text[:500]
    code, message = s.error(resp)
    assert code in ("too_large", None)
    assert "over the limit of 1048576 bytes" in message
    assert standin.calls()["total"] == 0


def test_chunked_body_within_the_limit_is_read(stack, standin, prompt):
    raw = json.dumps({"prompt": prompt}).encode()
    chunks = (raw[i : i + 7] for i in range(0, len(raw), 7))
    headers = {"Content-Type": "application/json", **auth()}
    resp = requests.post(f"{stack.url}/api/v1/chat", data=chunks, headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["message"]["content"]


# --- Ollama's options, on the surfaces that take them ------------------------------------

BAD_OPTIONS = [
    ({"temperature": "hot"}, "options.temperature must be a number from 0 to 2"),
    ({"temperature": 2.5}, "options.temperature must be a number from 0 to 2"),
    ({"temperature": True}, "options.temperature"),
    ({"top_p": -0.1}, "options.top_p must be a number from 0 to 1"),
    ({"min_p": 1.5}, "options.min_p"),
    ({"top_k": 1.5}, "options.top_k must be an integer"),
    ({"top_k": -1}, "options.top_k must be an integer from 0"),
    ({"num_predict": -3}, "options.num_predict must be an integer from -2"),
    ({"num_ctx": 0}, "options.num_ctx must be an integer from 1 to 1048576"),
    ({"num_ctx": 1_048_577}, "options.num_ctx"),
    ({"seed": "7"}, "options.seed must be an integer"),
    ({"seed": 2**64}, "options.seed"),
    ({"mirostat": 3}, "options.mirostat must be an integer from 0 to 2"),
    ({"repeat_penalty": [1]}, "options.repeat_penalty must be a number"),
    ({"stop": "###"}, "options.stop must be a list of strings"),
    ({"stop": [1]}, "options.stop must be a list of strings"),
    ({"stop": ["x"] * 17}, "options.stop must be at most 16 strings"),
    ({"stop": ["x" * 257]}, "of at most 256 characters"),
    ({"penalize_newline": 1}, "options.penalize_newline must be true or false"),
    ({"use_mmap": "yes"}, "options.use_mmap must be true or false"),
    ({"colour": 1, "temperature": 0.5}, "unknown option(s): colour"),
]
OPTION_SURFACES = ("native-chat", "ollama-chat", "ollama-generate")


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS, ids=lambda v: json.dumps(v)[:40])
@pytest.mark.parametrize("surface", OPTION_SURFACES)
def test_bad_options_everywhere(stack, standin, surface, options, message):
    s = SURFACES[surface]
    body = {**s.body("What is a bad option?"), "options": options}
    resp = requests.post(f"{stack.url}{s.path}", json=body, headers=auth(), timeout=30)
    assert resp.status_code == 400, resp.text
    code, got = s.error(resp)
    assert code in ("bad_request", None)
    assert message in got
    assert standin.calls()["total"] == 0


def test_every_valid_option_is_taken_as_given(stack, standin, prompt):
    """Every option Ollama documents, at its bounds, and null ("not given"), is answered."""
    options = {
        "temperature": 2, "top_p": 1, "min_p": 0, "typical_p": 1.0, "tfs_z": 1,
        "repeat_penalty": 1.1, "presence_penalty": -2, "frequency_penalty": 2,
        "mirostat": 2, "mirostat_tau": 5.0, "mirostat_eta": 0.1, "top_k": 0,
        "num_predict": -2, "num_ctx": 1_048_576, "num_keep": -1, "repeat_last_n": -1,
        "seed": -(2**63), "stop": ["x" * 256] * 16, "penalize_newline": True,
        "num_gpu": -1, "main_gpu": 0, "num_thread": 0, "num_batch": 1, "use_mmap": None,
        "use_mlock": False, "low_vram": False, "numa": False, "vocab_only": False,
        "keep_alive": "5m",
    }  # fmt: skip
    resp = requests.post(f"{stack.url}/api/v1/chat", json={"prompt": prompt, "options": options},
                         headers=auth(), timeout=30)  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert standin.calls()["chat"] == 1


OPENAI_PARAMS = [
    ({"temperature": "hot"}, "temperature", "'temperature' must be a number"),
    ({"temperature": 3}, "temperature", "'temperature' must be a number from 0 to 2"),
    ({"top_p": 1.5}, "top_p", "'top_p' must be a number from 0 to 1"),
    ({"presence_penalty": 2.5}, "presence_penalty", "from -2 to 2"),
    ({"seed": 1.5}, "seed", "'seed' must be an integer"),
    ({"max_tokens": -5}, "max_tokens", "'max_tokens' must be an integer from -2"),
    ({"stop": ["x"] * 17}, "stop", "'stop' must be at most 16 strings"),
    (
        {"messages": [{"role": "user", "content": [{"type": {"a": 1}}]}]},
        "messages[0].content",
        "only text content parts",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": [1]}]}]},
        "messages[0].content",
        "a text part's 'text' must be a string",
    ),
]


@pytest.mark.parametrize(("params", "param", "message"), OPENAI_PARAMS,
                         ids=lambda v: json.dumps(v)[:40])  # fmt: skip
def test_bad_openai_parameters(stack, standin, params, param, message):
    s = SURFACES["openai-chat"]
    body = {**s.body("What is a bad parameter?"), **params}
    resp = requests.post(f"{stack.url}{s.path}", json=body, headers=auth(), timeout=30)
    assert resp.status_code == 400, resp.text
    assert s.error(resp)[0] == "bad_request"
    assert resp.json()["error"]["param"] == param
    assert message in resp.json()["error"]["message"]
    assert standin.calls()["total"] == 0


# --- the URL -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/api/v1/jobs/a%00b", "/api/v1/entries/a%00b", "/api/v1/entries?q=a%00b",
     "/api/v1/entries?model=%00", "/api/v1/admin/namespaces/a%00b/threshold"],
)  # fmt: skip
def test_nul_in_the_url_is_400(stack, path):
    method = "DELETE" if path.endswith("threshold") else "GET"
    resp = requests.request(method, f"{stack.url}{path}", headers=auth(), timeout=10)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == {
        "code": "bad_request",
        "message": "the query string contains a NUL character (%00)"
        if "?" in path
        else "the URL contains a NUL character (%00)",
    }


@pytest.fixture(scope="module")
def admin(stack, stack_env) -> str:
    return create_user(stack_env, f"admin-{uuid.uuid4().hex[:8]}", admin=True)


@pytest.mark.parametrize("age", [1e308, 10**30, 290_753_400_686.0, -1, "old"])
def test_invalidating_by_an_age_past_the_calendar_is_400(stack, admin, age):
    """now() minus more than PostgreSQL's calendar holds was a 500 (found by the fuzzer)."""
    resp = requests.post(f"{stack.url}/api/v1/entries/invalidate", json={"older_than_s": age},
                         headers=auth(admin), timeout=10)  # fmt: skip
    assert resp.status_code == 400, resp.text
    assert "'older_than_s' must be a number of seconds from 0 to" in resp.json()["error"]["message"]
