"""Exact store: hot answers in Redis and the wake-up of everyone waiting for one.

A finished attempt writes `resp:<key>`, publishes its Outcome on `done:<key>` and
releases its lease in one MULTI, so a waiter that checks after subscribing can
never miss both the value and the message. The release pops the attempt's
followers (similar prompts that waited for it), which get the same answer under
their own keys, as `coalesced`, or the same error.
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
        keys = {exact_key, *(k.decode() for k in self.client.smembers(aliases))}  # type: ignore[union-attr]
        self.client.delete(aliases, *(self.keys.resp(k) for k in keys))

    def _publish(self, pipe: Any, exact_key: str, outcome: Outcome) -> None:
        pipe.publish(self.keys.done(exact_key), outcome.to_json())
        if outcome.error_code is not None:
            # Remembered briefly so a waiter that saw this attempt hold the lease, and
            # missed the message, reports the error instead of trying again.
            pipe.set(self.keys.err(exact_key), outcome.to_json(), ex=ERROR_MEMORY_S)

    def _put(self, pipe: Any, exact_key: str, entry: Entry, ttl_s: int) -> None:
        pipe.set(self.keys.resp(exact_key), entry.to_json(), ex=ttl_s)
        if exact_key != entry.key:  # an alias (semantic hit, follower): forget it with its entry
            aliases = self.keys.aliases(entry.id)
            pipe.sadd(aliases, exact_key)
            pipe.expire(aliases, ttl_s)

    def finish(self, exact_key: str, outcome: Outcome, ttl_s: int | None) -> list[Follower]:
        """Store the entry (unless ttl_s is None: no-store), wake waiters, release the
        lease, then answer the followers; returns them."""
        with self.client.pipeline(transaction=True) as pipe:
            if outcome.entry is not None and ttl_s is not None:
                self._put(pipe, exact_key, outcome.entry, ttl_s)
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
                        self._put(pipe, f.key, mine.entry, ttl_s)
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
