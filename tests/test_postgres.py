"""PostgreSQL as the record: survival of a Redis flush, users and scopes, feedback,
eviction, rate limits and the request log. Real PostgreSQL, Redis and workers."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
import requests

from tests.conftest import auth, create_user, post_chat, post_many
from tests.stack import Stack


@pytest.fixture(scope="module")
def users(stack, stack_env) -> dict[str, str]:
    return {
        "alice": create_user(stack_env, f"alice-{uuid.uuid4().hex[:6]}"),
        "bob": create_user(stack_env, f"bob-{uuid.uuid4().hex[:6]}"),
        "admin": create_user(stack_env, f"admin-{uuid.uuid4().hex[:6]}", admin=True),
    }


def rows(database: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(database) as conn:
        return conn.execute(sql, params).fetchall()


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_a_flushed_redis_loses_nothing(stack, standin, redis_client, database, ns):
    first = post_chat(stack.url, {"prompt": "How do I descale a kettle with vinegar?", **ns})
    assert first.json()["cache"]["status"] == "miss"
    entry_id = first.json()["cache"]["entry_id"]
    assert rows(database, "SELECT prompt FROM cache_entries WHERE id = %s", entry_id) == [
        ("How do I descale a kettle with vinegar?",)
    ]

    redis_client.flushdb()  # everything Flock keeps in Redis is gone

    same = post_chat(stack.url, {"prompt": "How do I descale a kettle with vinegar?", **ns})
    para = post_chat(stack.url, {"prompt": "How can I descale my kettle using vinegar?", **ns})
    assert same.json()["cache"]["status"] == "exact"
    assert para.json()["cache"]["status"] == "semantic"
    assert same.json()["message"] == para.json()["message"] == first.json()["message"]
    assert standin.calls()["chat"] == 1


def test_a_new_embedder_rebuilds_its_index_from_postgres(stack, standin, redis_client, ns):
    post_chat(stack.url, {"prompt": "What is the best soil for growing blueberries?", **ns})
    redis_client.flushdb()
    fresh = stack.start_worker("embedder-fresh", "embed", concurrency=1)
    stack.procs["embedder"].stop()  # only the fresh process answers now
    try:
        para = post_chat(stack.url, {"prompt": "Which soil is best for blueberry plants?", **ns})
        assert para.json()["cache"]["status"] == "semantic"
        assert standin.calls()["chat"] == 1
    finally:
        stack.start_worker("embedder", "embed", concurrency=2)
        fresh.stop()
        del stack.procs["embedder-fresh"]


def test_no_key_is_401_and_a_bad_key_is_401(stack):
    for headers in ({}, {"Authorization": "Bearer flk_nope"}, {"Authorization": "Basic abc"}):
        resp = requests.post(f"{stack.url}/api/v1/chat", json={"prompt": "hi"}, headers=headers)
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "unauthorized"


def test_a_private_entry_is_only_ever_served_to_its_owner(stack, standin, users, ns):
    question = "What did my doctor say about my blood test results?"
    private = {"prompt": question, "cache": {"scope": "private"}, **ns}
    mine = post_chat(stack.url, private, key=users["alice"]).json()
    assert mine["cache"]["status"] == "miss"
    assert post_chat(stack.url, private, key=users["alice"]).json()["cache"]["status"] == "exact"

    # exact and semantic: bob asks the same and a paraphrase, shared and privately
    for scope in ("shared", "private"):
        for prompt in (question, "What did my doctor tell me about my blood test results?"):
            body = {"prompt": prompt, "cache": {"scope": scope}, **ns}
            theirs = post_chat(stack.url, body, key=users["bob"]).json()
            assert theirs["cache"]["entry_id"] != mine["cache"]["entry_id"], (prompt, scope)
    assert standin.calls()["chat"] == 3  # alice's, bob's shared one, bob's private one

    # bob can neither see nor invalidate alice's private entry
    entry = mine["cache"]["entry_id"]
    listed = requests.get(f"{stack.url}/api/v1/entries", headers=auth(users["bob"]), timeout=10)
    assert entry not in {e["id"] for e in listed.json()["entries"]}
    shown = requests.get(f"{stack.url}/api/v1/entries/{entry}", headers=auth(users["bob"]))
    assert shown.status_code == 404
    deleted = requests.delete(f"{stack.url}/api/v1/entries/{entry}", headers=auth(users["bob"]))
    assert deleted.status_code == 404
    own = requests.get(f"{stack.url}/api/v1/entries", headers=auth(users["alice"]), timeout=10)
    assert entry in {e["id"] for e in own.json()["entries"]}


def test_private_requests_of_two_users_are_never_coalesced(stack, standin, users, ns):
    standin.configure(latency_s=1.5)
    body = {"prompt": "Summarise my last three bank statements", "cache": {"scope": "private"}}
    bodies = [{**body, **ns}] * 6
    alice = post_many(stack.url, bodies[:3], key=users["alice"])
    bob = post_many(stack.url, bodies[3:], key=users["bob"])
    assert standin.calls()["chat"] == 2
    assert len({r.json()["cache"]["entry_id"] for r in alice}) == 1
    assert {r.json()["cache"]["entry_id"] for r in alice}.isdisjoint(
        {r.json()["cache"]["entry_id"] for r in bob}
    )


def test_admin_endpoints_are_403_for_users(stack, users):
    resp = requests.post(
        f"{stack.url}/api/v1/entries/invalidate", json={"model": "x"}, headers=auth(users["bob"])
    )
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "forbidden"
    ok = requests.post(
        f"{stack.url}/api/v1/entries/invalidate",
        json={"model": "no-such-model"},
        headers=auth(users["admin"]),
    )
    assert ok.status_code == 200 and ok.json() == {"invalidated": 0}


def test_feedback_invalidates_the_entry_everywhere(stack, standin, database, ns):
    first = post_chat(stack.url, {"prompt": "How many legs does a spider have?", **ns}).json()
    para = post_chat(stack.url, {"prompt": "How many legs do spiders have?", **ns}).json()
    assert para["cache"]["status"] == "semantic"

    # Feedback on the first answer (a miss: the namespace's threshold stays; a wrong
    # semantic hit would raise it, see tests/test_accuracy.py).
    resp = requests.post(
        f"{stack.url}/api/v1/feedback", json={"id": first["id"], "good": False}, headers=auth()
    )
    assert resp.status_code == 200
    assert resp.json()["invalidated"] == [first["cache"]["entry_id"]]
    assert resp.json()["namespace_threshold"] is None
    reason = rows(database, "SELECT invalidated_reason FROM cache_entries WHERE id = %s",
                  first["cache"]["entry_id"])  # fmt: skip
    assert reason == [("feedback",)]

    # the exact key, its semantic alias and the index all forgot it
    assert (
        post_chat(stack.url, {"prompt": "How many legs does a spider have?", **ns}).json()["cache"][
            "status"
        ]
        == "miss"
    )
    assert standin.calls()["chat"] == 2
    again = post_chat(stack.url, {"prompt": "How many legs do spiders have?", **ns}).json()
    assert again["cache"]["status"] == "semantic"  # served from the new entry
    assert again["cache"]["entry_id"] != first["cache"]["entry_id"]
    assert standin.calls()["chat"] == 2


def test_feedback_on_an_unknown_answer_is_404(stack):
    resp = requests.post(
        f"{stack.url}/api/v1/feedback", json={"id": "nope", "good": False}, headers=auth()
    )
    assert resp.status_code == 404


def test_an_expired_entry_stops_matching_everywhere(stack, standin, ns):
    post_chat(stack.url, {"prompt": "What is the tallest tree species?", "cache": {"ttl": 2}, **ns})
    time.sleep(3.5)  # past the TTL and at least one sweep (EVICT_INTERVAL_S=1)
    exact = post_chat(stack.url, {"prompt": "What is the tallest tree species?", **ns}).json()
    assert exact["cache"]["status"] == "miss"
    assert standin.calls()["chat"] == 2


def test_the_size_bound_evicts_the_least_recently_hit(stack, standin, database, redis_client, ns):
    from psycopg_pool import ConnectionPool

    from cache import ExactStore, Keyspace, SemanticIndex
    from cache.repo import CacheRepo

    old = post_chat(stack.url, {"prompt": "Why do cats purr?", **ns}).json()
    post_chat(stack.url, {"prompt": "Why do dogs wag their tails?", **ns})
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "UPDATE cache_entries SET last_hit_at = '2000-01-01' WHERE id = %s",
            (old["cache"]["entry_id"],),
        )
        live = conn.execute("SELECT count(*) FROM cache_entries WHERE invalidated_at IS NULL")
        bound = live.fetchone()[0] - 1

    from tasks.sweeper import sweep

    with ConnectionPool(database, min_size=1, kwargs={"autocommit": True}) as pool:
        repo = CacheRepo(pool)
        keys = Keyspace("flock:v1:")
        store = ExactStore(redis_client, keys)
        index = SemanticIndex(redis_client, keys, repo.vectors)
        assert sweep(repo, store, index, bound) == 1

    assert (
        post_chat(stack.url, {"prompt": "Why do cats purr?", **ns}).json()["cache"]["status"]
        == "miss"
    )
    kept = post_chat(stack.url, {"prompt": "Why do dogs wag their tails?", **ns}).json()
    assert kept["cache"]["status"] == "exact"
    assert standin.calls()["chat"] == 3


def test_over_the_rate_limit_is_429_with_retry_after(stack, stack_env, tmp_path):
    limited = Stack(env={**stack_env, "REQUESTS_PER_MINUTE": "3"}, logdir=tmp_path)
    limited.start_web(workers=1)
    try:
        key = create_user(stack_env, f"carol-{uuid.uuid4().hex[:6]}")
        statuses = []
        # A miss, a miss and a hit the fast path admits (webapp.fastpath: the view must not
        # take a second token for the miss it hands over), then one too many.
        for prompt in ["What is a token bucket?", "What is a leaky bucket?",
                       "What is a token bucket?", "What is a token bucket?"]:  # fmt: skip
            resp = post_chat(limited.url, {"prompt": prompt}, key=key)
            statuses.append(resp.status_code)
        assert statuses == [200, 200, 200, 429]
        assert resp.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(resp.headers["Retry-After"]) <= 20
    finally:
        limited.stop()


def test_an_exact_hit_below_flask_is_the_views_answer(stack, stack_env, database, tmp_path):
    """webapp.fastpath answers exact hits of a remembered API key without Flask: its answer
    must be the view's, byte for byte apart from the id and the timing, and logged alike."""
    web = Stack(env=stack_env, logdir=tmp_path)
    web.start_web(workers=1)
    try:
        key = create_user(stack_env, f"dora-{uuid.uuid4().hex[:6]}")
        body = {"prompt": f"Why is the {uuid.uuid4().hex[:8]} sky blue?"}
        assert post_chat(web.url, body, key=key).json()["cache"]["status"] == "miss"
        other = create_user(stack_env, f"eve-{uuid.uuid4().hex[:6]}")
        by_view = post_chat(web.url, body, key=other)  # a key this process never saw: Flask
        below = post_chat(web.url, body, key=other)  # now remembered: the fast path
    finally:
        web.stop()
    assert by_view.status_code == below.status_code == 200
    assert by_view.headers["X-Cache"] == below.headers["X-Cache"] == "exact"
    assert by_view.headers["Content-Type"] == below.headers["Content-Type"]
    a, b = by_view.json(), below.json()
    assert a["id"] != b["id"]
    for answer in (a, b):
        del answer["id"], answer["timings"]["total_ms"]
    assert a == b
    assert list(by_view.json()) == list(below.json())  # same field order too
    sql = "SELECT outcome FROM request_log WHERE answer_id = %s"
    assert wait_for(lambda: rows(database, sql, below.json()["id"])) == [("exact",)]


