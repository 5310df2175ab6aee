"""Single-flight lease: at most one attempt per exact key is queued or running.

The lock value is `<state>:<attempt>`. The web sets `q:<attempt>` (queued) with
SET NX when it dispatches; a worker turns it into `r:<attempt>` (running) when it
starts generating and keeps it alive with a heartbeat. A queued claim may be taken
over by any task for the same key (its lease may lapse while the queue is long),
a running claim only by its own attempt. Nobody else extends or deletes it: all
writes after the first compare the attempt in Lua. When a worker dies the lease
lapses and a waiting request takes it over (see webapp.chat).
"""

from __future__ import annotations

from typing import Any

import redis

# KEYS[1] lock key; ARGV[1] attempt; ARGV[2] state "q" or "r"; ARGV[3] lease ms.
# Refuses when another attempt is running, or when asked to queue an attempt
# that already runs (a redelivered `answer` must not demote its own `generate`).
_CLAIM = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 2) == 'r:' and (ARGV[2] == 'q' or v ~= 'r:' .. ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2] .. ':' .. ARGV[1], 'PX', ARGV[3])
return 1
"""

# KEYS[1] lock key; ARGV[1] attempt; ARGV[2] lease ms. Extends only a running claim.
_EXTEND = """
if redis.call('GET', KEYS[1]) == 'r:' .. ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS[1] lock key; ARGV[1] attempt. Compare-and-delete, whatever the state.
_RELEASE = """
local v = redis.call('GET', KEYS[1])
if v == 'q:' .. ARGV[1] or v == 'r:' .. ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    def __init__(self, client: redis.Redis, prefix: str, lease_ms: int) -> None:
        if lease_ms <= 0:
            raise ValueError("lease_ms must be positive")
        self.client = client
        self.prefix = prefix
        self.lease_ms = lease_ms
        self._claim = client.register_script(_CLAIM)
        self._extend = client.register_script(_EXTEND)
        self._release = client.register_script(_RELEASE)

    def key(self, exact_key: str) -> str:
        return f"{self.prefix}lock:{exact_key}"

    def acquire(self, exact_key: str, attempt: str) -> bool:
        """Web side: become the one request that dispatches an attempt."""
        return bool(self.client.set(self.key(exact_key), f"q:{attempt}", nx=True, px=self.lease_ms))

    def claim(self, exact_key: str, attempt: str, state: str) -> bool:
        """Worker side: mark the attempt queued ("q") or running ("r") with a fresh lease."""
        if state not in ("q", "r"):
            raise ValueError("state must be 'q' or 'r'")
        return bool(self._claim(keys=[self.key(exact_key)], args=[attempt, state, self.lease_ms]))

    def extend(self, exact_key: str, attempt: str) -> bool:
        return bool(self._extend(keys=[self.key(exact_key)], args=[attempt, self.lease_ms]))

    def release(self, exact_key: str, attempt: str, client: Any = None) -> None:
        """Compare-and-delete; pass a pipeline as `client` to release with other writes."""
        self._release(keys=[self.key(exact_key)], args=[attempt], client=client or self.client)
