"""Feedback closes the loop: a wrong semantic hit invalidates its entry and tightens the
threshold of its namespace, for every later lookup."""

from __future__ import annotations

import requests

from tests.conftest import auth, fresh_namespace, post_chat


def test_a_wrong_semantic_hit_tightens_its_namespace(stack, standin):
    ns = fresh_namespace()
    first = "How long should I boil an egg?"
    reworded = "How many minutes should I boil an egg?"
    assert post_chat(stack.url, {"prompt": first, **ns}).json()["cache"]["status"] == "miss"
    hit = post_chat(stack.url, {"prompt": reworded, **ns}).json()
    assert hit["cache"]["status"] == "semantic"
    similarity = hit["cache"]["similarity"]

    resp = requests.post(
        f"{stack.url}/api/v1/feedback", json={"id": hit["id"], "good": False}, headers=auth()
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
