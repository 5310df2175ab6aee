"""The semantic index's HNSW path against the exact one, on the real Redis change log and
the real PostgreSQL record: real MiniLM vectors of real sentences, removals, re-adds,
compaction, the switch between exact and HNSW, and a snapshot a new process starts from.

Each test has a key prefix of its own (its own change log) and namespaces of its own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from cache import Entry, Keyspace, SemanticIndex
from cache.repo import CacheRepo
from cache.semantic import _Ann, _Exact
from inference.embeddings import load_embedder
from settings import Settings
from tests.stack import ROOT

SENTENCES = ROOT / "bench" / "data" / "nearmiss.jsonl"


@pytest.fixture(scope="module")
def sentences() -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Real questions (stored) and their near-misses (asked), with MiniLM's vectors."""
    pairs = [json.loads(line) for line in SENTENCES.read_text().splitlines()]
    stored = list(dict.fromkeys(p["a"] for p in pairs))
    asked = list(dict.fromkeys(p["b"] for p in pairs if p["b"] not in stored))
    model = load_embedder(cache_dir=ROOT / Settings().embed_cache_dir)
    return stored, asked, model.embed(stored), model.embed(asked)


@pytest.fixture
def repo(database) -> Iterator[CacheRepo]:
    pool = ConnectionPool(database, min_size=1, max_size=2, kwargs={"autocommit": True})
    pool.open()
    yield CacheRepo(pool)
    pool.close()


@pytest.fixture
def keys(redis_client) -> Keyspace:
    return Keyspace(f"flock:test:{uuid.uuid4().hex[:8]}:")


def store(repo: CacheRepo, namespace: str, prompts: list[str], vectors: np.ndarray) -> list[str]:
    """Record entries in PostgreSQL as the generate task does; returns their keys."""
    out = []
    for prompt, vector in zip(prompts, vectors, strict=True):
        key = uuid.uuid4().hex + uuid.uuid4().hex
        entry = Entry(key=key, namespace=namespace, model="m", prompt=prompt, response="r")
        repo.put(entry, 3600, vector)
        out.append(key)
    return out


def count(idx: SemanticIndex, namespace: str) -> int:
    idx.sync()
    space = idx._spaces.get(namespace)
    return len(space) if space is not None else 0


def index(redis_client, keys, repo, **options) -> SemanticIndex:
    return SemanticIndex(redis_client, keys, repo.vectors, fetch=repo.vectors_of, **options)


def test_hnsw_finds_what_exact_search_finds_on_real_sentences(redis_client, keys, repo, sentences):
    stored, asked, vs, va = sentences
    ns = uuid.uuid4().hex
    added = store(repo, ns, stored, vs)
    ann = index(redis_client, keys, repo, ann_min_entries=0)  # HNSW at any size
    exact = index(redis_client, keys, repo, ann_min_entries=10**9)
    assert count(ann, ns) == count(exact, ns) == len(added)
    assert isinstance(ann._spaces[ns], _Ann) and isinstance(exact._spaces[ns], _Exact)
    by_key = dict(zip(added, vs, strict=True))
    same = 0
    for vector in va:
        a, e = ann.search(ns, vector, k=3), exact.search(ns, vector, k=3)
        assert len(a) == len(e) == 3
        assert abs(a[0].similarity - e[0].similarity) < 0.005  # int8 vectors: close
        same += a[0].key == e[0].key
        if a[0].key != e[0].key:  # a swap of near-ties only: exact scores them within 0.005
            assert e[0].similarity - float(by_key[a[0].key] @ vector) < 0.005
    assert same / len(va) >= 0.97, same


def test_the_log_names_keys_and_the_vectors_come_from_postgresql(redis_client, keys, repo):
    ns = uuid.uuid4().hex
    reader = index(redis_client, keys, repo, ann_min_entries=0)
    assert reader.search(ns, np.ones(384, dtype=np.float32) / 384**0.5) == []
    vector = np.random.default_rng(1).standard_normal(384).astype(np.float32)
    vector /= np.linalg.norm(vector)
    (key,) = store(repo, ns, ["What is a tensor?"], vector[None])
    writer = index(redis_client, keys, repo)  # another process: it only publishes
    writer.add(ns, key, "What is a tensor?", vector)
    (change,) = [f for _, f in redis_client.xrange(keys.semlog)]
    assert set(change) == {b"op", b"ns", b"key"}  # no prompt, no vector
    (hit,) = reader.search(ns, vector, k=3)
    assert (hit.key, hit.prompt) == (key, "What is a tensor?")
    assert hit.similarity > 0.99
    # An add whose entry is no longer live by the time it is read is not indexed.
    repo.invalidate("test", entry_id=repo.live(key)[0].id)
    fresh = index(redis_client, keys, repo, ann_min_entries=0)
    assert fresh.search(ns, vector, k=3) == []


