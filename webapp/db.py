"""PostgreSQL pool of the web process (psycopg 3), opened per process in the factory."""

from __future__ import annotations

from flask import Flask, current_app
from psycopg_pool import ConnectionPool


def init_app(app: Flask) -> None:
    pool = ConnectionPool(
        app.config["DATABASE_URL"],
        min_size=1,
        max_size=app.config["DATABASE_POOL_SIZE"],
        timeout=10,
        open=False,
        kwargs={"autocommit": True},
    )
    pool.open(wait=False)
    app.extensions["flock.db"] = pool


def pool() -> ConnectionPool:
    return pool_of(current_app)


def pool_of(app: Flask) -> ConnectionPool:
    return app.extensions["flock.db"]
