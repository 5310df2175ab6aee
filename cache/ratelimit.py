"""Token-bucket rate limits in Redis, one bucket per API key (or user)."""

from __future__ import annotations

import math
from typing import Any

import redis

# KEYS[1] bucket; ARGV[1] capacity (tokens); ARGV[2] refill per ms. Time is Redis's own,
# so web hosts with skewed clocks share one bucket correctly.
# Returns {allowed 0/1, ms until one token is back}. The bucket is a hash of its
# token count and the time it was last refilled; it expires once full again.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate))
if allowed == 1 then
  return {1, 0}
end
return {0, math.ceil((1 - tokens) / rate)}
"""


class RateLimiter:
    def __init__(self, client: redis.Redis, prefix: str, per_minute: int) -> None:
        self.client = client
        self.prefix = prefix
        self.per_minute = per_minute

    def take(self, ident: str) -> float:
        """Take one token for `ident`: 0 when allowed, else the seconds until one is back."""
        if self.per_minute <= 0:
            return 0.0
        return self.wait_of(self.queue(ident, self.client))

    def queue(self, ident: str, pipe: Any) -> Any:
        """Queue the take on a pipeline (to share a round trip); read it with wait_of().

        EVAL, not EVALSHA: redis-py checks a pipeline's scripts with SCRIPT EXISTS, one more
        round trip per request; Redis caches the compiled script by its digest anyway."""
        key = f"{self.prefix}rl:{ident}"
        return pipe.eval(_TAKE, 1, key, self.per_minute, self.per_minute / 60_000)

    @staticmethod
    def wait_of(reply: Any) -> float:
        allowed, wait_ms = reply
        return 0.0 if allowed else math.ceil(int(wait_ms) / 1000)
