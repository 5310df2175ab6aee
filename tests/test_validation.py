"""Bad input gets a clear JSON error with the right status, never a 500."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import auth

LONG = "x" * 2001  # MAX_PROMPT_CHARS is 2000 in the test stack

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
    assert resp.json()["error"]["code"] == "request_entity_too_large"
