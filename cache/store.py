"""Exact store: hot answers in Redis and the wake-up of everyone waiting for one.

A finished attempt writes `resp:<key>`, publishes its Outcome on `done:<key>` and
releases its lease in one script (all names of one key, one hash tag: one slot of a
Redis Cluster too), so a waiter that checks after subscribing can never miss both the
value and the message. The release pops the attempt's followers (similar prompts that
waited for it), which get the same answer under their own keys, as `coalesced`, or the
same error.

A copy of an entry under another key (an alias: a semantic hit, a follower's answer)
records the similarity it was made at (cache.entry: Entry.serves), never outlives the
entry's own hot copy, and is listed in `aliases:<entry id>` so that it goes with the entry.
It is written before its key's wake-up, so a waiter finds it the same way. Its names
belong to three ids (the alias, the entry, the list), so it is written name by name, as
is dropping copies, which compares the entry id first: a key answered again since keeps
its answer.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import redis

from cache.entry import Entry, Outcome
from cache.job import COALESCED
from cache.keyspace import Keyspace
from cache.lease import Follower, followers, release_lua
from cache.redisconn import get_many
from cache.repo import Removed
from cache.semantic import SemanticIndex

ERROR_MEMORY_S = 10

# KEYS[1] resp:<key>; KEYS[2] err:<key>; KEYS[3] lock:<key>; KEYS[4] followers:<key>;
# ARGV[1] the done:<key> channel; ARGV[2] the Outcome; ARGV[3] the attempt; ARGV[4] seconds
# to remember a failure, or 0; ARGV[5] the entry to store at KEYS[1], or ""; ARGV[6] its
# TTL s. Stores, wakes, then releases the lease as Lease.release does (its followers
# popped and returned, the lock compare-and-deleted). A failure is also remembered briefly
# (err:<key>), so a waiter that saw this attempt hold the lease, and missed the message,
# reports the error instead of trying again.
_FINISH = """
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[1], ARGV[5], 'EX', ARGV[6])
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
if tonumber(ARGV[4]) > 0 then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[4])
end
""" + release_lua("KEYS[3]", "KEYS[4]", "ARGV[3]")

# KEYS[1] aliases:<entry id>; ARGV[1] an alias's key; ARGV[2] its TTL ms. The set lives as
# long as its longest-lived alias.
_LIST = """
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""