def test_request_log_has_every_outcome(stack, standin, database, ns):
    standin.configure(latency_s=1.0)
    miss_and_coalesced = post_many(stack.url, [{"prompt": "Is Pluto a planet?", **ns}] * 3)
    exact = post_chat(stack.url, {"prompt": "Is Pluto a planet?", **ns})
    semantic = post_chat(stack.url, {"prompt": "Is Pluto considered a planet?", **ns})
    standin.configure(fail_status=500, latency_s=0)
    error = post_chat(stack.url, {"prompt": "What is the speed of dark?", **ns})
    ids = [r.json().get("id") for r in [*miss_and_coalesced, exact, semantic]]

    def logged():
        found = rows(database, "SELECT outcome FROM request_log WHERE answer_id = ANY(%s)", ids)
        return sorted(o for (o,) in found) if len(found) == len(ids) else None

    assert wait_for(logged) == ["coalesced", "coalesced", "exact", "miss", "semantic"]
    assert error.status_code == 502
    sql = "SELECT error_code FROM request_log WHERE outcome = 'error' AND prompt = %s"
    errors = wait_for(lambda: rows(database, sql, "What is the speed of dark?"))
    assert errors == [("llm_unavailable",)]
    stats = requests.get(f"{stack.url}/api/v1/stats?window=600", headers=auth(), timeout=10).json()
    assert stats["counts"]["exact"] >= 1 and stats["counts"]["semantic"] >= 1
    assert stats["tokens_saved"] > 0
    assert 0 < stats["hit_rate"] < 1


