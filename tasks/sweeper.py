"""Eviction: expired entries and the least recently hit beyond CACHE_MAX_ENTRIES.

Every worker runs a sweeper thread; a Redis lease makes one sweep per interval run
across all of them. What it evicts leaves PostgreSQL's live set, Redis and every
semantic index (through the index's change log).
"""

from __future__ import annotations

import logging
import threading

from celery.signals import worker_ready

from cache import ExactStore, SemanticIndex
from cache.repo import CacheRepo
from cache.store import forget_everywhere
from settings import current
from tasks.resources import resources

log = logging.getLogger(__name__)


def sweep(repo: CacheRepo, store: ExactStore, index: SemanticIndex, max_entries: int) -> int:
    removed = repo.evict(max_entries)
    forget_everywhere(removed, store, index)
    if removed:
        log.info("evicted %d entries", len(removed))
    return len(removed)


def _run(interval_s: float, max_entries: int) -> None:
    while True:
        try:
            res = resources()
            if res.redis.set(res.keys.sweep, "1", nx=True, px=int(interval_s * 1000)):
                sweep(res.repo, res.store, res.index, max_entries)
        except Exception as exc:  # the next round may find Redis or PostgreSQL back
            log.error("sweep failed: %s", exc)
        try:
            # Answers PostgreSQL could not take: every worker tries (no lease), so one
            # whose PostgreSQL is out of reach never holds them back; a put is idempotent.
            res = resources()
            if len(res.pending):
                res.pg.call(res.pending.retry, res.repo, res.index)
        except Exception as exc:
            log.error("pending answers not recorded yet: %s", exc)
        threading.Event().wait(interval_s)


@worker_ready.connect
def _start(**_: object) -> None:
    conf = current()
    threading.Thread(
        target=_run,
        args=(conf.evict_interval_s, conf.cache_max_entries),
        name="sweeper",
        daemon=True,
    ).start()
