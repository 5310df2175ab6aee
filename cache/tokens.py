"""Live token fan-out: an answer's tokens go through the Redis stream `stream:<key>`.

The worker appends each token as the LLM produces it, then an end marker; a request
that follows a similar prompt's generation gets a `follow` marker pointing at the
leader's stream. Every waiter, on any web instance, reads the same stream from its
first entry, so a late joiner gets what was already produced and then follows live.

Readers share one blocking XREAD per process (`TokenHub`): a thousand streaming
requests cost one Redis connection, like the wake-ups.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from cache.keyspace import Keyspace
from cache.redisconn import by_slot, is_cluster

log = logging.getLogger(__name__)

STREAM_TTL_S = 120  # a finished stream lingers for late joiners, then goes
_MAXLEN = 20_000


class TokenWriter:
    def __init__(self, client: redis.Redis, keys: Keyspace) -> None:
        self.client = client
        self.key = keys.stream

    def _add(self, exact_key: str, fields: dict[str, str], ttl_s: int = STREAM_TTL_S) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.xadd(self.key(exact_key), fields, maxlen=_MAXLEN, approximate=True)  # type: ignore[arg-type]
            pipe.expire(self.key(exact_key), ttl_s)
            pipe.execute()

    def token(self, exact_key: str, text: str) -> None:
        self._add(exact_key, {"t": text})

    def reset(self, exact_key: str) -> None:
        """A retry starts over: readers drop what they have streamed so far."""
        self._add(exact_key, {"reset": "1"})

    def end(self, exact_key: str) -> None:
        self._add(exact_key, {"end": "1"})

    def follow(self, exact_key: str, leader_key: str, similarity: float, prompt: str) -> None:
        self._add(
            exact_key,
            {"follow": leader_key, "similarity": f"{similarity:.6f}", "prompt": prompt},
        )


class _Stream:
    def __init__(self) -> None:
        self.last_id = "0-0"
        self.seen: list[dict[str, str]] = []  # replayed to readers that join late
        self.readers: set[queue.SimpleQueue[dict[str, str]]] = set()


class TokenHub:
    """One reader thread per process, delivering stream entries to registered queues."""

    def __init__(self, client: redis.Redis, writer: TokenWriter, block_ms: int = 100) -> None:
        self.client = client  # a connection of its own: XREAD BLOCK holds it
        self.writer = writer
        self.block_ms = block_ms
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def read(self, exact_key: str) -> Iterator[queue.SimpleQueue[dict[str, str]]]:
        """Entries of the key's stream, from its first, as dicts ({"t": token}, ...)."""
        box: queue.SimpleQueue[dict[str, str]] = queue.SimpleQueue()
        name = self.writer.key(exact_key)
        with self._lock:
            stream = self._streams.setdefault(name, _Stream())
            for entry in stream.seen:
                box.put(entry)
            stream.readers.add(box)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="token-hub", daemon=True)
                self._thread.start()
        try:
            yield box
        finally:
            with self._lock:
                stream.readers.discard(box)
                if not stream.readers:
                    self._streams.pop(name, None)

    def _run(self) -> None:
        while True:
            with self._lock:
                wanted = {name: s.last_id for name, s in self._streams.items()}
            if not wanted:
                time.sleep(self.block_ms / 1000)
                continue
            try:
                reply = self._read(wanted)
            except redis.RedisError as exc:
                log.warning("token stream read failed (%s); retrying", exc)
                time.sleep(0.5)
                continue
            for raw_name, entries in reply:
                name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
                self._deliver(name, entries)

    def _read(self, wanted: dict[str, str]) -> list[Any]:
        """New entries of the wanted streams, waiting up to block_ms for the first. On a
        Redis Cluster one XREAD names streams of one slot only: each slot is read without
        waiting, and an empty round sleeps a tenth of block_ms instead."""
        if not is_cluster(self.client):
            reply: Any = self.client.xread(wanted, block=self.block_ms, count=500)  # type: ignore[arg-type]
            return reply or []
        out: list[Any] = []
        for names in by_slot(list(wanted)):
            out += self.client.xread({n: wanted[n] for n in names}, count=500) or []
        if not out:
            time.sleep(self.block_ms / 10_000)
        return out

    def _deliver(self, name: str, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        with self._lock:
            stream = self._streams.get(name)
            if stream is None:
                return
            for entry_id, fields in entries:
                entry = {k.decode(): v.decode() for k, v in fields.items()}
                stream.last_id = entry_id.decode()
                stream.seen.append(entry)
                for box in stream.readers:
                    box.put(entry)
