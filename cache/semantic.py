"""The semantic index: per-process vectors per namespace, synced through Redis.

Every change (add, remove) goes onto the `semlog` stream as (op, namespace, key) only; the
prompt and the vector are read from PostgreSQL's cache_entries by key (`fetch`: see
cache.repo) when a process applies the change. (Without a `fetch`, an add carries its
prompt and vector, as it always did: an index with no database behind it.) A process builds
its namespaces from the caller's `source`, or loads a snapshot a process wrote earlier,
then follows the stream from the ID it read *before* loading (a change seen twice is
harmless: add and remove are idempotent). Each search first reads the stream's new changes
(one XREAD), so an entry stored by any worker is found by any worker's next lookup. If the
stream was trimmed past our position, we rebuild. If Redis is flushed, what a process holds
stays right (the source still has it) and new changes start a new stream.

A namespace below `ann_min_entries` entries is searched exactly (cosine: vectors are
L2-normalised, so a dot product over a float32 matrix); from that size on it moves into an
approximate nearest-neighbour index (usearch HNSW over int8 vectors, cosine: see `_QUANT`),
and back to exact below half that size. Removals leave no holes: the exact matrix moves its
last row into a removed one, and the HNSW index reuses the slots of removed entries for the
next adds; `compact()` shrinks an HNSW index whose live entries fell far below its capacity.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pickle
import shutil
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import redis

from cache.keyspace import Keyspace

log = logging.getLogger(__name__)

DIM = 384
_MAX_LOG = 100_000  # approximate length the change log is trimmed to
_BATCH = 1000  # log entries read (and rows fetched from the source) at a time
ANN_MIN_ENTRIES = 10_000  # default: namespaces of this size and more use the HNSW index
ANN_EF = 256  # default: the HNSW search's candidate list (recall against time)
ANN_CONNECTIVITY = 16  # neighbours per node: memory against recall
ANN_EF_ADD = 200  # the candidate list while inserting: build time against graph quality
# int8 steps: a unit MiniLM vector's components stay within +-0.27 (measured on 4,000 real
# questions), so +-0.3 maps onto +-127 (a rare larger one is clipped). usearch's own cast
# maps +-1 onto +-127 and leaves a component ~6 steps: 4x coarser, and top-1 swaps.
_QUANT = 127 / 0.3


def _int8(vectors: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(vectors * _QUANT), -127, 127).astype(np.int8)


class SourceUnavailable(Exception):
    """The index had to load its vectors and the source (PostgreSQL) did not give them."""


@dataclass(frozen=True)
class Candidate:
    key: str
    prompt: str
    similarity: float


class _Space(Protocol):
    def add(self, key: str, prompt: str, vector: np.ndarray) -> None: ...
    def add_many(
        self, keys: Sequence[str], prompts: Sequence[str], vectors: np.ndarray
    ) -> None: ...
    def remove(self, key: str) -> None: ...
    def search(self, vector: np.ndarray, k: int) -> list[Candidate]: ...
    def entries(self) -> tuple[list[str], list[str], np.ndarray]: ...
    def __len__(self) -> int: ...


class _Exact:
    """A float32 matrix searched exhaustively. A removal moves the last row into its place,
    so the rows stay dense: no holes."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.prompts: list[str] = []
        self.rows: dict[str, int] = {}
        self.matrix = np.zeros((0, DIM), dtype=np.float32)

    def add(self, key: str, prompt: str, vector: np.ndarray) -> None:
        row = self.rows.get(key)
        if row is not None:
            self.matrix[row] = vector
            self.prompts[row] = prompt
            return
        size = len(self.keys)
        if size == len(self.matrix):  # grow geometrically: appends stay O(1)
            grown = np.zeros((max(16, 2 * size), DIM), dtype=np.float32)
            grown[:size] = self.matrix[:size]
            self.matrix = grown
        self.matrix[size] = vector
        self.rows[key] = size
        self.keys.append(key)
        self.prompts.append(prompt)

    def add_many(self, keys: Sequence[str], prompts: Sequence[str], vectors: np.ndarray) -> None:
        for key, prompt, vector in zip(keys, prompts, vectors, strict=True):
            self.add(key, prompt, vector)

    def remove(self, key: str) -> None:
        row = self.rows.pop(key, None)
        if row is None:
            return
        last = len(self.keys) - 1
        if row != last:
            self.matrix[row] = self.matrix[last]
            self.keys[row], self.prompts[row] = self.keys[last], self.prompts[last]
            self.rows[self.keys[row]] = row
        self.keys.pop()
        self.prompts.pop()
        if len(self.matrix) > 64 and last < len(self.matrix) // 4:  # give memory back
            self.matrix = self.matrix[: len(self.matrix) // 2].copy()

    def search(self, vector: np.ndarray, k: int) -> list[Candidate]:
        size = len(self.keys)
        if not size:
            return []
        scores = self.matrix[:size] @ vector
        if k < size:
            top = np.argpartition(-scores, k)[:k]
            top = top[np.argsort(-scores[top])]
        else:
            top = np.argsort(-scores)
        return [Candidate(self.keys[i], self.prompts[i], float(scores[i])) for i in top]

    def entries(self) -> tuple[list[str], list[str], np.ndarray]:
        return list(self.keys), list(self.prompts), self.matrix[: len(self.keys)]

    def __len__(self) -> int:
        return len(self.keys)


class _Ann:
    """An HNSW graph (usearch) over int8 vectors; its labels are our slots. A removed
    entry's slot goes on a free list and the next add takes it (usearch reuses the removed
    node's memory the same way), so churn at a steady size grows nothing."""

    def __init__(self, ef: int = ANN_EF, threads: int = 1) -> None:
        from usearch.index import Index  # only processes that build an HNSW index load it

        self.threads = threads
        self.index = Index(
            ndim=DIM,
            metric="cos",
            dtype="i8",
            connectivity=ANN_CONNECTIVITY,
            expansion_add=ANN_EF_ADD,
            expansion_search=ef,
        )
        self.keys: list[str | None] = []
        self.prompts: list[str | None] = []
        self.rows: dict[str, int] = {}
        self.free: list[int] = []

    def _slot(self, key: str) -> int:
        slot = self.free.pop() if self.free else len(self.keys)
        if slot == len(self.keys):
            self.keys.append(key)
            self.prompts.append(None)
        self.keys[slot] = key
        self.rows[key] = slot
        return slot

    def add(self, key: str, prompt: str, vector: np.ndarray) -> None:
        self.add_many([key], [prompt], np.asarray(vector, dtype=np.float32)[None])

    def add_many(self, keys: Sequence[str], prompts: Sequence[str], vectors: np.ndarray) -> None:
        last = {key: i for i, key in enumerate(keys)}  # a key twice in a batch: the last wins
        fresh: list[int] = []
        rows: list[int] = []
        for key, i in last.items():
            prompt = prompts[i]
            slot = self.rows.get(key)
            if slot is not None:  # a new vector for a known key: replace the node
                self.index.remove(slot)
            else:
                slot = self._slot(key)
            self.prompts[slot] = prompt
            fresh.append(slot)
            rows.append(i)
        if fresh:
            labels = np.asarray(fresh, dtype=np.uint64)
            self.index.add(labels, _int8(vectors[rows]), threads=self.threads)

    def remove(self, key: str) -> None:
        slot = self.rows.pop(key, None)
        if slot is None:
            return
        self.index.remove(slot)
        self.keys[slot] = self.prompts[slot] = None
        self.free.append(slot)

    def search(self, vector: np.ndarray, k: int) -> list[Candidate]:
        if not self.rows:
            return []
        found = self.index.search(_int8(vector), k, threads=1)
        out = []
        for slot, distance in zip(found.keys, found.distances, strict=True):
            key, prompt = self.keys[slot], self.prompts[slot]
            if key is not None and prompt is not None:
                out.append(Candidate(key, prompt, 1.0 - float(distance)))
        return out

    def entries(self) -> tuple[list[str], list[str], np.ndarray]:
        slots = [s for s in self.rows.values()]
        if not slots:
            return [], [], np.zeros((0, DIM), dtype=np.float32)
        got: Any = self.index.get(np.asarray(slots, dtype=np.uint64))
        vectors = np.vstack(got).astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.where(norms > 0, norms, 1.0)
        keys = [self.keys[s] or "" for s in slots]
        return keys, [self.prompts[s] or "" for s in slots], vectors

    def holes(self) -> int:
        """Slots the graph holds room for beyond the live entries."""
        return int(self.index.capacity) - len(self.rows)

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


Row = tuple[str, str, str, np.ndarray]
Source = Callable[[], Iterable[Row]]
"""Returns (namespace, exact key, prompt, vector) of every live entry."""
Fetch = Callable[[Sequence[str]], Iterable[Row]]
"""Returns (namespace, exact key, prompt, vector) of those of the given keys that are live."""


class SemanticIndex:
    """`ann_min_entries`: the namespace size from which a namespace is an HNSW index (0:
    always); `ann_ef`: its search's candidate list; `build_threads`: threads that build it.
    `snapshot_dir`: where this process saves its namespaces (every `snapshot_interval_s`,
    by one process of the host at a time) and where a new process loads them from before
    catching up with the log, instead of reading every entry from the source."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keyspace,
        source: Source,
        *,
        fetch: Fetch | None = None,
        ann_min_entries: int = ANN_MIN_ENTRIES,
        ann_ef: int = ANN_EF,
        build_threads: int = 1,
        snapshot_dir: str | Path | None = None,
        snapshot_interval_s: float = 900.0,
    ) -> None:
        self.client = client
        self.source = source
        self.fetch = fetch
        self.log_key = keys.semlog
        self.epoch_key = keys.semlog_epoch
        self.ann_min_entries = ann_min_entries
        self.ann_ef = ann_ef
        self.build_threads = build_threads
        self.snapshot_dir = Path(snapshot_dir) if snapshot_dir else None
        self.snapshot_interval_s = snapshot_interval_s
        self._epoch: Any = None
        self._spaces: dict[str, _Space] = {}
        self._last_id: str | None = None
        self._loaded_from = "none"  # how the last (re)build got its entries: source | snapshot
        # The worker's threads share one index: one of them syncs or searches at a time.
        self._lock = threading.RLock()

    # --- writers: the change log

    def add(self, namespace: str, key: str, prompt: str, vector: np.ndarray) -> None:
        """Publish an entry whose record is already in the source (PostgreSQL)."""
        fields: dict[str, Any] = {"op": "add", "ns": namespace, "key": key}
        if self.fetch is None:  # nothing to read it back from: the change carries it
            fields["item"] = _pack_item(prompt, vector)
        self.client.xadd(self.log_key, fields, maxlen=_MAX_LOG, approximate=True)  # type: ignore[arg-type]

    def remove(self, namespace: str, key: str) -> None:
        self.client.xadd(
            self.log_key,
            {"op": "del", "ns": namespace, "key": key},
            maxlen=_MAX_LOG,
            approximate=True,
        )

    # --- readers

    def search(self, namespace: str, vector: np.ndarray, k: int = 3) -> list[Candidate]:
        """The k nearest entries of `namespace`, best first, after catching up with the log.
        When the source is out of reach (a load, or the prompts and vectors of new entries),
        the search runs on what the index holds (nothing before its first load; a candidate
        gone meanwhile is not served: the caller reads its entry first), and the next search
        tries again."""
        with self._lock:
            try:
                self.sync()
            except SourceUnavailable as exc:
                log.warning("semantic index not caught up (%s): searching what it holds", exc)
            space = self._spaces.get(namespace)
            return space.search(np.asarray(vector, dtype=np.float32), k) if space else []

    def size(self) -> int:
        with self._lock:
            self.sync()
            return sum(len(s) for s in self._spaces.values())

    def stats(self) -> dict[str, Any]:
        """Entries, namespaces, how many of them are HNSW indexes, and free HNSW slots."""
        with self._lock:
            anns = [s for s in self._spaces.values() if isinstance(s, _Ann)]
            return {
                "entries": sum(len(s) for s in self._spaces.values()),
                "namespaces": len(self._spaces),
                "ann_namespaces": len(anns),
                "ann_holes": sum(s.holes() for s in anns),
                "loaded_from": self._loaded_from,
            }

    def sync(self) -> None:
        with self._lock:
            self._sync()
            self._maybe_snapshot()

    def _sync(self) -> None:
        if self._last_id is None:
            self._start()
            return
        while True:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.xread({self.log_key: self._last_id}, count=_BATCH)
                pipe.get(self.epoch_key)
                reply, epoch = pipe.execute()
            if epoch != self._epoch:
                self._rebuild()  # Redis lost the log (flushed, restarted): reload
                return
            if not reply:
                return
            entries = reply[0][1]
            if self._trimmed_past():
                self._rebuild()
                return
            self._apply_all([fields for _, fields in entries])
            self._last_id = entries[-1][0].decode()
            if len(entries) < _BATCH:
                return

    def _start(self) -> None:
        """The first load: a snapshot when there is a usable one, else the source."""
        if self.snapshot_dir is not None and self._load_snapshot():
            self._sync()
            return
        self._rebuild()

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
        previous, self._spaces = self._spaces, {}
        try:  # streamed: the rows are never all in memory twice
            self._load_rows(self.source())
        except Exception as exc:  # nothing changed here: the next sync loads again
            self._spaces = previous
            raise SourceUnavailable(f"{type(exc).__name__}: {exc}") from exc
        self._epoch, self._last_id = epoch, start
        self._loaded_from = "source"
        self._sync()

    def _load_rows(self, rows: Iterable[Row]) -> None:
        """Add rows in batches per namespace (an HNSW index adds a batch on its threads)."""
        pending: dict[str, tuple[list[str], list[str], list[np.ndarray]]] = {}
        for namespace, key, prompt, vector in rows:
            keys, prompts, vectors = pending.setdefault(namespace, ([], [], []))
            keys.append(key)
            prompts.append(prompt)
            vectors.append(vector)
            if len(keys) >= 4096:
                self._add_batch(namespace, *pending.pop(namespace))
        for namespace, batch in pending.items():
            self._add_batch(namespace, *batch)

    def _add_batch(
        self, namespace: str, keys: list[str], prompts: list[str], vectors: list[np.ndarray]
    ) -> None:
        space = self._spaces.get(namespace)
        if space is None:
            space = self._spaces[namespace] = _Exact()
        if isinstance(space, _Exact) and len(space) + len(keys) >= self.ann_min_entries:
            space = self._to_ann(namespace, space)
        space.add_many(keys, prompts, np.asarray(np.vstack(vectors), dtype=np.float32))

    def _to_ann(self, namespace: str, space: _Space) -> _Ann:
        ann = _Ann(self.ann_ef, self.build_threads)
        keys, prompts, vectors = space.entries()
        if keys:
            ann.add_many(keys, prompts, vectors)
        self._spaces[namespace] = ann
        return ann

    def _to_exact(self, namespace: str, space: _Space) -> _Exact:
        exact = _Exact()
        keys, prompts, vectors = space.entries()
        if self.fetch is not None and keys:  # the exact vectors, not their int8 copies
            rows = list(self.fetch(keys))
            keys, prompts = [r[1] for r in rows], [r[2] for r in rows]
            vectors = np.vstack([r[3] for r in rows]) if rows else vectors[:0]
        exact.add_many(keys, prompts, vectors)
        self._spaces[namespace] = exact
        return exact

    def compact(self) -> int:
        """Rebuild the HNSW indexes whose capacity is more than twice their live entries
        (after mass eviction): returns how many were rebuilt."""
        with self._lock:
            done = 0
            for namespace, space in list(self._spaces.items()):
                if isinstance(space, _Ann) and space.holes() > max(len(space), 1024):
                    if len(space) < self.ann_min_entries // 2:
                        self._to_exact(namespace, space)
                    else:
                        self._to_ann(namespace, space)
                    done += 1
            return done

    def _trimmed_past(self) -> bool:
        # XREAD returns entries after our position, whether or not the log was trimmed
        # past it: compare our position with the oldest entry the log still has.
        first: Any = self.client.xrange(self.log_key, count=1)
        if not first or self._last_id in (None, "0-0"):
            return False
        return _id_tuple(first[0][0].decode()) > _id_tuple(self._last_id)

    def _deleted_past(self, position: str) -> bool:
        """Whether the log dropped (trimmed) an entry after `position`: a snapshot taken
        there would miss it. (Redis 7 keeps the largest ID it ever dropped.)"""
        try:
            info: Any = self.client.xinfo_stream(self.log_key)
        except redis.ResponseError:  # no log at all: nothing was dropped from it
            return False
        dropped = info.get("max-deleted-entry-id")
        if dropped is None:
            return False
        dropped = dropped.decode() if isinstance(dropped, bytes) else str(dropped)
        return _id_tuple(dropped) > _id_tuple(position)

    def _apply_all(self, changes: list[dict[bytes, bytes]]) -> None:
        """Apply changes in their order; the adds' prompts and vectors are read from the
        source in one round trip (an add whose entry is no longer live is skipped: its
        removal is in the log too, or it expired and the sweeper's removal follows)."""
        wanted = [f[b"key"].decode() for f in changes if f[b"op"] == b"add" and b"item" not in f]
        fetched: dict[str, Row] = {}
        if wanted and self.fetch is not None:
            try:
                fetched = {row[1]: row for row in self.fetch(sorted(set(wanted)))}
            except Exception as exc:  # nothing applied: the next sync reads these again
                raise SourceUnavailable(f"{type(exc).__name__}: {exc}") from exc
        for fields in changes:
            namespace = fields[b"ns"].decode()
            key = fields[b"key"].decode()
            if fields[b"op"] == b"add":
                if b"item" in fields:
                    prompt, vector = _unpack_item(fields[b"item"])
                elif key in fetched:
                    _, _, prompt, vector = fetched[key]
                else:
                    continue
                self._add_batch(namespace, [key], [prompt], [vector])
            elif namespace in self._spaces:
                space = self._spaces[namespace]
                space.remove(key)
                if isinstance(space, _Ann) and len(space) < self.ann_min_entries // 2:
                    self._to_exact(namespace, space)
                elif not len(space):
                    del self._spaces[namespace]

    # --- snapshots

    _snapshot_checked = -1e9

    def save_snapshot(self, directory: str | Path | None = None) -> Path:
        """Write every namespace and the log position they hold to `directory` (default:
        snapshot_dir): a new `snap-*` folder, then `current.json` naming it (atomic)."""
        with self._lock:
            root = Path(directory or self.snapshot_dir or ".")
            root.mkdir(parents=True, exist_ok=True)
            name = f"snap-{time.time_ns()}-{uuid.uuid4().hex[:6]}"
            folder = root / name
            folder.mkdir()
            spaces = {}
            for i, (namespace, space) in enumerate(self._spaces.items()):
                if isinstance(space, _Ann):
                    space.index.save(str(folder / f"{i}.usearch"))
                    meta = {"keys": space.keys, "prompts": space.prompts, "free": space.free}
                    spaces[namespace] = {"kind": "ann", "file": i}
                else:
                    keys, prompts, matrix = space.entries()
                    np.save(folder / f"{i}.npy", matrix)
                    meta = {"keys": keys, "prompts": prompts}
                    spaces[namespace] = {"kind": "exact", "file": i}
                with open(folder / f"{i}.pickle", "wb") as out:
                    pickle.dump(meta, out, protocol=pickle.HIGHEST_PROTOCOL)
            epoch = self._epoch.decode() if isinstance(self._epoch, bytes) else self._epoch
            manifest = {"epoch": epoch, "last_id": self._last_id, "folder": name,
                        "spaces": spaces}  # fmt: skip
            tmp = root / f".current-{uuid.uuid4().hex}.json"
            tmp.write_text(json.dumps(manifest))
            os.replace(tmp, root / "current.json")
            for old in root.glob("snap-*"):  # keep the previous one for a reader still on it
                if old.name != name and old.stat().st_mtime < time.time() - 60:
                    shutil.rmtree(old, ignore_errors=True)
            return root / "current.json"

    def _maybe_snapshot(self) -> None:
        if self.snapshot_dir is None or self._last_id is None:
            return
        now = time.monotonic()
        if now - self._snapshot_checked < 10:  # a stat() at most every 10 s
            return
        self._snapshot_checked = now
        try:
            age = time.time() - (self.snapshot_dir / "current.json").stat().st_mtime
        except OSError:
            age = float("inf")  # none yet: write the first one now
        if age < self.snapshot_interval_s:
            return
        lock = self.snapshot_dir / ".lock"
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        with open(lock, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another process of this host is writing one
            self.save_snapshot()

    def _load_snapshot(self) -> bool:
        """Load the snapshot if it belongs to this life of the log and the log still holds
        every change since it; False (and nothing loaded) otherwise."""
        assert self.snapshot_dir is not None
        try:
            manifest = json.loads((self.snapshot_dir / "current.json").read_text())
            epoch: Any = self.client.get(self.epoch_key)
            if epoch is None or epoch.decode() != manifest["epoch"]:
                return False
            self._epoch, self._last_id = epoch, manifest["last_id"]
            if self._trimmed_past() or self._deleted_past(manifest["last_id"]):
                self._last_id = None
                return False
            folder = self.snapshot_dir / manifest["folder"]
            spaces: dict[str, _Space] = {}
            for namespace, info in manifest["spaces"].items():
                with open(folder / f"{info['file']}.pickle", "rb") as f:
                    meta = pickle.load(f)
                if info["kind"] == "ann":
                    ann = _Ann(self.ann_ef, self.build_threads)
                    ann.index.load(str(folder / f"{info['file']}.usearch"))
                    ann.index.expansion_search = self.ann_ef  # type: ignore[misc]
                    ann.keys, ann.prompts, ann.free = meta["keys"], meta["prompts"], meta["free"]
                    ann.rows = {k: s for s, k in enumerate(ann.keys) if k is not None}
                    spaces[namespace] = ann
                else:
                    exact = _Exact()
                    exact.matrix = np.load(folder / f"{info['file']}.npy")
                    exact.keys, exact.prompts = meta["keys"], meta["prompts"]
                    exact.rows = {k: i for i, k in enumerate(exact.keys)}
                    spaces[namespace] = exact
        except (OSError, ValueError, KeyError, pickle.UnpicklingError, RuntimeError):
            self._last_id = None
            return False
        self._spaces = spaces
        self._loaded_from = "snapshot"
        return True


def _id_tuple(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
