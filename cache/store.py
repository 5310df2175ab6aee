"""Exact store: hot answers in Redis and the wake-up of everyone waiting for one.

A finished attempt writes `resp:<key>`, publishes its Outcome on `done:<key>` and
releases its lease in one MULTI, so a waiter that checks after subscribing can
never miss both the value and the message.
"""

from __future__ import annotations

import redis

from cache.entry import Entry, Outcome
from cache.lease import Lease


class ExactStore:
    def __init__(self, client: redis.Redis, prefix: str, lease: Lease) -> None:
        self.client = client
        self.prefix = prefix
        self.lease = lease

    def resp_key(self, exact_key: str) -> str:
        return f"{self.prefix}resp:{exact_key}"

    def channel(self, exact_key: str) -> str:
        return f"{self.prefix}done:{exact_key}"

    @property
    def channel_pattern(self) -> str:
        return f"{self.prefix}done:*"

    def get(self, exact_key: str) -> Entry | None:
        raw = self.client.get(self.resp_key(exact_key))
        return Entry.from_json(raw) if raw else None

    def peek(self, exact_key: str) -> tuple[Entry | None, str | None]:
        """The entry and the lease holder, read atomically in one round trip."""
        raw, lock = self.client.mget(self.resp_key(exact_key), self.lease.key(exact_key))
        holder = lock.decode() if isinstance(lock, bytes) else lock
        return (Entry.from_json(raw) if raw else None), holder

    def finish(self, exact_key: str, outcome: Outcome, ttl_s: int | None) -> None:
        """Store the entry (unless ttl_s is None: no-store), wake waiters, release the lease."""
        with self.client.pipeline(transaction=True) as pipe:
            if outcome.entry is not None and ttl_s is not None:
                pipe.set(self.resp_key(exact_key), outcome.entry.to_json(), ex=ttl_s)
            pipe.publish(self.channel(exact_key), outcome.to_json())
            self.lease.release(exact_key, outcome.attempt, client=pipe)
            pipe.execute()
