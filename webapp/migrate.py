"""Apply the SQL migrations in webapp/migrations, in order, each once.

`python -m webapp.migrate` (the Procfile's release step, `make run`, the test setup).
Idempotent and safe to run from several machines at once: an advisory lock
serialises the runs, and each file is applied and recorded in one transaction.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import psycopg

from settings import PG_CONNECT_TIMEOUT_S, Settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_LOCK_ID = 0x466C6F636B  # "Flock": the advisory lock every migration run takes

log = logging.getLogger(__name__)


def migrate(database_url: str) -> list[str]:
    """Apply what is missing; return the versions applied now."""
    applied_now = []
    with psycopg.connect(
        database_url, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_S
    ) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for path in sorted(MIGRATIONS.glob("*.sql")):
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
                done = conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = %s", (path.stem,)
                ).fetchone()
                if done:
                    continue
                conn.execute(path.read_text())
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (path.stem,))
                applied_now.append(path.stem)
                log.info("applied migration %s", path.stem)
    return applied_now


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    applied = migrate(Settings.from_env().database_url)
    print(f"migrations: {len(applied)} applied ({', '.join(applied) or 'up to date'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
