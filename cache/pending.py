"""Answers PostgreSQL could not take yet: the `pendingputs` list in Redis.

The llm worker records an answer in PostgreSQL before it indexes it and wakes its waiters.
When PostgreSQL is out of reach the answer still goes out (and its hot copy into Redis),
and the record waits here; every worker's sweeper thread writes what waits, then adds it
to the semantic index (not before: a searcher that finds an entry in the index and not in
Redis reads PostgreSQL, and would drop an entry it cannot find there). A put is
idempotent (`cache_entries.id`), so two workers writing the same one is harmless; an item
leaves the list only once written (or found obsolete: expired, or replaced by a newer
answer of its key). The list keeps its newest `MAX_PENDING` items.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from cache.entry import Entry
from cache.keyspace import Keyspace
from cache.repo import CacheRepo
from cache.semantic import SemanticIndex, pack, unpack

log = logging.getLogger(__name__)

MAX_PENDING = 10_000


@dataclass(frozen=True)
class PendingPut:
    entry: Entry
    ttl_s: int
    vector: np.ndarray | None
    owner_id: int | None
    private: bool

    def to_json(self) -> str:
        vector = base64.b64encode(pack(self.vector)).decode() if self.vector is not None else None
        return json.dumps({
            "entry": self.entry.to_dict(), "ttl_s": self.ttl_s, "vector": vector,
            "owner_id": self.owner_id, "private": self.private,
        })  # fmt: skip

    @classmethod
    def from_json(cls, raw: str | bytes) -> PendingPut:
        data: dict[str, Any] = json.loads(raw)
        vector = data.get("vector")
        return cls(
            entry=Entry.from_dict(data["entry"]),
            ttl_s=int(data["ttl_s"]),
            vector=unpack(base64.b64decode(vector)) if vector else None,
            owner_id=data.get("owner_id"),
            private=bool(data.get("private")),
        )


class PendingPuts:
    def __init__(self, client: redis.Redis, keys: Keyspace) -> None:
        self.client = client
        self.key = keys.pendingputs

    def push(self, put: PendingPut) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.lpush(self.key, put.to_json())
            pipe.ltrim(self.key, 0, MAX_PENDING - 1)
            pipe.execute()

    def __len__(self) -> int:
        return int(self.client.llen(self.key))

    def retry(self, repo: CacheRepo, index: SemanticIndex, limit: int = 100) -> int:
        """Write up to `limit` waiting puts, oldest first, and index them; returns how many
        were written. A database error stops the round (the next one tries again)."""
        raws: Any = self.client.lrange(self.key, -limit, -1)
        written = 0
        for raw in reversed(raws):
            put = PendingPut.from_json(raw)
            entry = put.entry
            if entry.created + put.ttl_s > time.time() and not _replaced(repo, entry):
                repo.put(entry, put.ttl_s, put.vector, put.owner_id, put.private)
                if put.vector is not None:
                    index.add(entry.namespace, entry.key, entry.prompt, put.vector)
                written += 1
                log.info("recorded the answer of %s that PostgreSQL could not take", entry.key[:12])
            self.client.lrem(self.key, 1, raw)
        return written


def _replaced(repo: CacheRepo, entry: Entry) -> bool:
    """A newer answer of the same key is recorded: writing ours would replace it."""
    found = repo.live(entry.key)
    return found is not None and found[0].id != entry.id and found[0].created >= entry.created
