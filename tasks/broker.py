"""A guard on kombu's Redis transport: a lost broker must cost a reconnect, never the worker.

When the broker's connection drops while a task is unacknowledged (our tasks are
`acks_late`), Celery 5.7 first collects the connection (kombu sets its transport's
`client` to None) and then closes it; closing the channel restores the unacknowledged
message, which builds a Redis pool from `client` and fails with AttributeError. Celery
ignores only connection and channel errors there, so the AttributeError is an
"Unrecoverable error": the worker stops consuming for good while its process lives on.
A Redis restart then bricks the service until the workers are restarted by hand
(tests/test_faults.py: test_redis_restarted_empty_costs_no_answer).

The guard turns that case into what it is, a connection error: Celery ignores it and
reconnects. The message is not lost: kombu keeps it in its `unacked` hash, which any
worker restores after the visibility timeout (and a waiter takes the lease over long
before that), and a Redis that lost its data lost the message with everything else.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

_original = kombu_redis.Channel._connparams


def _connparams(self: Any, asynchronous: bool = False) -> Any:
    if self.connection is None or self.connection.client is None:
        raise redis.ConnectionError("the broker connection was closed")
    return _original(self, asynchronous)


def install() -> None:
    """Idempotent; every subclass (Sentinel) goes through the same method."""
    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]