def test_an_exact_hit_writes_nothing_to_postgres(stack, stack_env, database, tmp_path, ns):
    """A web process whose database role may only read still serves hits: nothing on
    the request path writes to PostgreSQL (the log is written later, in batches)."""
    post_chat(stack.url, {"prompt": "What is the capital of Australia?", **ns})
    role = f"flock_ro_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    readonly_url = database.replace("postgres@", f"{role}@")
    web = Stack(env={**stack_env, "DATABASE_URL": readonly_url}, logdir=tmp_path)
    web.start_web(workers=1)
    try:
        hits = [post_chat(web.url, {"prompt": "What is the capital of Australia?", **ns})
                for _ in range(20)]  # fmt: skip
        assert {r.status_code for r in hits} == {200}
        assert {r.json()["cache"]["status"] for r in hits} == {"exact"}
        time.sleep(0.5)
        assert "permission denied" in (tmp_path / "web.log").read_text()  # the batch, later
    finally:
        web.stop()
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(f"REASSIGN OWNED BY {role} TO postgres")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_api_keys_can_be_created_listed_and_revoked(stack):
    s = requests.Session()
    name = f"dave-{uuid.uuid4().hex[:6]}"
    reg = s.post(f"{stack.url}/api/v1/auth/register", json={"name": name, "password": "pw-123456"})
    csrf = {"X-CSRF-Token": reg.json()["csrf_token"]}
    created = s.post(f"{stack.url}/api/v1/keys", json={"name": "ci"}, headers=csrf)
    assert created.status_code == 201
    new_key = created.json()["key"]
    listed = requests.get(f"{stack.url}/api/v1/keys", headers=auth(new_key)).json()["keys"]
    assert {k["name"] for k in listed} == {"ci"}
    assert all("key" not in k and "key_hash" not in k for k in listed)
    gone = s.delete(f"{stack.url}/api/v1/keys/{created.json()['id']}", headers=csrf)
    assert gone.status_code == 200
    # Every web process remembers a key for up to 10 s (an exact hit costs no lookup):
    # within that, the revoked key stops working everywhere.
    refused = wait_for(
        lambda: requests.get(f"{stack.url}/api/v1/keys", headers=auth(new_key)).status_code == 401,
        timeout=12,
    )
    assert refused


