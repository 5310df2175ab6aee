"""Feedback closes the loop: a wrong semantic hit invalidates its entry and tightens the
threshold of its namespace, for every later lookup (reported by an admin here; a quorum of
users does the same: tests/test_sharing.py)."""

from __future__ import annotations

import time
import uuid

import requests

from cache import CacheKey, Keyspace
from tests.conftest import auth, create_user, fresh_namespace, post_chat
from tests.test_ops import sample, scrape

MODEL = "llama3.2:1b"


def namespace_of(prompt: str, body: dict) -> str:
    return CacheKey.build(MODEL, [{"role": "user", "content": prompt}], body["options"]).namespace


def strict(redis_client, namespace: str) -> None:
    """As if its audits had raised the namespace's score threshold beyond any score: every
    candidate the guards let through is then refused by its score alone."""
    redis_client.hset(Keyspace("flock:v1:").scorethreshold, namespace, "1.0")


def test_a_wrong_semantic_hit_tightens_its_namespace(stack, standin, stack_env):
    admin = create_user(stack_env, f"acc-admin-{uuid.uuid4().hex[:6]}", admin=True)
    ns = fresh_namespace()
    first = "How long should I boil an egg?"
    reworded = "How long should an egg be boiled?"
    assert post_chat(stack.url, {"prompt": first, **ns}).json()["cache"]["status"] == "miss"
    hit = post_chat(stack.url, {"prompt": reworded, **ns}).json()
    assert hit["cache"]["status"] == "semantic"
    similarity = hit["cache"]["similarity"]

    resp = requests.post(
        f"{stack.url}/api/v1/feedback", json={"id": hit["id"], "good": False}, headers=auth(admin)
    ).json()
    assert resp["invalidated"] == [hit["cache"]["entry_id"]]
    assert resp["namespace_threshold"] >= similarity + 0.01 - 1e-6

    assert post_chat(stack.url, {"prompt": first, **ns}).json()["cache"]["status"] == "miss"
    again = post_chat(stack.url, {"prompt": reworded, **ns}).json()
    assert again["cache"]["status"] == "miss"  # as similar as before: no longer enough here
    assert standin.calls()["chat"] == 3

    other = fresh_namespace()  # another namespace: untouched
    post_chat(stack.url, {"prompt": first, **other})
    assert post_chat(stack.url, {"prompt": reworded, **other}).json()["cache"]["status"] == (
        "semantic"
    )

    stats = requests.get(f"{stack.url}/api/v1/stats", headers=auth(), timeout=10).json()
    assert any(n["wrong_hits"] >= 1 for n in stats["namespace_thresholds"])


def test_the_uncertain_band_asks_the_llm_before_refusing(stack, standin, redis_client):
    """LLM_VERIFY_BAND: a candidate the verifier refuses by its score alone goes to the LLM
    as one short yes/no question; "yes" serves it (the `llm` check says so), "no" does not.
    A guard's veto (a negation) never asks."""
    banded = stack.start_worker(
        "embedder-band", "embed", concurrency=1, extra_env={"LLM_VERIFY_BAND": "0.0"}
    )
    stack.procs["embedder"].stop()  # only the banded process answers now
    try:
        ns = fresh_namespace()
        asked = "Can dogs eat grapes?"
        strict(redis_client, namespace_of(asked, ns))
        assert post_chat(stack.url, {"prompt": asked, **ns}).json()["cache"]["status"] == "miss"
        standin.configure(reply="Yes")
        hit = post_chat(stack.url, {"prompt": "Is it safe for dogs to eat grapes?", **ns}).json()
        assert hit["cache"]["status"] == "semantic"
        assert hit["cache"]["matched_prompt"] == asked
        checks = {c["name"]: c for c in hit["cache"]["checks"]}
        assert checks["pair_model"]["passed"] is False and checks["llm"]["passed"] is True
        assert standin.calls()["chat"] == 2  # the answer, then one yes/no question

        calls = standin.calls()["chat"]
        vetoed = post_chat(stack.url, {"prompt": "Can dogs not eat grapes?", **ns}).json()
        assert vetoed["cache"]["status"] == "miss"
        assert standin.calls()["chat"] == calls + 1  # the answer only: nobody asked

        standin.configure(reply="No")
        other = fresh_namespace()
        strict(redis_client, namespace_of("Which planets have rings?", other))
        post_chat(stack.url, {"prompt": "Which planets have rings?", **other})
        calls = standin.calls()["chat"]
        no = post_chat(stack.url, {"prompt": "What planets have ring systems?", **other}).json()
        assert no["cache"]["status"] == "miss"
        assert standin.calls()["chat"] == calls + 2  # the question, then the answer
    finally:
        stack.start_worker("embedder", "embed", concurrency=2, pool="threads")
        banded.stop()
        del stack.procs["embedder-band"]


def test_audits_answer_hits_again_off_the_request_path(stack, standin):
    """AUDIT_RATE=1: every semantic hit goes to the audit queue; the audit worker asks the
    LLM again and judges. The verdict shows in /api/v1/stats and /metrics."""
    audited = stack.start_worker(
        "embedder-audit", "embed", concurrency=1, extra_env={"AUDIT_RATE": "1"}
    )
    stack.procs["embedder"].stop()
    auditor = stack.start_worker("audit", "audit", concurrency=1, pool="threads")
    try:
        ns = fresh_namespace()
        first = "How long should I rest a steak after grilling it?"
        assert post_chat(stack.url, {"prompt": first, **ns}).json()["cache"]["status"] == "miss"
        hit = post_chat(
            stack.url, {"prompt": "How long do I rest a steak after grilling it?", **ns}
        )
        assert hit.json()["cache"]["status"] == "semantic"  # answered before any audit
        # This namespace's row: other tests (tests/test_flow.py) audit in the same database.
        namespace = namespace_of(first, ns)[:16]
        deadline, audits = time.monotonic() + 30, {}
        while time.monotonic() < deadline and not audits:
            stats = requests.get(f"{stack.url}/api/v1/stats", headers=auth(), timeout=10).json()
            audits = next((a for a in stats["audits"]["namespaces"]
                           if a["namespace"] == namespace), {})  # fmt: skip
            time.sleep(0.3)
        # The stand-in answers "Answer to: <prompt>": two prompts, two texts; the judge
        # (the stand-in again) does not say "yes", so the hit counts as wrong.
        assert (audits["audited"], audits["wrong"]) == (1, 1)
        assert stats["audits"]["wrong"] >= 1 and stats["audits"]["error_rate"] > 0
        assert standin.calls()["chat"] == 3  # the answer, the audit's answer, the judge
        metrics = scrape(stack.url)
        assert sample(metrics, "flock_audits_total", verdict="wrong") == 1
    finally:
        stack.start_worker("embedder", "embed", concurrency=2, pool="threads")
        audited.stop()
        auditor.stop()
