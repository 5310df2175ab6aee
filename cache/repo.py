"""PostgreSQL: the record of every answer (`cache_entries`).

Redis may lose everything at any moment; what is here is never lost. The hot copy
in Redis and the semantic index are rebuilt from these rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from cache.audit import Audit
from cache.entry import Entry
from cache.semantic import pack, unpack

_LIVE = "invalidated_at IS NULL AND expires_at > now()"
# The audits a namespace's score threshold is learned from: its most recent ones.
AUDIT_WINDOW = 2000


@dataclass(frozen=True)
class Removed:
    """An entry taken out of service: what every index and Redis copy must forget."""

    id: str
    key: str
    namespace: str


def _entry(row: dict[str, Any]) -> Entry:
    return Entry(
        key=row["key"],
        namespace=row["namespace"],
        model=row["model"],
        prompt=row["prompt"],
        response=row["response"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        id=row["id"],
        created=row["created_at"].timestamp(),
    )


class CacheRepo:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def put(
        self,
        entry: Entry,
        ttl_s: int,
        embedding: np.ndarray | None = None,
        owner_id: int | None = None,
        private: bool = False,
    ) -> None:
        """Record an answer; an older live entry of the same key (a refresh) is replaced.
        `owner_id` is who caused it; a private entry is only ever served to them."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "UPDATE cache_entries SET invalidated_at = now(), invalidated_reason = 'replaced'"
                " WHERE key = %s AND invalidated_at IS NULL AND id <> %s",
                (entry.key, entry.id),
            )
            conn.execute(
                "INSERT INTO cache_entries (id, key, namespace, model, prompt, response,"
                " embedding, scope, owner_id, prompt_tokens, completion_tokens, created_at,"
                " expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " to_timestamp(%s), to_timestamp(%s) + make_interval(secs => %s))"
                " ON CONFLICT (id) DO NOTHING",
                (
                    entry.id,
                    entry.key,
                    entry.namespace,
                    entry.model,
                    entry.prompt,
                    entry.response,
                    pack(embedding) if embedding is not None else None,
                    "private" if private else "shared",
                    owner_id,
                    entry.prompt_tokens,
                    entry.completion_tokens,
                    entry.created,
                    entry.created,
                    ttl_s,
                ),
            )

    def live(self, key: str) -> tuple[Entry, int] | None:
        """The live entry of an exact key and its remaining TTL in seconds."""
        with self.pool.connection() as conn:
            row = (
                conn.cursor(row_factory=dict_row)
                .execute(
                    f"SELECT *, extract(epoch FROM expires_at - now())::int AS ttl"
                    f" FROM cache_entries WHERE key = %s AND {_LIVE}",
                    (key,),
                )
                .fetchone()
            )
        return (_entry(row), max(1, row["ttl"])) if row else None

    def owner_of(self, key: str) -> tuple[bool, int | None]:
        """Whether an exact key has a live entry, and who caused it (None: nobody known)."""
        with self.pool.connection() as conn:
            row = conn.execute(
                f"SELECT owner_id FROM cache_entries WHERE key = %s AND {_LIVE}", (key,)
            ).fetchone()
        return (row is not None, row[0] if row else None)

    def by_id(self, entry_id: str) -> dict[str, Any] | None:
        with self.pool.connection() as conn:
            return (
                conn.cursor(row_factory=dict_row)
                .execute(
                    "SELECT id, key, namespace, model, prompt, response, scope, owner_id,"
                    " prompt_tokens, completion_tokens, created_at, expires_at, hits, last_hit_at,"
                    " invalidated_at, invalidated_reason FROM cache_entries WHERE id = %s",
                    (entry_id,),
                )
                .fetchone()
            )

    def vectors(self) -> Iterator[tuple[str, str, str, np.ndarray]]:
        """(namespace, key, prompt, vector) of every live entry: the index's source."""
        # COPY streams the rows in PostgreSQL's binary format: the cheapest bulk read there
        # is (a cold start of a large index reads every live entry once).
        query = (
            f"COPY (SELECT namespace, key, prompt, embedding FROM cache_entries"
            f" WHERE {_LIVE} AND embedding IS NOT NULL) TO STDOUT (FORMAT BINARY)"
        )
        with self.pool.connection() as conn, conn.cursor() as cur, cur.copy(query) as copy:
            copy.set_types(["text", "text", "text", "bytea"])
            for namespace, key, prompt, blob in copy.rows():
                yield namespace, key, prompt, unpack(bytes(blob))

    def vectors_of(self, keys: Sequence[str]) -> list[tuple[str, str, str, np.ndarray]]:
        """(namespace, key, prompt, vector) of those of `keys` with a live entry: what the
        index's change log names (it carries keys, not prompts and vectors)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT namespace, key, prompt, embedding FROM cache_entries"
                f" WHERE key = ANY(%s) AND {_LIVE} AND embedding IS NOT NULL",
                (list(keys),),
            ).fetchall()
        return [(ns, key, prompt, unpack(bytes(blob))) for ns, key, prompt, blob in rows]

    def invalidate(
        self,
        reason: str,
        *,
        entry_id: str | None = None,
        model: str | None = None,
        older_than_s: float | None = None,
    ) -> list[Removed]:
        """Take live entries out of service: the one with `entry_id`, and/or those of
        `model`, and/or those created more than `older_than_s` ago (all given must hold)."""
        clauses, params = [], []
        for clause, value in (
            ("id = %s", entry_id),
            ("model = %s", model),
            ("created_at < now() - make_interval(secs => %s)", older_than_s),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        if not clauses:
            raise ValueError("give entry_id, model or older_than_s")
        return self._invalidate(" AND ".join(clauses), tuple(params), reason)

    def _invalidate(self, where: str, params: tuple[Any, ...], reason: str) -> list[Removed]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"UPDATE cache_entries SET invalidated_at = now(), invalidated_reason = %s"
                f" WHERE invalidated_at IS NULL AND ({where}) RETURNING id, key, namespace",
                (reason, *params),
            ).fetchall()
        return [Removed(*row) for row in rows]

    def evict(self, max_entries: int) -> list[Removed]:
        """Expired entries, then the least recently hit beyond `max_entries`."""
        removed = self._invalidate("expires_at <= now()", (), "expired")
        removed += self._invalidate(
            "id IN (SELECT id FROM cache_entries WHERE invalidated_at IS NULL"
            " ORDER BY coalesce(last_hit_at, created_at) DESC OFFSET %s)",
            (max_entries,),
            "evicted",
        )
        return removed

    def models(self, user_id: int) -> dict[str, float]:
        """Models with a live entry `user_id` may be served (shared, or their own), with the
        newest entry's time (unix seconds)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT model, extract(epoch FROM max(created_at))::float8 FROM cache_entries"
                f" WHERE {_LIVE} AND (scope = 'shared' OR owner_id = %s)"
                " GROUP BY model ORDER BY model",
                (user_id,),
            ).fetchall()
        return {model: at for model, at in rows}

    def namespace_thresholds(self) -> dict[str, float]:
        """Thresholds namespaces earned by wrong semantic hits (see the feedback endpoint)."""
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT namespace, threshold FROM namespace_thresholds").fetchall()
        return {namespace: float(threshold) for namespace, threshold in rows}

    def count_hits(self, hits: dict[str, tuple[int, datetime]]) -> None:
        """Add batched hit counts: entry id -> (hits, last hit)."""
        if not hits:
            return
        with self.pool.connection() as conn, conn.cursor() as cur:
            cur.executemany(
                "UPDATE cache_entries SET hits = hits + %s,"
                " last_hit_at = greatest(coalesce(last_hit_at, %s), %s) WHERE id = %s",
                [(n, at, at, entry_id) for entry_id, (n, at) in hits.items()],
            )

    def add_audit(
        self, namespace: str, entry_key: str, prompt: str, matched_prompt: str,
        similarity: float, score: float, correct: bool, judged_by: str,
    ) -> None:  # fmt: skip
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO audits (namespace, entry_key, prompt, matched_prompt, similarity,"
                " score, correct, judged_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (namespace, entry_key, prompt, matched_prompt, similarity, score, correct,
                 judged_by),
            )  # fmt: skip

    def audits(self, namespace: str, limit: int = AUDIT_WINDOW) -> list[Audit]:
        """The namespace's most recent audits, newest first."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT score, correct FROM audits WHERE namespace = %s ORDER BY id DESC LIMIT %s",
                (namespace, limit),
            ).fetchall()
        return [Audit(float(score), bool(correct)) for score, correct in rows]

    def recent_audits(self, limit: int = AUDIT_WINDOW) -> dict[str, list[Audit]]:
        """Every audited namespace's most recent audits."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT namespace, score, correct FROM (SELECT namespace, score, correct,"
                " row_number() OVER (PARTITION BY namespace ORDER BY id DESC) AS n"
                " FROM audits) a WHERE n <= %s",
                (limit,),
            ).fetchall()
        out: dict[str, list[Audit]] = {}
        for namespace, score, correct in rows:
            out.setdefault(namespace, []).append(Audit(float(score), bool(correct)))
        return out