def test_browser_sessions_need_the_csrf_token(stack):
    s = requests.Session()
    name = f"erin-{uuid.uuid4().hex[:6]}"
    reg = s.post(f"{stack.url}/api/v1/auth/register", json={"name": name, "password": "pw-123456"})
    assert reg.status_code == 201
    token = reg.json()["csrf_token"]
    assert s.get(f"{stack.url}/api/v1/auth/me").json()["user"]["name"] == name
    no_token = s.post(f"{stack.url}/api/v1/keys", json={"name": "x"})
    assert no_token.status_code == 403 and no_token.json()["error"]["code"] == "csrf"
    ok = s.post(f"{stack.url}/api/v1/keys", json={"name": "x"}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 201
    s.post(f"{stack.url}/api/v1/auth/logout", headers={"X-CSRF-Token": token})
    assert s.get(f"{stack.url}/api/v1/auth/me").status_code == 401
    wrong = requests.post(
        f"{stack.url}/api/v1/auth/login", json={"name": name, "password": "wrong-password"}
    )
    assert wrong.status_code == 401


def test_migrations_are_idempotent(database):
    from webapp.migrate import migrate

    assert migrate(database) == []
    applied = rows(database, "SELECT version FROM schema_migrations ORDER BY version")
    assert [v for (v,) in applied][:3] == [
        "0001_users_and_keys", "0002_cache_entries", "0003_request_log"
    ]  # fmt: skip
