"""Feedback closes the loop: a wrong semantic hit invalidates its entry and tightens the
threshold of its namespace, for every later lookup (reported by an admin here; a quorum of
users does the same: tests/test_sharing.py)."""

from __future__ import annotations

import uuid

import requests

from tests.conftest import auth, create_user, fresh_namespace, post_chat


def test_a_wrong_semantic_hit_tightens_its_namespace(stack, standin, stack_env):
    admin = create_user(stack_env, f"acc-admin-{uuid.uuid4().hex[:6]}", admin=True)
    ns = fresh_namespace()
    first = "How long should I boil an egg?"
    reworded = "How many minutes should I boil an egg?"
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


def test_the_uncertain_band_asks_the_llm_before_refusing(stack, standin):
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
        assert post_chat(stack.url, {"prompt": asked, **ns}).json()["cache"]["status"] == "miss"
        standin.configure(reply="Yes")
        # Paraphrases the shipped verifier refuses (bench/data/traps.jsonl, same: true).
        hit = post_chat(stack.url, {"prompt": "Is it safe for dogs to eat grapes?", **ns}).json()
        assert hit["cache"]["status"] == "semantic"
        assert hit["cache"]["matched_prompt"] == asked
        checks = {c["name"]: c for c in hit["cache"]["checks"]}
        assert checks["verifier"]["passed"] is False and checks["llm"]["passed"] is True
        assert standin.calls()["chat"] == 2  # the answer, then one yes/no question

        calls = standin.calls()["chat"]
        vetoed = post_chat(stack.url, {"prompt": "Can dogs not eat grapes?", **ns}).json()
        assert vetoed["cache"]["status"] == "miss"
        assert standin.calls()["chat"] == calls + 1  # the answer only: nobody asked

        standin.configure(reply="No")
        other = fresh_namespace()
        post_chat(stack.url, {"prompt": "Which planets have rings?", **other})
        calls = standin.calls()["chat"]
        no = post_chat(stack.url, {"prompt": "What planets have ring systems?", **other}).json()
        assert no["cache"]["status"] == "miss"
        assert standin.calls()["chat"] == calls + 2  # the question, then the answer
    finally:
        stack.start_worker("embedder", "embed", concurrency=2, pool="threads")
        banded.stop()
        del stack.procs["embedder-band"]
