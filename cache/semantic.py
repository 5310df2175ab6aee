"""The semantic index: per-process numpy matrices per namespace, synced through Redis.

Every change (add, remove) goes onto the `semlog` stream; the vectors themselves are
kept by the caller's `source` (PostgreSQL's cache_entries: see cache.repo). A process
builds its matrices from the source, then follows the stream from the ID it read
*before* loading (a change seen twice is harmless: add and remove are idempotent).
Each search first reads the stream's new changes (one XREAD), so an entry stored by
any worker is found by any worker's next lookup. If the stream was trimmed past our
position, we rebuild. If Redis is flushed, what a process holds stays right (the
source still has it) and new changes start a new stream.

The search is exact cosine (vectors are L2-normalised, so a dot product) behind
`search()`; an ANN index could replace `_Namespace` without touching callers.
"""

from __future__ import annotations

import logging
import struct
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from cache.keyspace import Keyspace

log = logging.getLogger(__name__)

DIM = 384
_MAX_LOG = 100_000  # approximate length the change log is trimmed to


class SourceUnavailable(Exception):
    """The index had to load its vectors and the source (PostgreSQL) did not give them."""


@dataclass(frozen=True)
class Candidate:
    key: str
    prompt: str
    similarity: float


class _Namespace:
    """Vectors of one namespace; rows are appended, removals leave a hole."""

    def __init__(self) -> None:
        self.keys: list[str | None] = []
        self.prompts: list[str] = []
        self.rows: dict[str, int] = {}
        self.matrix = np.zeros((0, DIM), dtype=np.float32)
        self._size = 0

    def add(self, key: str, prompt: str, vector: np.ndarray) -> None:
        if key in self.rows:
            self.matrix[self.rows[key]] = vector
            self.prompts[self.rows[key]] = prompt
            return
        if self._size == len(self.matrix):  # grow geometrically: appends stay O(1)
            grown = np.zeros((max(16, 2 * len(self.matrix)), DIM), dtype=np.float32)
            grown[: self._size] = self.matrix[: self._size]
            self.matrix = grown
        self.matrix[self._size] = vector
        self.rows[key] = self._size
        self.keys.append(key)
        self.prompts.append(prompt)
        self._size += 1

    def remove(self, key: str) -> None:
        row = self.rows.pop(key, None)
        if row is not None:
            self.matrix[row] = 0.0  # scores 0: never above a threshold
            self.keys[row] = None

    def search(self, vector: np.ndarray, k: int) -> list[Candidate]:
        if not self.rows:
            return []
        scores = self.matrix[: self._size] @ vector
        top = np.argsort(-scores)[:k] if k < self._size else np.argsort(-scores)
        return [
            Candidate(key, self.prompts[i], float(scores[i]))
            for i in top
            if (key := self.keys[i]) is not None
        ][:k]

    def __len__(self) -> int:
        return len(self.rows)


def pack(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def unpack(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


def _pack_item(prompt: str, vector: np.ndarray) -> bytes:
    text = prompt.encode()
    return struct.pack("<I", len(text)) + text + pack(vector)


def _unpack_item(blob: bytes) -> tuple[str, np.ndarray]:
    (n,) = struct.unpack_from("<I", blob)
    return blob[4 : 4 + n].decode(), unpack(blob[4 + n :])


Source = Callable[[], Iterable[tuple[str, str, str, np.ndarray]]]
"""Returns (namespace, exact key, prompt, vector) of every live entry."""


class SemanticIndex:
    def __init__(self, client: redis.Redis, keys: Keyspace, source: Source) -> None:
        self.client = client
        self.source = source
        self.log_key = keys.semlog
        self.epoch_key = keys.semlog_epoch
        self._epoch: Any = None
        self._spaces: dict[str, _Namespace] = {}
        self._last_id: str | None = None
        # The worker's threads share one index: one of them syncs or searches at a time.
        self._lock = threading.RLock()

    def add(self, namespace: str, key: str, prompt: str, vector: np.ndarray) -> None:
        self.client.xadd(
            self.log_key,
            {"op": "add", "ns": namespace, "key": key, "item": _pack_item(prompt, vector)},
            maxlen=_MAX_LOG,
            approximate=True,
        )

    def remove(self, namespace: str, key: str) -> None:
        self.client.xadd(
            self.log_key,
            {"op": "del", "ns": namespace, "key": key},
            maxlen=_MAX_LOG,
            approximate=True,
        )

    def search(self, namespace: str, vector: np.ndarray, k: int = 3) -> list[Candidate]:
        """The k nearest entries of `namespace`, best first, after catching up with the log.
        An index that must load and cannot (its source is out of reach) has no candidates:
        the prompt is a miss, and the next search tries the load again."""
        with self._lock:
            try:
                self.sync()
            except SourceUnavailable as exc:
                log.warning("semantic index not loaded (%s): no candidates for now", exc)
                return []
            space = self._spaces.get(namespace)
            return space.search(np.asarray(vector, dtype=np.float32), k) if space else []

    def size(self) -> int:
        with self._lock:
            self.sync()
            return sum(len(s) for s in self._spaces.values())

    def sync(self) -> None:
        with self._lock:
            self._sync()

    def _sync(self) -> None:
        if self._last_id is None:
            self.rebuild()
            return
        while True:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.xread({self.log_key: self._last_id}, count=1000)
                pipe.get(self.epoch_key)
                reply, epoch = pipe.execute()
            if epoch != self._epoch:
                self.rebuild()  # Redis lost the log (flushed, restarted): reload
                return
            if not reply:
                return
            entries = reply[0][1]
            if self._trimmed_past():
                self.rebuild()
                return
            for entry_id, fields in entries:
                self._apply(fields)
                self._last_id = entry_id.decode()
            if len(entries) < 1000:
                return

    def rebuild(self) -> None:
        with self._lock:
            self._rebuild()

    def _rebuild(self) -> None:
        """Load from the source; remember the log position read before loading."""
        # The epoch names this life of the log: a flush deletes it, and every process
        # notices on its next sync that it must reload.
        self.client.set(self.epoch_key, uuid.uuid4().hex, nx=True)
        epoch = self.client.get(self.epoch_key)
        last: Any = self.client.xrevrange(self.log_key, count=1)
        start = last[0][0].decode() if last else "0-0"
        spaces: dict[str, _Namespace] = {}
        try:  # streamed: the rows are never all in memory twice
            for namespace, key, prompt, vector in self.source():
                spaces.setdefault(namespace, _Namespace()).add(key, prompt, vector)
        except Exception as exc:  # nothing changed here: the next sync loads again
            raise SourceUnavailable(f"{type(exc).__name__}: {exc}") from exc
        self._epoch, self._spaces, self._last_id = epoch, spaces, start
        self.sync()

    def _trimmed_past(self) -> bool:
        # XREAD returns entries after our position, whether or not the log was trimmed
        # past it: compare our position with the oldest entry the log still has.
        first: Any = self.client.xrange(self.log_key, count=1)
        if not first or self._last_id in (None, "0-0"):
            return False
        return _id_tuple(first[0][0].decode()) > _id_tuple(self._last_id)

    def _apply(self, fields: dict[bytes, bytes]) -> None:
        namespace = fields[b"ns"].decode()
        key = fields[b"key"].decode()
        if fields[b"op"] == b"add":
            prompt, vector = _unpack_item(fields[b"item"])
            self._spaces.setdefault(namespace, _Namespace()).add(key, prompt, vector)
        elif namespace in self._spaces:
            self._spaces[namespace].remove(key)


def _id_tuple(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
