"""Redis key names: built in cache/keyspace.py and nowhere else, one hash tag per id."""

from __future__ import annotations

import ast
import time
import uuid
from pathlib import Path

import pytest
from redis.cluster import key_slot

from cache import Follower, Keyspace, Lease
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("cache", "webapp", "tasks", "inference", "settings.py", "celeryconfig.py")
KEYSPACE = ROOT / "cache" / "keyspace.py"
_ID = "IDENT"


def _kinds() -> set[str]:
    """What every Keyspace name starts with after the prefix: 'resp:', 'semlog', ..."""
    ks = Keyspace("")
    kinds = set()
    for name in dir(ks):
        if name.startswith("_") or name in ("prefix", "key_of_done"):
            continue
        attr = getattr(ks, name)
        value = attr if not callable(attr) else attr(*[_ID] * (attr.__code__.co_argcount - 1))
        for text in value if isinstance(value, tuple) else (value,):
            head = text.partition(_ID)[0].partition("*")[0].rstrip("{")  # without the hash tag
            if head and head != "}":  # "}": the tail of lock_parts, not a kind
                kinds.add(head)
    return kinds


def _strings(tree: ast.AST):
    """(line, text) of every string literal and every literal part of an f-string."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def _prefixed(tree: ast.AST):
    """Lines that glue something named like a prefix to more text: f"{prefix}..." or
    prefix + "..."."""
    for node in ast.walk(tree):
        first = None
        if isinstance(node, ast.JoinedStr) and len(node.values) > 1:
            part = node.values[0]
            first = part.value if isinstance(part, ast.FormattedValue) else None
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            first = node.left
        if first is not None and "prefix" in ast.unparse(first).lower():
            yield node.lineno, ast.unparse(node)


def test_key_names_are_built_in_keyspace_only():
    kinds = _kinds()
    assert {"resp:", "lock:", "done:", "semlog", "nsthreshold", "sweep", "job:"} <= kinds
    found = []
    for top in PRODUCT:
        where = ROOT / top
        for path in sorted(where.rglob("*.py")) if where.is_dir() else [where]:
            if path == KEYSPACE:
                continue
            tree = ast.parse(path.read_text())
            rel = path.relative_to(ROOT)
            for line, text in _strings(tree):
                for kind in kinds:
                    # 'resp:' starts or sits in a name; a fixed name ('sweep') is all of it
                    named = f":{kind}" in text if kind.endswith(":") else text == kind
                    if text.startswith(kind if kind.endswith(":") else f"{kind}:") or named:
                        found.append(f"{rel}:{line}: {text[:40]!r} names a {kind!r} key")
            found += [f"{rel}:{line}: {code[:60]}" for line, code in _prefixed(tree)]
    assert found == []


def test_the_names_of_one_key_share_a_cluster_slot():
    """One hash tag per id: every script and transaction of one exact key runs in one slot."""
    ks = Keyspace("p:")
    for key in ("abc", "k" * 64, "x{y}z"):
        names = [ks.resp(key), ks.lock(key), ks.done(key), ks.err(key), ks.followers(key),
                 ks.stream(key)]  # fmt: skip
        assert len({key_slot(n.encode()) for n in names}) == 1, names
    spread = {key_slot(ks.resp(f"{i:064x}").encode()) for i in range(200)}
    assert len(spread) > 150  # and different keys spread over the slots


def test_names_split_around_their_id():
    keys = Keyspace("p:")
    assert keys.key_of_done(keys.done("abc")) == "abc"
    head, tail = keys.lock_parts
    assert head + "abc" + tail == keys.lock("abc")
    assert keys.lock_pattern == f"{head}*{tail}"


def test_the_heartbeat_keeps_follower_locks_alive(redis_client):
    ks = Keyspace(f"t:{uuid.uuid4().hex[:8]}:")
    lease = Lease(redis_client, ks, 1000)
    try:
        assert lease.claim("leader", "a1", "r")
        assert lease.follow("leader", Follower("follower", "b1", 0.9))
        time.sleep(0.6)
        assert lease.extend("leader", "a1")
        assert redis_client.pttl(ks.lock("follower")) > 700  # extended, not left to lapse
    finally:
        for key in redis_client.scan_iter(match=f"{ks.prefix}*"):
            redis_client.delete(key)


@pytest.mark.parametrize(
    "env",
    [{"FLOCK_KEY_PREFIX": "flock:{v1}:"}, {"REDIS_CLUSTER": "1"}],
    ids=["braced-prefix", "cluster-without-broker"],
)
def test_settings_refuse_what_would_break_a_cluster(env):
    """A braced prefix would be every key's hash tag (one slot); Celery cannot use a cluster."""
    with pytest.raises(ValueError, match="FLOCK_KEY_PREFIX|CELERY_BROKER_URL"):
        Settings.from_env(env)
    Settings.from_env({"REDIS_CLUSTER": "1", "CELERY_BROKER_URL": "redis://elsewhere/0"})
