"""Every Redis key name Flock uses, built here and nowhere else.

All names start with the prefix (FLOCK_KEY_PREFIX, default `flock:v1:`):

| method               | name                   | holds                                  |
|----------------------|------------------------|----------------------------------------|
| resp(key)            | resp:{<key>}           | the answer (JSON Entry), or an alias   |
| lock(key)            | lock:{<key>}           | single-flight lease, q:/r:<attempt>    |
| done(key)            | done:{<key>}           | pub/sub channel: an attempt's Outcome  |
| err(key)             | err:{<key>}            | the last failure, for a few seconds    |
| followers(key)       | followers:{<key>}      | set: prompts following this generation |
| stream(key)          | stream:{<key>}         | stream: the generation's tokens        |
| aliases(entry_id)    | aliases:{<entry id>}   | set: exact keys holding a copy         |
| inflight(namespace)  | inflight:{<namespace>} | stream: prompts being answered         |
| semlog, semlog_epoch | semlog, semlog:{epoch} | the index's change log, its life       |
| emb(model, sha)      | emb:{<model>:<sha>}    | embedding cache                        |
| nsthreshold          | nsthreshold            | hash: namespaces' earned thresholds    |
| scorethreshold       | scorethreshold         | hash: namespaces' audited pair-model   |
|                      |                        | score thresholds                       |
| auditcounts          | auditcounts            | hash: audits judged right / wrong      |
| rl(ident)            | rl:{<ident>}           | hash: a rate-limit bucket              |
| apikey(sha)          | apikey:{<sha>}         | an API key's user, for a minute        |
| apikey_known(sha)    | apikeyknown:{<sha>}    | the last user PostgreSQL confirmed for |
|                      |                        | a key, for its outages (a day)         |
| job(id)              | job:{<id>}             | an async chat job: pending, its job;   |
|                      |                        | done, only its answer or error         |
| embres(id)           | embres:{<id>}          | an embeddings result, for a minute     |
| sweep                | sweep                  | the eviction sweep's lease             |
| pendingputs          | pendingputs            | list: answers PostgreSQL could not     |
|                      |                        | take yet (cache.pending)               |
| leases               | leases                 | sorted set: keys with an attempt in    |
|                      |                        | flight, by lease expiry (the gauge)    |

Every name with an id goes through `_name`, which puts the id in braces, a hash tag
(`resp:{<key>}`): Redis Cluster then keeps all the names of one exact key (answer, lease,
followers, stream, last failure) in one slot, so the scripts and transactions that touch
them together run on a cluster unchanged. What touches the names of different ids (an
alias and its entry, a follower and its leader) is done id by id (cache.lease,
cache.store, cache.redisconn). Lua that builds a lock's name (none today) and readers
that take an id out of a name (the wake-up hub) use `lock_parts` and `key_of_done`, never
the format itself. The names without an id (`leases`, `semlog`, ...) are one key each.
"""

from __future__ import annotations

_MARK = "\x00"  # stands for the id when splitting a name into the text around it


class Keyspace:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _name(self, kind: str, ident: str) -> str:
        return f"{self.prefix}{kind}:{{{ident}}}"

    def _parts(self, kind: str) -> tuple[str, str]:
        head, _, tail = self._name(kind, _MARK).partition(_MARK)
        return head, tail

    # --- one exact key's answer, lease, wake-up and tokens
    def resp(self, key: str) -> str:
        return self._name("resp", key)

    def lock(self, key: str) -> str:
        return self._name("lock", key)

    def done(self, key: str) -> str:
        return self._name("done", key)

    def err(self, key: str) -> str:
        return self._name("err", key)

    def followers(self, key: str) -> str:
        return self._name("followers", key)

    def stream(self, key: str) -> str:
        return self._name("stream", key)

    @property
    def lock_parts(self) -> tuple[str, str]:
        """(head, tail) with lock(k) == head + k + tail: for Lua that names a lock itself."""
        return self._parts("lock")

    @property
    def lock_pattern(self) -> str:
        head, tail = self._parts("lock")
        return f"{head}*{tail}"

    @property
    def done_pattern(self) -> str:
        head, tail = self._parts("done")
        return f"{head}*{tail}"

    def key_of_done(self, channel: str) -> str:
        """The exact key of a `done` channel's name."""
        head, tail = self._parts("done")
        return channel[len(head) : len(channel) - len(tail)]

    # --- entries and the semantic index
    def aliases(self, entry_id: str) -> str:
        return self._name("aliases", entry_id)

    def inflight(self, namespace: str) -> str:
        return self._name("inflight", namespace)

    @property
    def semlog(self) -> str:
        return f"{self.prefix}semlog"

    @property
    def semlog_epoch(self) -> str:
        return self._name("semlog", "epoch")

    def emb(self, model: str, text_sha: str) -> str:
        return self._name("emb", f"{model}:{text_sha}")

    @property
    def nsthreshold(self) -> str:
        return f"{self.prefix}nsthreshold"

    @property
    def scorethreshold(self) -> str:
        return f"{self.prefix}scorethreshold"

    @property
    def auditcounts(self) -> str:
        return f"{self.prefix}auditcounts"

    # --- callers and jobs
    def rl(self, ident: str) -> str:
        return self._name("rl", ident)

    def apikey(self, key_sha: str) -> str:
        return self._name("apikey", key_sha)

    def apikey_known(self, key_sha: str) -> str:
        return self._name("apikeyknown", key_sha)

    def job(self, job_id: str) -> str:
        return self._name("job", job_id)

    def embres(self, job_id: str) -> str:
        return self._name("embres", job_id)

    @property
    def sweep(self) -> str:
        return f"{self.prefix}sweep"

    @property
    def pendingputs(self) -> str:
        return f"{self.prefix}pendingputs"

    @property
    def leases(self) -> str:
        return f"{self.prefix}leases"
