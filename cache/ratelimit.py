"""Token-bucket rate limits in Redis, one bucket per API key (or user).

A full Redis (maxmemory under `noeviction`) refuses the bucket's write. When the same
command also reads a key (an exact hit's admission: `take_and_get` with a key), the read
is still served and the limit fails open for that one request, logged and counted
(`on_refused_write`): refusing cached answers because a counter cannot be written would
turn a full Redis into an outage of reads too. A limit that guards nothing but itself
(`take`: sign-in throttles, feedback, embeddings) fails closed, with Redis's
OutOfMemoryError, as every other refused write does.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import redis

from cache.keyspace import Keyspace
from cache.redisconn import is_cluster

log = logging.getLogger(__name__)

# KEYS[1] bucket; KEYS[2] (optional) a key to read in the same call; ARGV[1] capacity
# (tokens); ARGV[2] refill per ms; ARGV[3] (optional) the tokens to take, else 1. Time is
# Redis's own, so web hosts with skewed clocks share one bucket correctly. Returns
# {allowed 0/1, ms until that many tokens are back, KEYS[2]'s value, 1 if Redis refused
# the bucket's write for lack of memory (OOM) else 0}: an exact hit's rate limit and lookup
# are one command. The bucket is a hash of its token count and the time it was last
# refilled; it expires once full again. The write is a pcall so that an OOM refusal leaves
# the read standing; any other error is raised as it was.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3]) or 1
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
local refused = 0
local wrote = redis.pcall('HSET', KEYS[1], 'tokens', tokens, 'at', now)
if type(wrote) == 'table' and wrote.err then
  if string.sub(wrote.err, 1, 3) ~= 'OOM' then
    return redis.error_reply(wrote.err)
  end
  refused = 1
else
  redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate))
end
local value = false
if KEYS[2] then
  value = redis.call('GET', KEYS[2])
end
if allowed == 1 then
  return {1, 0, value, refused}
end
return {0, math.ceil((cost - tokens) / rate), value, refused}
"""
_LOG_EVERY_S = 10.0  # a full Redis refuses every bucket write: one warning per interval


class RateLimiter:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keyspace,
        per_minute: int,
        on_refused_write: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.per_minute = per_minute
        # Called once per request admitted although Redis refused its bucket's write.
        self.on_refused_write = on_refused_write
        self.refused_writes = 0  # in this process, since it started
        self._logged_at = -math.inf
        self._take = client.register_script(_TAKE)

    def take(self, ident: str, cost: int = 1) -> float:
        """Take `cost` tokens for `ident` (at most a full bucket: the limit a minute): 0 when
        allowed, else the seconds until they are back. A full Redis raises OutOfMemoryError."""
        if self.per_minute <= 0:
            return 0.0
        return self.take_and_get(ident, None, cost)[0]

    def take_and_get(self, ident: str, key: str | None, cost: int = 1) -> tuple[float, Any]:
        """Take `cost` tokens and read `key` (if given) in the same command: (seconds to
        wait or 0, the key's value). Without a limit, just the read. With a key, a bucket
        write refused by a full Redis does not stop the read (the module's docstring)."""
        if self.per_minute <= 0:
            return 0.0, self.client.get(key) if key is not None else None
        # On a Redis Cluster the bucket and the answer are in different slots: two commands.
        together = key is not None and not is_cluster(self.client)
        keys = [self.keys.rl(ident)] + ([key] if together and key is not None else [])
        args = [self.per_minute, self.per_minute / 60_000, min(cost, self.per_minute)]
        reply: Any = self._take(keys=keys, args=args)
        allowed, wait_ms, value = reply[0], reply[1], reply[2]
        if len(reply) > 3 and reply[3]:
            if key is None:
                raise redis.OutOfMemoryError(
                    "OOM command not allowed when used memory > 'maxmemory' (rate limit)"
                )
            self._refused_write()
        if key is not None and not together:
            value = self.client.get(key)
        return (0.0 if allowed else math.ceil(int(wait_ms) / 1000)), value

    def _refused_write(self) -> None:
        self.refused_writes += 1
        if self.on_refused_write is not None:
            self.on_refused_write()
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_S:
            self._logged_at = now
            log.warning(
                "Redis is full: rate-limit buckets are not written, reads are served "
                "(%d refused writes in this process so far)",
                self.refused_writes,
            )
