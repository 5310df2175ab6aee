"""Exact store: hot answers in Redis and the wake-up of everyone waiting for one.

A finished attempt writes `resp:<key>`, publishes its Outcome on `done:<key>` and
releases its lease in one MULTI, so a waiter that checks after subscribing can
never miss both the value and the message. The release pops the attempt's
followers (similar prompts that waited for it), which get the same answer under
their own keys, as `coalesced`, or the same error.

A copy of an entry under another key (an alias: a semantic hit, a follower's answer)
records the similarity it was made at (cache.entry: Entry.serves), never outlives the
entry's own hot copy, and is listed in `aliases:<entry id>` so that it goes with the entry.
Dropping copies compares the entry id first: a key answered again since keeps its answer.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import redis

from cache.entry import Entry, Outcome
from cache.job import COALESCED
from cache.keyspace import Keyspace
from cache.lease import Follower, Lease, followers
from cache.repo import Removed
from cache.semantic import SemanticIndex

ERROR_MEMORY_S = 10

# KEYS[1] the alias resp:<key>; KEYS[2] the entry's own resp:<entry key>; KEYS[3] its
# aliases:<entry id>; ARGV[1] the alias's value; ARGV[2] TTL ms asked; ARGV[3] <key>.
# The alias lives no longer than the entry's own hot copy, and the set as long as its
# longest-lived alias.
_ALIAS = """
local ttl = tonumber(ARGV[2])
local left = redis.call('PTTL', KEYS[2])
if left > 0 and left < ttl then
  ttl = left
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('SADD', KEYS[3], ARGV[3])
if redis.call('PTTL', KEYS[3]) < ttl then
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return ttl
"""

# KEYS[1] aliases:<entry id>; KEYS[2..n] resp:<k> of copies to drop; ARGV[1] the entry's
# id; ARGV[2..n] the keys k, in the same order. Deletes each copy that still holds this
# entry, and takes k out of the set either way.
_DROP = """
local dropped = 0
for i = 2, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v and cjson.decode(v)['id'] == ARGV[1] then
    redis.call('DEL', KEYS[i])
    dropped = dropped + 1
  end
  redis.call('SREM', KEYS[1], ARGV[i])
end
return dropped
"""


class ExactStore:
    def __init__(self, client: redis.Redis, keys: Keyspace, lease: Lease) -> None:
        self.client = client
        self.keys = keys
        self.lease = lease

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
        with self.client.pipeline(transaction=True) as pipe:
            self._put(pipe, exact_key, entry, ttl_s)
            pipe.execute()

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
            raws = self.client.mget([self.keys.resp(k) for k in members])
            below = [k for k, raw in zip(members, raws, strict=True)
                     if raw and not Entry.from_json(raw).serves(k, threshold)]  # fmt: skip
            dropped += self._drop(entry_id, below) if below else 0
        return dropped

    def _aliases_of(self, entry_id: str) -> set[str]:
        members: Any = self.client.smembers(self.keys.aliases(entry_id))
        return {m.decode() for m in members}

    def _drop(self, entry_id: str, keys: list[str]) -> int:
        names = [self.keys.aliases(entry_id), *(self.keys.resp(k) for k in keys)]
        return int(self.client.eval(_DROP, len(names), *names, entry_id, *keys))

    def _publish(self, pipe: Any, exact_key: str, outcome: Outcome) -> None:
        pipe.publish(self.keys.done(exact_key), outcome.to_json())
        if outcome.error_code is not None:
            # Remembered briefly so a waiter that saw this attempt hold the lease, and
            # missed the message, reports the error instead of trying again.
            pipe.set(self.keys.err(exact_key), outcome.to_json(), ex=ERROR_MEMORY_S)

    def _put(
        self,
        pipe: Any,
        exact_key: str,
        entry: Entry,
        ttl_s: int,
        similarity: float | None = None,
        threshold: float | None = None,
    ) -> None:
        if exact_key == entry.key:
            pipe.set(self.keys.resp(exact_key), entry.to_json(), ex=ttl_s)
            return
        # An alias (semantic hit, follower): served only at its similarity, gone with its entry.
        copy = replace(entry, similarity=similarity, threshold=threshold)
        names = [self.keys.resp(exact_key), self.keys.resp(entry.key), self.keys.aliases(entry.id)]
        pipe.eval(_ALIAS, 3, *names, copy.to_json(), ttl_s * 1000, exact_key)

    def finish(self, exact_key: str, outcome: Outcome, ttl_s: int | None) -> list[Follower]:
        """Store the entry (unless ttl_s is None: no-store), wake waiters, release the
        lease, then answer the followers; returns them."""
        with self.client.pipeline(transaction=True) as pipe:
            if outcome.entry is not None and ttl_s is not None:
                self._put(pipe, exact_key, outcome.entry, ttl_s, outcome.similarity,
                          outcome.threshold)  # fmt: skip
            self._publish(pipe, exact_key, outcome)
            released = len(pipe)  # the position of the release's result
            self.lease.release(exact_key, outcome.attempt, client=pipe)
            popped = followers(pipe.execute()[released])
        # Followers may have followers of their own (C followed B, then B followed A):
        # answer them level by level until nobody is left waiting.
        pending, answered = popped, []
        while pending:
            releases = []  # positions of the release results in the pipeline
            with self.client.pipeline(transaction=True) as pipe:
                for f in pending:
                    mine = replace(
                        outcome,
                        attempt=f.attempt,
                        status=COALESCED,  # generated for the prompt it followed
                        similarity=f.similarity,
                        matched_prompt=outcome.entry.prompt if outcome.entry else None,
                    )
                    if mine.entry is not None and ttl_s is not None:
                        self._put(pipe, f.key, mine.entry, ttl_s, f.similarity)
                    self._publish(pipe, f.key, mine)
                    releases.append(len(pipe))
                    self.lease.release(f.key, f.attempt, client=pipe)
                results = pipe.execute()
            answered += pending
            pending = [g for i in releases for g in followers(results[i])]
        return answered


def forget_everywhere(removed: list[Removed], store: ExactStore, index: SemanticIndex) -> None:
    """Entries taken out of service in PostgreSQL leave Redis and every semantic index."""
    for r in removed:
        store.forget(r.id, r.key)
        index.remove(r.namespace, r.key)
