"""Token-bucket rate limits in Redis, one bucket per API key (or user)."""

from __future__ import annotations

import math
from typing import Any

import redis

from cache.keyspace import Keyspace
from cache.redisconn import is_cluster

# KEYS[1] bucket; KEYS[2] (optional) a key to read in the same call; ARGV[1] capacity
# (tokens); ARGV[2] refill per ms; ARGV[3] (optional) the tokens to take, else 1. Time is
# Redis's own, so web hosts with skewed clocks share one bucket correctly. Returns
# {allowed 0/1, ms until that many tokens are back, KEYS[2]'s
# value}: an exact hit's rate limit and lookup are one command. The bucket is a hash of
# its token count and the time it was last refilled; it expires once full again.
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
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate))
local value = false
if KEYS[2] then
  value = redis.call('GET', KEYS[2])
end
if allowed == 1 then
  return {1, 0, value}
end
return {0, math.ceil((cost - tokens) / rate), value}
"""


class RateLimiter:
    def __init__(self, client: redis.Redis, keys: Keyspace, per_minute: int) -> None:
        self.client = client
        self.keys = keys
        self.per_minute = per_minute
        self._take = client.register_script(_TAKE)

    def take(self, ident: str, cost: int = 1) -> float:
        """Take `cost` tokens for `ident` (at most a full bucket: the limit a minute): 0 when
        allowed, else the seconds until they are back."""
        if self.per_minute <= 0:
            return 0.0
        return self.take_and_get(ident, None, cost)[0]

    def take_and_get(self, ident: str, key: str | None, cost: int = 1) -> tuple[float, Any]:
        """Take `cost` tokens and read `key` (if given) in the same command: (seconds to
        wait or 0, the key's value). Without a limit, just the read."""
        if self.per_minute <= 0:
            return 0.0, self.client.get(key) if key is not None else None
        # On a Redis Cluster the bucket and the answer are in different slots: two commands.
        together = key is not None and not is_cluster(self.client)
        keys = [self.keys.rl(ident)] + ([key] if together and key is not None else [])
        args = [self.per_minute, self.per_minute / 60_000, min(cost, self.per_minute)]
        reply: Any = self._take(keys=keys, args=args)
        allowed, wait_ms = reply[0], reply[1]
        value = reply[2] if len(reply) > 2 else None
        if key is not None and not together:
            value = self.client.get(key)
        return (0.0 if allowed else math.ceil(int(wait_ms) / 1000)), value
