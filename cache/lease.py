"""Single-flight lease: at most one attempt per exact key is queued or running.

The lock value is `<state>:<attempt>`. The web sets `q:<attempt>` (queued) with
SET NX when it dispatches; a worker turns it into `r:<attempt>` (running) when it
starts generating and keeps it alive with a heartbeat. A queued claim may be taken
over by any task for the same key (its lease may lapse while the queue is long),
a running claim only by its own attempt. Nobody else extends or deletes it: all
writes after the first compare the attempt in Lua. When a worker dies the lease
lapses and a waiting request takes it over (see webapp.chat).

Followers (semantic coalescing): a request whose prompt is close to one being
generated marks its own lock running (so nobody else generates its key meanwhile), then
joins the leader's `followers:<key>` set in a script that first checks the leader's lock
still exists. The leader's release pops the set and deletes its lock in one script too,
so a follower either joined before the release (and is popped and answered) or sees no
lock, does not follow, and puts its own lock back to queued: "I follow you" and "I just
finished" cannot cross. The leader's heartbeat keeps its followers' locks alive; if the
leader dies, they lapse with it. Each script touches the names of one key only (one hash
tag), so the same steps run on a Redis Cluster, where a follower's lock and its leader's
may live on different nodes.

The `leases` sorted set counts attempts in flight for /metrics without scanning the
keyspace: each acquire, claim and heartbeat puts the key there with its lease's expiry as
the score, each release takes it out, and a reader drops what expired (an attempt whose
worker died) before counting. Followers are not in it: their answer is their leader's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

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

# KEYS[1] lock key; KEYS[2] its followers set; ARGV[1] attempt; ARGV[2] lease ms.
# Extends a running claim and its followers set; returns the followers (members are
# "<key> <attempt> <similarity>"), or false when the claim is not ours any more.
_EXTEND = """
if redis.call('GET', KEYS[1]) ~= 'r:' .. ARGV[1] then
  return false
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2] * 10)
return redis.call('SMEMBERS', KEYS[2])
"""

# KEYS[1] a lock; ARGV[1] "<state>:<attempt>" it must hold; ARGV[2] the new value, or ""
# to keep it; ARGV[3] lease ms. Compare, then set or extend.
_SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""


def release_lua(lock: str, followers: str, attempt: str) -> str:
    """Lua that pops the followers and compare-and-deletes the lock, whatever its state,
    and returns the followers; the arguments name where the script finds each (KEYS[i],
    ARGV[i]). The end of cache.store's _FINISH too."""
    return f"""
local followers = redis.call('SMEMBERS', {followers})
redis.call('DEL', {followers})
local v = redis.call('GET', {lock})
if v == 'q:' .. {attempt} or v == 'r:' .. {attempt} then
  redis.call('DEL', {lock})
end
return followers
"""


# KEYS[1] lock key; KEYS[2] its followers set; ARGV[1] attempt.
_RELEASE = release_lua("KEYS[1]", "KEYS[2]", "ARGV[1]")

# KEYS[1] leader's lock; KEYS[2] leader's followers set; ARGV[1] member "<key> <attempt>
# <similarity>"; ARGV[2] lease ms. Joins only while the leader's lock exists.
_JOIN = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2] * 10)
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
        self._swap = client.register_script(_SWAP)
        self._join = client.register_script(_JOIN)

    def acquire(self, exact_key: str, attempt: str) -> bool:
        """Web side: become the one request that dispatches an attempt."""
        lock = self.keys.lock(exact_key)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(lock, f"q:{attempt}", nx=True, px=self.lease_ms)
            # Also when SET NX fails: then another attempt holds the key, in flight too.
            pipe.zadd(self.keys.leases, {exact_key: self._expiry()})
            return bool(pipe.execute()[0])

    def claim(self, exact_key: str, attempt: str, state: str, gauge: bool = True) -> bool:
        """Worker side: mark the attempt queued ("q") or running ("r") with a fresh lease
        (and count it in the `leases` gauge, unless it follows another attempt)."""
        if state not in ("q", "r"):
            raise ValueError("state must be 'q' or 'r'")
        lock = self.keys.lock(exact_key)
        claimed = bool(self._claim(keys=[lock], args=[attempt, state, self.lease_ms]))
        if claimed and gauge:
            self.client.zadd(self.keys.leases, {exact_key: self._expiry()})
        return claimed

    def extend(self, exact_key: str, attempt: str) -> bool:
        """Heartbeat of a running attempt; also keeps its followers' leases alive."""
        keys = [self.keys.lock(exact_key), self.keys.followers(exact_key)]
        members = self._extend(keys=keys, args=[attempt, self.lease_ms])
        if members is None:
            return False
        for f in followers(members):  # each in its own slot on a cluster
            self._swap(keys=[self.keys.lock(f.key)], args=[f"r:{f.attempt}", "", self.lease_ms])
        self.client.zadd(self.keys.leases, {exact_key: self._expiry()})
        return True

    def release(self, exact_key: str, attempt: str) -> list[Follower]:
        """Compare-and-delete; returns the popped followers. (A finished attempt releases
        in cache.store's _FINISH instead, together with its wake-up.)"""
        keys = [self.keys.lock(exact_key), self.keys.followers(exact_key)]
        popped = followers(self._release(keys=keys, args=[attempt]))
        self.client.zrem(self.keys.leases, exact_key)
        return popped

    def _expiry(self) -> float:
        # This host's clock: a gauge may be off by the clock skew between hosts, no more.
        return time.time() * 1000 + self.lease_ms

    def follow(self, leader_key: str, me: Follower) -> bool:
        """Join the attempt generating `leader_key`; False if it has already finished (or
        another attempt runs our key), and then our lock is as it was: queued."""
        ks = self.keys
        if not self.claim(me.key, me.attempt, "r", gauge=False):
            return False
        joined = [ks.lock(leader_key), ks.followers(leader_key)]
        if self._join(keys=joined, args=[me.member(), self.lease_ms]):
            return True
        self._swap(keys=[ks.lock(me.key)], args=[f"r:{me.attempt}", f"q:{me.attempt}",
                                                  self.lease_ms])  # fmt: skip
        return False


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
