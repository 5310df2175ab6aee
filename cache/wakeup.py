"""Wake-ups for waiting requests: one subscriber connection per process.

A naive SUBSCRIBE per waiting request costs one Redis connection each and fails
past the pool's limit. Instead each web process holds one PSUBSCRIBE on
`done:*` and routes every message to the waiters registered for its key. The
subscription is confirmed before `start()` returns, so "register, then check the
key, then wait" cannot lose a wake-up. If the connection drops, messages sent
meanwhile are lost: waiters therefore also poll (see webapp.chat), and the
subscriber reconnects on its own. The waiters of one key share that polling: whoever
finds the outcome hands it to the others through `deliver()`. On a Redis Cluster the one
connection goes to any primary: a PUBLISH reaches every node.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from cache import redisconn
from cache.entry import Outcome
from cache.keyspace import Keyspace

log = logging.getLogger(__name__)


class WakeupHub:
    def __init__(self, client: redis.Redis, keys: Keyspace) -> None:
        self.client = client
        self.keys = keys
        self._waiters: dict[str, set[queue.SimpleQueue[Outcome]]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="wakeup-hub", daemon=True)
            self._thread.start()
        if not self._ready.wait(timeout):
            # A Redis fault like any other (a 503), not a bug of ours (a 500).
            raise redis.TimeoutError("could not subscribe to wake-ups in time")

    @contextmanager
    def watch(self, exact_key: str) -> Iterator[queue.SimpleQueue[Outcome]]:
        """Register for `exact_key` for the duration of the block; read outcomes off the queue."""
        box: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        with self._lock:
            self._waiters.setdefault(exact_key, set()).add(box)
        try:
            yield box
        finally:
            with self._lock:
                boxes = self._waiters.get(exact_key)
                if boxes is not None:
                    boxes.discard(box)
                    if not boxes:
                        del self._waiters[exact_key]

    def waiting(self, exact_key: str) -> int:
        """How many requests of this process wait for `exact_key` (they share the polling)."""
        with self._lock:
            return len(self._waiters.get(exact_key, ()))

    def deliver(self, exact_key: str, outcome: Outcome) -> None:
        """Hand `outcome` to every waiter of `exact_key` in this process, as a wake-up does."""
        with self._lock:
            boxes = list(self._waiters.get(exact_key, ()))
        for box in boxes:
            box.put(outcome)

    def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                self._listen()
            except redis.RedisError as exc:
                log.warning("wake-up subscriber lost its connection (%s); reconnecting", exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _listen(self) -> None:
        pubsub = redisconn.pubsub(self.client)
        try:
            pubsub.psubscribe(self.keys.done_pattern)
            while True:
                message = pubsub.get_message(timeout=5.0)
                if message is None:
                    continue
                if message["type"] == "psubscribe":
                    self._ready.set()
                elif message["type"] == "pmessage":
                    self._deliver(message["channel"], message["data"])
        finally:
            pubsub.close()

    def _deliver(self, channel: bytes, data: bytes) -> None:
        exact_key = self.keys.key_of_done(channel.decode())
        if not self.waiting(exact_key):
            return
        try:
            outcome = Outcome.from_json(data)
        except (ValueError, TypeError) as exc:
            log.error("dropping a malformed wake-up on %s: %s", channel, exc)
            return
        self.deliver(exact_key, outcome)
