"""Single-flight lease: at most one attempt per exact key is queued or running.

The lock value is `<state>:<attempt>`. The web sets `q:<attempt>` (queued) with
SET NX when it dispatches; a worker turns it into `r:<attempt>` (running) when it
starts generating and keeps it alive with a heartbeat. A queued claim may be taken
over by any task for the same key (its lease may lapse while the queue is long),
a running claim only by its own attempt. Nobody else extends or deletes it: all
writes after the first compare the attempt in Lua. When a worker dies the lease
lapses and a waiting request takes it over (see webapp.chat).

Followers (semantic coalescing): a request whose prompt is close to one being
generated joins the leader's `followers:<key>` set and marks its own lock running,
in one script that first checks the leader's lock still exists. The leader's
release pops the set and deletes its lock in one script too, so a follower either
joined before the release (and is popped and answered) or sees no lock and does not
follow: "I follow you" and "I just finished" cannot cross. The leader's heartbeat
keeps its followers' locks alive; if the leader dies, they lapse with it.
Scripts touch follower locks named inside the set: single-node Redis, not Cluster.

The `leases` sorted set counts attempts in flight for /metrics without scanning the
keyspace: each acquire, claim and heartbeat puts the key there with its lease's expiry as
the score, each release takes it out, and a reader drops what expired (an attempt whose
worker died) before counting. Followers are not in it: their answer is their leader's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from cache.keyspace import Keyspace

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

# KEYS[1] lock key; KEYS[2] its followers set; ARGV[1] attempt; ARGV[2] lease ms;
# ARGV[3], ARGV[4] the text around the key in a lock's name (Keyspace.lock_parts).
# Extends a running claim and the locks of its followers (members are
# "<key> <attempt> <similarity>").
_EXTEND = """
if redis.call('GET', KEYS[1]) ~= 'r:' .. ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
for _, member in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key, attempt = string.match(member, '^(%S+) (%S+)')
  local lock = ARGV[3] .. key .. ARGV[4]
  if redis.call('GET', lock) == 'r:' .. attempt then
    redis.call('PEXPIRE', lock, ARGV[2])
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[2] * 10)
return 1
"""

# KEYS[1] lock key; KEYS[2] its followers set; ARGV[1] attempt. Pops the followers and
# compare-and-deletes the lock, whatever its state; returns the followers.
_RELEASE = """
local followers = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[2])
local v = redis.call('GET', KEYS[1])
if v == 'q:' .. ARGV[1] or v == 'r:' .. ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return followers
"""

# KEYS[1] leader's lock; KEYS[2] leader's followers set; KEYS[3] follower's lock;
# ARGV[1] member "<key> <attempt> <similarity>"; ARGV[2] follower attempt; ARGV[3] lease ms.
# Joins only while the leader's lock exists, and marks the follower's key running so
# nobody else generates it meanwhile.
_FOLLOW = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local v = redis.call('GET', KEYS[3])
if v and string.sub(v, 1, 2) == 'r:' and v ~= 'r:' .. ARGV[2] then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3] * 10)
redis.call('SET', KEYS[3], 'r:' .. ARGV[2], 'PX', ARGV[3])
return 1
"""


class Lease:
    def __init__(self, client: redis.Redis, keys: Keyspace, lease_ms: int) -> None:
        if lease_ms <= 0:
            raise ValueError("lease_ms must be positive")
        self.client = client
        self.keys = keys
        self.lease_ms = lease_ms
        self._claim = client.register_script(_CLAIM)
        self._extend = client.register_script(_EXTEND)
        self._release = client.register_script(_RELEASE)
        self._follow = client.register_script(_FOLLOW)

    def acquire(self, exact_key: str, attempt: str) -> bool:
        """Web side: become the one request that dispatches an attempt."""
        lock = self.keys.lock(exact_key)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(lock, f"q:{attempt}", nx=True, px=self.lease_ms)
            # Also when SET NX fails: then another attempt holds the key, in flight too.
            pipe.zadd(self.keys.leases, {exact_key: self._expiry()})
            return bool(pipe.execute()[0])

    def claim(self, exact_key: str, attempt: str, state: str) -> bool:
        """Worker side: mark the attempt queued ("q") or running ("r") with a fresh lease."""
        if state not in ("q", "r"):
            raise ValueError("state must be 'q' or 'r'")
        lock = self.keys.lock(exact_key)
        claimed = bool(self._claim(keys=[lock], args=[attempt, state, self.lease_ms]))
        if claimed:
            self.client.zadd(self.keys.leases, {exact_key: self._expiry()})
        return claimed

    def extend(self, exact_key: str, attempt: str) -> bool:
        """Heartbeat of a running attempt; also keeps its followers' leases alive."""
        keys = [self.keys.lock(exact_key), self.keys.followers(exact_key)]
        extended = bool(
            self._extend(keys=keys, args=[attempt, self.lease_ms, *self.keys.lock_parts])
        )
        if extended:
            self.client.zadd(self.keys.leases, {exact_key: self._expiry()})
        return extended

    def release(self, exact_key: str, attempt: str, client: Any = None) -> Any:
        """Compare-and-delete; returns the popped followers as `Follower`s (or, with a
        pipeline as `client`, queues the call, first of the two it queues: decode its
        result with `followers()`)."""
        keys = [self.keys.lock(exact_key), self.keys.followers(exact_key)]
        if client is not None:
            # EVAL in a pipeline: with a registered script redis-py would first send
            # SCRIPT EXISTS, one more round trip; Redis caches the compiled script anyway.
            queued = client.eval(_RELEASE, 2, *keys, attempt)
            client.zrem(self.keys.leases, exact_key)
            return queued
        popped = followers(self._release(keys=keys, args=[attempt]))
        self.client.zrem(self.keys.leases, exact_key)
        return popped

    def _expiry(self) -> float:
        # This host's clock: a gauge may be off by the clock skew between hosts, no more.
        return time.time() * 1000 + self.lease_ms

    def follow(self, leader_key: str, me: Follower) -> bool:
        """Join the attempt generating `leader_key`; False if it has already finished."""
        ks = self.keys
        keys = [ks.lock(leader_key), ks.followers(leader_key), ks.lock(me.key)]
        return bool(self._follow(keys=keys, args=[me.member(), me.attempt, self.lease_ms]))


@dataclass(frozen=True)
class Follower:
    key: str
    attempt: str
    similarity: float

    def member(self) -> str:
        return f"{self.key} {self.attempt} {self.similarity:.6f}"


def followers(members: list[bytes]) -> list[Follower]:
    out = []
    for member in members:
        key, attempt, similarity = member.decode().split(" ")
        out.append(Follower(key, attempt, float(similarity)))
    return out


def in_flight(client: redis.Redis, keys: Keyspace) -> int:
    """Keys with an attempt in flight now (queued or running); drops lapsed ones first."""
    with client.pipeline(transaction=False) as pipe:
        pipe.zremrangebyscore(keys.leases, "-inf", time.time() * 1000)
        pipe.zcard(keys.leases)
        return int(pipe.execute()[1])
