"""The request log, written in batches off the request path.

Requests append a row to an in-process buffer (no I/O); a background thread
inserts the buffer every `interval_s` and adds the hits to the entries they served.
Rows of a process that dies before its next flush are lost: it is a log, not the
record of the answers (that is cache_entries, written by the workers).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import ConnectionPool

from cache.repo import CacheRepo

log = logging.getLogger(__name__)

_COLUMNS = (
    "answer_id", "at", "user_id", "model", "outcome", "entry_id", "key", "prompt",
    "similarity", "latency_ms", "tokens_saved", "error_code",
)  # fmt: skip
_HIT_OUTCOMES = {"exact", "semantic", "coalesced"}
_MAX_KEPT = 100_000  # rows kept for a retry while PostgreSQL is unreachable


class RequestLog:
    def __init__(self, pool: ConnectionPool, interval_s: float = 1.0) -> None:
        self.pool = pool
        self.repo = CacheRepo(pool)
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
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return 0
        hits: Counter[str] = Counter()
        last: dict[str, datetime] = {}
        for row in rows:
            if row["outcome"] in _HIT_OUTCOMES and row.get("entry_id"):
                hits[row["entry_id"]] += 1
                last[row["entry_id"]] = max(last.get(row["entry_id"], row["at"]), row["at"])
        try:
            # COPY: one stream for the whole batch, far cheaper than row-by-row INSERTs.
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY request_log ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(tuple(row.get(c) for c in _COLUMNS))
            self.repo.count_hits({e: (n, last[e]) for e, n in hits.items()})
        except Exception:
            with self._lock:  # keep them for the next flush, within reason
                self._rows[:0] = rows[-_MAX_KEPT:]
            raise
        return len(rows)

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.interval_s):
            try:
                self.flush()
            except Exception as exc:  # keep logging later: PostgreSQL may be back
                log.error("request log flush failed: %s", exc)
