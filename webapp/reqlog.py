"""The request log, written in batches off the request path.

Requests append a row to an in-process buffer (no I/O); a background thread
inserts the buffer every `interval_s` and adds the hits to the entries they served.
Rows of a process that dies before its next flush are lost: it is a log, not the
record of the answers (that is cache_entries, written by the workers).

A flush is one transaction: the batch is COPYed into a scratch table, inserted once per
answer id (`ON CONFLICT DO NOTHING`: a batch written again after a failed commit's reply
adds nothing) and the hits of the rows actually inserted are counted with it. A batch
PostgreSQL refuses for one bad row (a NUL in a prompt, a user deleted meanwhile) is
written again row by row: the bad rows are dropped and logged, the others are kept. A
batch that could not be written at all (PostgreSQL unreachable, no permission) is kept
for the next flush, its newest rows up to `_MAX_KEPT_BYTES`.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

_COLUMNS = (
    "answer_id", "at", "user_id", "model", "outcome", "entry_id", "key", "prompt",
    "similarity", "latency_ms", "tokens_saved", "error_code",
)  # fmt: skip
_HIT_OUTCOMES = {"exact", "semantic", "coalesced"}
_MAX_KEPT_BYTES = 32 * 1024 * 1024  # rows kept for a retry while PostgreSQL refuses them all
# What one bad row makes PostgreSQL (or psycopg, before sending) refuse: the row is dropped.
_ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError)

_COLS = ", ".join(_COLUMNS)
_STAGE = (
    "CREATE TEMP TABLE request_log_batch ON COMMIT DROP"
    f" AS SELECT {_COLS} FROM request_log WITH NO DATA"
)
_INSERT = (
    f"INSERT INTO request_log ({_COLS}) SELECT {_COLS} FROM request_log_batch"
    " ON CONFLICT (answer_id) DO NOTHING RETURNING outcome, entry_id, at"
)
_HITS = (
    "UPDATE cache_entries SET hits = hits + %s,"
    " last_hit_at = greatest(coalesce(last_hit_at, %s), %s) WHERE id = %s"
)


class RequestLog:
    def __init__(self, pool: ConnectionPool, interval_s: float = 1.0) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def record(self, **row: Any) -> None:
        row.setdefault("at", datetime.now(UTC))
        with self._lock:
            self._rows.append(row)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="reqlog", daemon=True)
                self._thread.start()

    def flush(self) -> int:
        """Write the buffered rows; returns how many were inserted (0 for rows already
        there or dropped as bad)."""
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return 0
        try:
            return self._write(rows)
        except _ROW_ERRORS as exc:
            log.warning("request log: a batch of %d rows refused (%s); row by row", len(rows), exc)
        except Exception:
            self._keep(rows)
            raise
        written = 0
        for i, row in enumerate(rows):
            try:
                written += self._write([row])
            except _ROW_ERRORS as exc:
                log.error(
                    "request log: dropped the row of answer %s: %s", row.get("answer_id"), exc
                )
            except Exception:
                self._keep(rows[i:])
                raise
        return written

    def _write(self, rows: list[dict[str, Any]]) -> int:
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(_STAGE)
            # COPY: one stream for the whole batch, far cheaper than row-by-row INSERTs.
            with cur.copy(f"COPY request_log_batch ({_COLS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(tuple(row.get(c) for c in _COLUMNS))
            cur.execute(_INSERT)
            inserted = cur.fetchall()
            hits: Counter[str] = Counter()
            last: dict[str, datetime] = {}
            for outcome, entry_id, at in inserted:
                if outcome in _HIT_OUTCOMES and entry_id:
                    hits[entry_id] += 1
                    last[entry_id] = max(last.get(entry_id, at), at)
            if hits:
                cur.executemany(_HITS, [(n, last[e], last[e], e) for e, n in hits.items()])
            return len(inserted)

    def _keep(self, rows: list[dict[str, Any]]) -> None:
        """Put rows back for the next flush, the newest of them within the byte bound."""
        budget, start = _MAX_KEPT_BYTES, len(rows)
        while start > 0 and budget > 0:
            start -= 1
            budget -= _size(rows[start])
        kept = rows[start:] if budget >= 0 else rows[start + 1 :]
        if len(kept) < len(rows):
            log.error("request log: %d rows dropped (over the retry buffer)", len(rows) - len(kept))
        with self._lock:
            self._rows[:0] = kept

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.interval_s):
            try:
                self.flush()
            except Exception as exc:  # keep logging later: PostgreSQL may be back
                log.error("request log flush failed: %s", exc)


def _size(row: dict[str, Any]) -> int:
    """About what a row holds in memory: its text, and a fixed part for the rest."""
    return 256 + sum(len(v) for v in row.values() if isinstance(v, str))
