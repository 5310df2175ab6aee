"""cache/ against a real Redis: the index's sync between processes, the lease's
follower protocol, the embedding cache."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from cache import (
    EmbeddingCache,
    Entry,
    ExactStore,
    Follower,
    InFlightPrompts,
    Keyspace,
    Lease,
    Outcome,
    SemanticIndex,
    WakeupHub,
)


@pytest.fixture
def keys(redis_client):
    p = f"t:{uuid.uuid4().hex[:8]}:"
    yield Keyspace(p)
    for key in redis_client.scan_iter(match=f"{p}*"):
        redis_client.delete(key)


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=384).astype(np.float32)
    return v / np.linalg.norm(v)


def nothing():
    return []


def test_an_entry_added_by_one_process_is_found_by_the_other(redis_client, keys):
    a, b = (
        SemanticIndex(redis_client, keys, nothing),
        SemanticIndex(redis_client, keys, nothing),
    )
    assert b.search("ns", unit(1)) == []  # b has built itself before the add
    a.add("ns", "k1", "what is redis", unit(1))
    found = b.search("ns", unit(1))
    assert [(c.key, c.prompt) for c in found] == [("k1", "what is redis")]
    assert found[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert b.search("other-ns", unit(1)) == []

    a.remove("ns", "k1")
    assert b.search("ns", unit(1)) == []


def test_a_new_process_rebuilds_from_the_source_then_follows_the_log(redis_client, keys):
    stored = [("ns", f"k{i}", f"prompt {i}", unit(i)) for i in range(20)]
    a = SemanticIndex(redis_client, keys, lambda: stored)
    assert a.size() == 20
    del stored[3]  # the record first, then the log: as the callers do
    a.remove("ns", "k3")
    fresh = SemanticIndex(redis_client, keys, lambda: stored)
    assert fresh.size() == 19
    stored.append(("ns", "k20", "new", unit(20)))
    a.add("ns", "k20", "new", unit(20))
    assert fresh.search("ns", unit(20), k=1)[0].key == "k20"  # followed after the load
    assert fresh.search("ns", unit(7), k=1)[0].key == "k7"
    assert all(c.key != "k3" for c in fresh.search("ns", unit(3), k=19))


def test_a_process_whose_log_position_was_trimmed_rebuilds(redis_client, keys):
    stored = []

    def store_and_add(index, i):
        stored.append(("ns", f"k{i}", str(i), unit(i)))
        index.add("ns", f"k{i}", str(i), unit(i))

    a = SemanticIndex(redis_client, keys, lambda: stored)
    b = SemanticIndex(redis_client, keys, lambda: stored)
    store_and_add(a, 0)
    assert b.search("ns", unit(0))[0].key == "k0"
    for i in range(1, 5):
        store_and_add(a, i)
    redis_client.xtrim(keys.semlog, maxlen=1)  # b's next position is gone
    assert b.search("ns", unit(2), k=1)[0].key == "k2"
    assert b.size() == 5


def test_nearest_first(redis_client, keys):
    index = SemanticIndex(redis_client, keys, nothing)
    index.sync()
    base = unit(0)
    near = base + 0.1 * unit(1)
    index.add("ns", "far", "far", unit(2))
    index.add("ns", "near", "near", near / np.linalg.norm(near))
    index.add("ns", "same", "same", base)
    assert [c.key for c in index.search("ns", base, k=3)] == ["same", "near", "far"]


def test_embedding_cache_computes_each_text_once(redis_client, keys):
    cache = EmbeddingCache(redis_client, keys)
    calls = []

    def compute(texts):
        calls.append(list(texts))
        return np.vstack([unit(len(t)) for t in texts])

    first, n1 = cache.embed("m", ["a", "bb", "a"], compute)
    second, n2 = cache.embed("m", ["bb", "a", "ccc"], compute)
    assert (n1, n2) == (2, 1)
    assert calls == [["a", "bb"], ["ccc"]]
    np.testing.assert_array_equal(first[1], second[0])
    assert cache.embed("other-model", ["a"], compute)[1] == 1


def _store(redis_client, keys, lease_ms=5000):
    lease = Lease(redis_client, keys, lease_ms)
    return lease, ExactStore(redis_client, keys)


def _entry(key="lead", prompt="how do I reset my router"):
    return Entry(key=key, namespace="ns", model="m", prompt=prompt, response="unplug it")


def test_a_follower_joins_a_running_leader_and_gets_its_answer(redis_client, keys):
    lease, store = _store(redis_client, keys)
    assert lease.acquire("lead", "a1") and lease.claim("lead", "a1", "r")
    assert lease.acquire("f1", "b1")
    assert lease.follow("lead", Follower("f1", "b1", 0.93))
    assert redis_client.get(keys.lock("f1")) == b"r:b1"  # nobody else may generate f1 now

    pubsub = redis_client.pubsub()
    pubsub.subscribe(keys.done("f1"))
    pubsub.get_message(timeout=1)
    answered = store.finish("lead", Outcome(attempt="a1", entry=_entry()), ttl_s=60)

    assert [f.key for f in answered] == ["f1"]
    message = pubsub.get_message(timeout=1)
    outcome = Outcome.from_json(message["data"])
    assert (outcome.status, outcome.attempt, outcome.similarity) == ("coalesced", "b1", 0.93)
    assert outcome.matched_prompt == "how do I reset my router"
    assert store.get("f1").response == "unplug it"  # an exact alias for the follower's key
    assert redis_client.exists(keys.lock("lead"), keys.lock("f1")) == 0
    pubsub.close()


def test_nobody_follows_a_leader_that_has_finished(redis_client, keys):
    lease, store = _store(redis_client, keys)
    lease.acquire("lead", "a1")
    store.finish("lead", Outcome(attempt="a1", entry=_entry()), ttl_s=60)
    lease.acquire("f1", "b1")
    assert not lease.follow("lead", Follower("f1", "b1", 0.95))
    assert redis_client.get(keys.lock("f1")) == b"q:b1"  # untouched: it will lead itself


def test_followers_of_followers_and_errors_are_answered(redis_client, keys):
    lease, store = _store(redis_client, keys)
    lease.acquire("a", "1")
    lease.acquire("b", "2")
    lease.acquire("c", "3")
    assert lease.follow("b", Follower("c", "3", 0.91))  # c follows b ...
    assert lease.follow("a", Follower("b", "2", 0.92))  # ... then b follows a
    error = Outcome(attempt="1", error_code="llm_unavailable", error_message="boom")
    answered = store.finish("a", error, ttl_s=None)
    assert sorted(f.key for f in answered) == ["b", "c"]
    assert redis_client.exists(*(keys.lock(k) for k in "abc")) == 0
    assert store.get("b") is None and store.get("c") is None  # errors are never cached


def test_heartbeat_keeps_followers_alive(redis_client, keys):
    lease, _ = _store(redis_client, keys, lease_ms=1000)
    lease.acquire("lead", "a1")
    lease.claim("lead", "a1", "r")
    lease.acquire("f1", "b1")
    lease.follow("lead", Follower("f1", "b1", 0.9))
    redis_client.pexpire(keys.lock("f1"), 50)
    assert lease.extend("lead", "a1")
    assert redis_client.pttl(keys.lock("f1")) > 500
    assert not lease.extend("lead", "someone-else")


def test_a_running_claim_belongs_to_its_attempt(redis_client, keys):
    lease, _ = _store(redis_client, keys)
    assert lease.acquire("k", "a")
    assert not lease.acquire("k", "b")
    assert lease.claim("k", "b", "q")  # a queued claim may be taken over ...
    assert lease.claim("k", "b", "r")
    assert not lease.claim("k", "a", "r")  # ... a running one may not
    assert not lease.claim("k", "b", "q")  # nor demoted by a redelivered answer task
    lease.release("k", "a")
    assert redis_client.get(keys.lock("k")) == b"r:b"
    lease.release("k", "b")
    assert redis_client.get(keys.lock("k")) is None


def test_leases_in_flight_are_counted_without_scanning(redis_client, keys):
    """/metrics reads this count: taken and released leases move it, a lapsed one (its
    worker died) drops out by itself, and a finish releases its key too."""
    from cache.lease import in_flight

    lease, store = _store(redis_client, keys, lease_ms=300)
    assert in_flight(redis_client, keys) == 0
    assert lease.acquire("a", "1") and lease.acquire("b", "2") and lease.claim("b", "2", "r")
    assert not lease.acquire("a", "3")  # held: still one key
    assert in_flight(redis_client, keys) == 2
    lease.release("a", "1")
    assert in_flight(redis_client, keys) == 1
    entry = Entry(key="b", namespace="n", model="m", prompt="p", response="r")
    store.finish("b", Outcome(attempt="2", entry=entry), ttl_s=60)
    assert in_flight(redis_client, keys) == 0
    assert lease.acquire("c", "4")
    time.sleep(0.4)  # nobody released it
    assert in_flight(redis_client, keys) == 0


def test_inflight_lists_earlier_announcements_in_order(redis_client, keys):
    inflight = InFlightPrompts(redis_client, keys)
    first = inflight.announce("ns", "k1", "one", unit(1))
    second = inflight.announce("ns", "k2", "two", unit(2))
    assert [f.key for f in inflight.listed("ns")] == ["k1", "k2"]
    assert [f.key for f in inflight.listed("ns", before=second)] == ["k1"]
    assert inflight.listed("ns", before=first) == []
    inflight.withdraw("ns", first)
    assert [f.key for f in inflight.listed("ns")] == ["k2"]
    np.testing.assert_array_equal(inflight.listed("ns")[0].vector, unit(2))


def test_wake_ups_reach_every_waiter_of_their_key_in_the_process(redis_client, keys):
    """The waiters of one key share the polling (webapp.chat): the hub counts them, and an
    outcome, published by a worker or handed over by the waiter that polled, reaches them all
    and nobody else."""
    hub = WakeupHub(redis_client, keys)
    hub.start()
    entry = Entry(key="k1", namespace="shared", model="m", prompt="p", response="r")
    with hub.watch("k1") as first, hub.watch("k1") as second, hub.watch("k2") as other:
        assert (hub.waiting("k1"), hub.waiting("k2"), hub.waiting("k3")) == (2, 1, 0)
        redis_client.publish(keys.done("k1"), Outcome(attempt="a1", entry=entry).to_json())
        assert first.get(timeout=5) == second.get(timeout=5) == Outcome("a1", entry)
        hub.deliver("k1", Outcome(attempt="", entry=entry))
        assert first.get(timeout=1) == second.get(timeout=1) == Outcome("", entry)
        assert other.empty()
    assert hub.waiting("k1") == hub.waiting("k2") == 0


def test_an_alias_keeps_its_similarity_and_never_outlives_its_entry(redis_client, keys):
    lease, store = _store(redis_client, keys)
    entry = Entry(key="own", namespace="n", model="m", prompt="p", response="r")
    store.put("own", entry, ttl_s=60)
    assert lease.acquire("para", "a1")
    semantic = Outcome(attempt="a1", entry=entry, status="semantic", similarity=0.87,
                       threshold=0.85)  # fmt: skip
    store.finish("para", semantic, ttl_s=30 * 24 * 3600)
    alias = store.get("para")
    assert (alias.id, alias.similarity, alias.threshold) == (entry.id, 0.87, 0.85)
    assert 0 < redis_client.ttl(keys.resp("para")) <= 60  # the entry's, not the month asked
    assert alias.serves("para", 0.8) and alias.serves("para", 0.87)
    assert not alias.serves("para", 0.9)
    assert store.get("own").serves("own", 1.0)  # a key's own entry serves any threshold
    # An alias of the previous release (no similarity) is served to nobody.
    assert not Entry(key="own", namespace="n", model="m", prompt="p", response="r").serves(
        "para", 0.0
    )


def test_forgetting_an_entry_spares_a_key_answered_again_since(redis_client, keys):
    lease, store = _store(redis_client, keys)
    old = Entry(key="own", namespace="n", model="m", prompt="p", response="old")
    store.put("own", old, ttl_s=60)
    for key, similarity in (("a", 0.95), ("b", 0.85)):
        lease.acquire(key, key)
        store.finish(key, Outcome(attempt=key, entry=old, status="semantic",
                                  similarity=similarity), ttl_s=60)  # fmt: skip
    new_b = Entry(key="b", namespace="n", model="m", prompt="q", response="b's own")
    store.put("b", new_b, ttl_s=60)  # b was answered for itself since (its alias replaced)
    store.forget(old.id, "own")
    assert store.get("own") is None and store.get("a") is None
    assert store.get("b") == new_b
    assert not redis_client.exists(keys.aliases(old.id))


def test_a_raised_threshold_drops_the_aliases_below_it(redis_client, keys):
    lease, store = _store(redis_client, keys)
    entry = Entry(key="own", namespace="n", model="m", prompt="p", response="r")
    store.put("own", entry, ttl_s=60)
    for key, similarity in (("high", 0.97), ("low", 0.86)):
        lease.acquire(key, key)
        store.finish(key, Outcome(attempt=key, entry=entry, status="semantic",
                                  similarity=similarity), ttl_s=60)  # fmt: skip
    assert store.drop_aliases_below([entry.id], 0.9) == 1
    assert store.get("low") is None
    assert store.get("high").similarity == 0.97 and store.get("own") == entry
    assert redis_client.smembers(keys.aliases(entry.id)) == {b"high"}
