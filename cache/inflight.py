"""Prompts being generated now, per namespace: the `inflight:<namespace>` stream.

A stream gives every announcement a total order: when two similar prompts both find
no leader and announce themselves, the one with the smaller ID leads and the other,
seeing it among the earlier entries, follows. Entries are withdrawn when their
attempt finishes; ones left by a dead worker are skipped once older than `max_age_s`
(a leader whose lock is gone cannot be followed anyway: see Lease.follow).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from cache.keyspace import Keyspace
from cache.semantic import pack, unpack


@dataclass(frozen=True)
class InFlight:
    id: str
    key: str
    prompt: str
    vector: np.ndarray


class InFlightPrompts:
    def __init__(self, client: redis.Redis, keys: Keyspace, max_age_s: float = 600) -> None:
        self.client = client
        self._stream = keys.inflight
        self.max_age_s = max_age_s

    def announce(self, namespace: str, key: str, prompt: str, vector: np.ndarray) -> str:
        stream = self._stream(namespace)
        oldest = f"{int((time.time() - self.max_age_s) * 1000)}-0"
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(stream, {"key": key, "prompt": prompt, "vec": pack(vector)})
            pipe.xtrim(stream, minid=oldest, approximate=False)
            pipe.expire(stream, int(self.max_age_s))
            entry_id = pipe.execute()[0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def withdraw(self, namespace: str, entry_id: str) -> None:
        self.client.xdel(self._stream(namespace), entry_id)

    def listed(self, namespace: str, before: str | None = None) -> list[InFlight]:
        """Announcements of `namespace` (only those older than `before`, if given)."""
        end = f"({before}" if before else "+"
        since = f"{int((time.time() - self.max_age_s) * 1000)}-0"
        rows: Any = self.client.xrange(self._stream(namespace), since, end)
        return [
            InFlight(
                entry_id.decode(),
                fields[b"key"].decode(),
                fields[b"prompt"].decode(),
                unpack(fields[b"vec"]),
            )
            for entry_id, fields in rows
        ]