def test_new_entries_postgresql_cannot_give_wait_and_the_search_runs_on_what_it_holds(
    redis_client, keys, repo
):
    """Just after a PostgreSQL restart the catch-up's read of new entries failed the whole
    answer task (a 502): the search now runs on the entries the index holds and reads the
    new ones at the next search."""
    ns = uuid.uuid4().hex
    rng = np.random.default_rng(3)
    old, new = _unit(rng, 1), _unit(rng, 1)
    (old_key,) = store(repo, ns, ["What is a tensor?"], old)
    down = {"now": False}

    def fetch(keys_: list[str]):
        if down["now"]:
            raise psycopg.OperationalError("couldn't get a connection after 1.00 sec")
        return repo.vectors_of(keys_)

    reader = SemanticIndex(redis_client, keys, repo.vectors, fetch=fetch)
    assert [c.key for c in reader.search(ns, old[0], k=3)] == [old_key]
    (new_key,) = store(repo, ns, ["What is a matrix?"], new)
    index(redis_client, keys, repo).add(ns, new_key, "What is a matrix?", new[0])
    down["now"] = True
    assert [c.key for c in reader.search(ns, new[0], k=3)] == [old_key]  # what it holds
    down["now"] = False
    assert reader.search(ns, new[0], k=3)[0].key == new_key  # caught up


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 384)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_removal_then_re_add_reuses_slots(redis_client, keys, repo):
    rng = np.random.default_rng(2)
    ns = uuid.uuid4().hex
    vectors = _unit(rng, 300)
    added = store(repo, ns, [f"question {i}" for i in range(300)], vectors)
    idx = index(redis_client, keys, repo, ann_min_entries=0)
    assert count(idx, ns) == 300
    space = idx._spaces[ns]
    assert isinstance(space, _Ann)
    capacity = space.index.capacity
    for _ in range(5):  # churn: remove a third, add them back
        for key in added[:100]:
            idx.remove(ns, key)
        idx.sync()
        assert idx.search(ns, vectors[0], k=1)[0].key != added[0]
        assert len(space) == 200
        for key, vector in zip(added[:100], vectors[:100], strict=True):
            idx.add(ns, key, "", vector)  # the prompt is read from PostgreSQL
        idx.sync()
        (hit,) = idx.search(ns, vectors[0], k=1)
        assert (hit.key, hit.prompt) == (added[0], "question 0")
    assert space.index.capacity == capacity  # no growing holes
    assert len(space.keys) == 300 and not space.free


def test_compaction_and_the_switch_back_to_exact(redis_client, keys, repo):
    rng = np.random.default_rng(3)
    ns = uuid.uuid4().hex
    vectors = _unit(rng, 3000)
    added = store(repo, ns, [f"q{i}" for i in range(3000)], vectors)
    idx = index(redis_client, keys, repo, ann_min_entries=1000)
    assert count(idx, ns) == 3000
    assert isinstance(idx._spaces[ns], _Ann)
    for key in added[:1800]:  # 1200 left: still HNSW, with 1800 free slots
        idx.remove(ns, key)
    idx.sync()
    assert isinstance(idx._spaces[ns], _Ann)
    assert idx.stats()["ann_holes"] >= 1800
    before = [idx.search(ns, v, k=3) for v in vectors[1800:1900]]
    assert idx.compact() == 1
    assert idx.stats()["ann_holes"] < 1800
    after = [idx.search(ns, v, k=3) for v in vectors[1800:1900]]
    assert [c[0].key for c in after] == [c[0].key for c in before] == added[1800:1900]
    for key in added[1800:2800]:  # 200 left: below half of 1000, back to exact
        idx.remove(ns, key)
    idx.sync()
    assert isinstance(idx._spaces[ns], _Exact)
    assert [idx.search(ns, v, k=1)[0].key for v in vectors[2800:]] == added[2800:]


def test_a_new_process_starts_from_a_snapshot_and_catches_up(
    redis_client, keys, repo, tmp_path: Path
):
    rng = np.random.default_rng(4)
    ns = uuid.uuid4().hex
    vectors = _unit(rng, 600)
    added = store(repo, ns, [f"q{i}" for i in range(500)], vectors[:500])
    first = index(redis_client, keys, repo, ann_min_entries=100, snapshot_dir=tmp_path)
    assert count(first, ns) == 500  # the first build writes the first snapshot
    assert (tmp_path / "current.json").exists()
    # Changes after the snapshot: 100 adds, 50 removals (PostgreSQL first, as ever).
    later = store(repo, ns, [f"q{i}" for i in range(500, 600)], vectors[500:])
    for key, vector in zip(later, vectors[500:], strict=True):
        first.add(ns, key, "", vector)
    for key in added[:50]:
        repo.invalidate("test", entry_id=repo.live(key)[0].id)
        first.remove(ns, key)
    second = index(redis_client, keys, repo, ann_min_entries=100, snapshot_dir=tmp_path)
    assert count(second, ns) == 550
    assert second.stats()["loaded_from"] == "snapshot"
    assert second.search(ns, vectors[550], k=1)[0].key == later[50]
    assert second.search(ns, vectors[10], k=1)[0].key != added[10]
    # Redis lost the log: the snapshot's position means nothing, the source is read.
    redis_client.delete(keys.semlog, keys.semlog_epoch)
    third = index(redis_client, keys, repo, ann_min_entries=100, snapshot_dir=tmp_path)
    assert count(third, ns) == 550
    assert third.stats()["loaded_from"] == "source"