# KEYS[1] resp:<key> of a copy; ARGV[1] the entry's id. Deletes the copy if it still holds
# this entry.
_DROP = """
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)['id'] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class ExactStore:
    def __init__(self, client: redis.Redis, keys: Keyspace) -> None:
        self.client = client
        self.keys = keys
        # Scripts are called one by one: a cluster pipeline does not take them.
        self._finish_script = client.register_script(_FINISH)
        self._list = client.register_script(_LIST)
        self._drop_one = client.register_script(_DROP)

    def get(self, exact_key: str) -> Entry | None:
        raw = self.client.get(self.keys.resp(exact_key))
        return Entry.from_json(raw) if raw else None

    def peek(self, exact_key: str) -> tuple[Entry | None, str | None, Outcome | None]:
        """The entry, the lease holder and the last failure, read atomically."""
        ks = self.keys
        raw, lock, err = self.client.mget(ks.resp(exact_key), ks.lock(exact_key), ks.err(exact_key))
        holder = lock.decode() if isinstance(lock, bytes) else lock
        failure = Outcome.from_json(err) if err else None
        return (Entry.from_json(raw) if raw else None), holder, failure

    def put(self, exact_key: str, entry: Entry, ttl_s: int) -> None:
        if exact_key == entry.key:
            self.client.set(self.keys.resp(exact_key), entry.to_json(), ex=ttl_s)
        else:
            self._alias(exact_key, entry, ttl_s)

    def forget(self, entry_id: str, exact_key: str) -> None:
        """Drop an entry's hot copy and every exact alias that points to it."""
        aliases = self.keys.aliases(entry_id)
        keys = [exact_key, *sorted(self._aliases_of(entry_id) - {exact_key})]
        self._drop(entry_id, keys)
        self.client.delete(aliases)

    def drop_aliases_below(self, entry_ids: list[str], threshold: float) -> int:
        """Drop the aliases of these entries made at a similarity below `threshold` (a
        namespace now requires more: they must not be served as exact hits any longer)."""
        dropped = 0
        for entry_id in entry_ids:
            members = sorted(self._aliases_of(entry_id))
            if not members:
                continue
            raws = get_many(self.client, [self.keys.resp(k) for k in members])
            below = [k for k, raw in zip(members, raws, strict=True)
                     if raw and not Entry.from_json(raw).serves(k, threshold)]  # fmt: skip
            dropped += self._drop(entry_id, below) if below else 0
        return dropped

    def _aliases_of(self, entry_id: str) -> set[str]:
        members: Any = self.client.smembers(self.keys.aliases(entry_id))
        return {m.decode() for m in members}

    def _drop(self, entry_id: str, keys: list[str]) -> int:
        dropped = sum(int(self._drop_one(keys=[self.keys.resp(k)], args=[entry_id])) for k in keys)
        self.client.srem(self.keys.aliases(entry_id), *keys)
        return dropped

    def _alias(
        self,
        exact_key: str,
        entry: Entry,
        ttl_s: int,
        similarity: float | None = None,
        threshold: float | None = None,
    ) -> None:
        """A copy served only at its similarity, listed with its entry, gone with it."""
        copy = replace(entry, similarity=similarity, threshold=threshold)
        ttl_ms = ttl_s * 1000
        left = int(self.client.pttl(self.keys.resp(entry.key)))
        if 0 < left < ttl_ms:
            ttl_ms = left
        self._list(keys=[self.keys.aliases(entry.id)], args=[exact_key, ttl_ms])
        self.client.set(self.keys.resp(exact_key), copy.to_json(), px=ttl_ms)

    def finish(self, exact_key: str, outcome: Outcome, ttl_s: int | None) -> list[Follower]:
        """Store the entry (unless ttl_s is None: no-store), wake waiters, release the
        lease, then answer the followers; returns them."""
        popped = self._finish(exact_key, outcome, ttl_s, outcome.similarity, outcome.threshold)
        # Followers may have followers of their own (C followed B, then B followed A):
        # answer them level by level until nobody is left waiting.
        pending, answered = popped, []
        while pending:
            nested: list[Follower] = []
            for f in pending:
                mine = replace(
                    outcome,
                    attempt=f.attempt,
                    status=COALESCED,  # generated for the prompt it followed
                    similarity=f.similarity,
                    matched_prompt=outcome.entry.prompt if outcome.entry else None,
                )
                nested += self._finish(f.key, mine, ttl_s, f.similarity)
            answered += pending
            pending = nested
        return answered

    def _finish(
        self,
        exact_key: str,
        outcome: Outcome,
        ttl_s: int | None,
        similarity: float | None,
        threshold: float | None = None,
    ) -> list[Follower]:
        """One key's end: its answer stored (or aliased), its wake-up, its release."""
        own = ""
        entry = outcome.entry
        if entry is not None and ttl_s is not None:
            if exact_key == entry.key:
                own = entry.to_json()
            else:
                self._alias(exact_key, entry, ttl_s, similarity, threshold)
        ks = self.keys
        names = [ks.resp(exact_key), ks.err(exact_key), ks.lock(exact_key),
                 ks.followers(exact_key)]  # fmt: skip
        remember_s = ERROR_MEMORY_S if outcome.error_code is not None else 0
        args: list[str | int] = [ks.done(exact_key), outcome.to_json(), outcome.attempt,
                                 remember_s, own, ttl_s or 0]  # fmt: skip
        popped = followers(self._finish_script(keys=names, args=args))
        self.client.zrem(ks.leases, exact_key)
        return popped


def forget_everywhere(removed: list[Removed], store: ExactStore, index: SemanticIndex) -> None:
    """Entries taken out of service in PostgreSQL leave Redis and every semantic index."""
    for r in removed:
        store.forget(r.id, r.key)
        index.remove(r.namespace, r.key)
