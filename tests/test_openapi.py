"""The OpenAPI document (webapp/openapi.py) lists every route and nothing else, and the API
holds up to it: schemathesis sends every operation generated requests, valid and not,
against the real stack. No answer is a 5xx, and every 4xx is in its surface's error shape.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from tests.conftest import create_user
from tests.stack import ROOT
from webapp.openapi import DOCUMENT

UI_ROUTES = {"/", "/ui/<path:name>"}  # the browser frontend's static files
OPENAI = ("/v1/chat/completions", "/v1/models")  # the compat_openai blueprint's
OLLAMA = ("/api/chat", "/api/generate", "/api/tags", "/api/version")


def _openapi_path(rule: str) -> str:
    """/api/v1/keys/<int:key_id> -> /api/v1/keys/{key_id}"""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_every_route_is_documented_and_nothing_else():
    code = (
        "import json, webapp; app = webapp.create_app({'SECRET_KEY': 'x'});"
        "print(json.dumps([[r.rule, sorted(r.methods)] for r in app.url_map.iter_rules()]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "DATABASE_URL": "postgresql://127.0.0.1:1/none"},
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    routes = {
        (_openapi_path(rule), method.lower())
        for rule, methods in json.loads(out.stdout.splitlines()[-1])
        if rule not in UI_ROUTES
        for method in methods
        if method not in ("HEAD", "OPTIONS")
    }
    documented = {(path, method) for path, ops in DOCUMENT["paths"].items() for method in ops}
    assert sorted(routes - documented) == [], "routes missing from webapp/openapi.py"
    assert sorted(documented - routes) == [], "documented operations that are not routes"


def test_the_document_is_served(stack):
    resp = requests.get(f"{stack.url}/openapi.json", timeout=10)
    assert resp.status_code == 200
    assert resp.json() == json.loads(json.dumps(DOCUMENT))
    assert resp.json()["openapi"].startswith("3.")


# --- fuzzing ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_key(stack, stack_env) -> str:
    """A user of its own: whatever the fuzzer does (feedback, registrations...) is its own."""
    return create_user(stack_env, f"fuzzer-{uuid.uuid4().hex[:8]}")


# From the module's dict (test_the_document_is_served checks it is what the stack serves):
# the stack's URL is known only once its fixture runs, and schemathesis's lazy
# from_fixture loader does not run on this pytest (it sets Node._nodeid, gone in pytest 9).
schema = schemathesis.openapi.from_dict(json.loads(json.dumps(DOCUMENT))).exclude(
    # Revoking keys by id: the fuzzer's own key would go, and every later call be a 401.
    method="DELETE",
    path="/api/v1/keys/{key_id}",
)


def _error_shape(path: str, status: int, body: object) -> str | None:
    """What is wrong with a 4xx body for its surface, or None."""
    if not isinstance(body, dict) or "error" not in body:
        return "no 'error' field"
    error = body["error"]
    routed = status != 405  # a method the route has not is answered by the app: native shape
    if routed and path in OLLAMA:
        return None if set(body) == {"error"} and isinstance(error, str) else "not Ollama's"
    if not isinstance(error, dict) or not all(
        isinstance(error.get(k), str) for k in ("code", "message")
    ):
        return "not {'error': {'code': str, 'message': str}}"
    if routed and path in OPENAI and not {"type", "param"} <= set(error):
        return "not OpenAI's"
    return None


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    database=None,  # nothing left in the work tree
    suppress_health_check=list(HealthCheck),
)
def test_fuzz_no_5xx_and_every_4xx_in_its_shape(case, stack, fuzz_key):
    resp = case.call(base_url=stack.url, headers={"Authorization": f"Bearer {fuzz_key}"},
                     timeout=30)  # fmt: skip
    where = f"{case.method} {case.formatted_path} -> {resp.status_code}: {resp.text[:300]}"
    assert resp.status_code < 500, where
    if 400 <= resp.status_code < 500:
        try:
            body = resp.json()
        except ValueError:
            pytest.fail(f"not JSON: {where}")
        problem = _error_shape(case.path, resp.status_code, body)
        assert problem is None, f"{problem}: {where}"
