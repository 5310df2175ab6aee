"""PostgreSQL pool of the web process (psycopg 3), opened per process in the factory."""

from __future__ import annotations

import atexit
import logging

from flask import Flask, current_app
from psycopg_pool import ConnectionPool

from settings import pg_pool_kwargs

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    pool = ConnectionPool(
        app.config["DATABASE_URL"],
        min_size=1,
        max_size=app.config["DATABASE_POOL_SIZE"],
        timeout=10,
        open=False,
        **pg_pool_kwargs(),
    )
    pool.open(wait=False)
    app.extensions["flock.db"] = pool
    # Closed while the process can still run code: left to the garbage collector, a gevent
    # worker's pool is finalized after its greenlets and prints a traceback at every stop.
    atexit.register(_close, pool)


def _close(pool: ConnectionPool) -> None:
    try:
        pool.close(timeout=2.0)
    except Exception as exc:  # the process is ending either way; say so, quietly
        log.warning("closing the PostgreSQL pool at exit: %s", exc)


def pool() -> ConnectionPool:
    return pool_of(current_app)


def pool_of(app: Flask) -> ConnectionPool:
    return app.extensions["flock.db"]
