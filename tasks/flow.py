"""What the tasks do, as plain functions that tests can call directly.

Both steps are idempotent: a redelivered or duplicated job first re-checks the
cache and the lease, so it either serves what is there or steps aside.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from cache import Entry, Outcome
from inference import Completion, LLMError, PermanentLLMError
from tasks.resources import Resources

log = logging.getLogger(__name__)


def answer(res: Resources, job: dict[str, Any]) -> bool:
    """Serve from the cache if the answer appeared meanwhile; else say whether to generate."""
    if _served_from_cache(res, job):
        return False
    # Renew the queued lease: the llm queue may hold the job a while longer.
    return res.lease.claim(job["key"], job["attempt"], "q")


def generate(res: Resources, job: dict[str, Any]) -> None:
    key, attempt = job["key"], job["attempt"]
    if _served_from_cache(res, job):
        return
    if not res.lease.claim(key, attempt, "r"):
        log.info("another attempt is generating %s; %s steps aside", key[:12], attempt)
        return
    try:
        with _Heartbeat(res, key, attempt):
            completion = _complete_with_retries(res, job)
    except LLMError as exc:
        res.store.finish(
            key,
            Outcome(attempt=attempt, error_code=exc.code, error_message=str(exc)),
            ttl_s=None,
        )
        return
    except Exception as exc:
        # A bug must not leave waiters hanging until their timeout; tell them, then let
        # Celery record the failure.
        res.store.finish(
            key,
            Outcome(attempt=attempt, error_code="internal_error", error_message=str(exc)),
            ttl_s=None,
        )
        raise
    entry = Entry(
        key=key,
        namespace=job["namespace"],
        model=job["model"],
        prompt=job["prompt"],
        response=completion.content,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
    )
    res.store.finish(key, Outcome(attempt=attempt, entry=entry, status="miss"), job["ttl"])


def _served_from_cache(res: Resources, job: dict[str, Any]) -> bool:
    if job["mode"] != "use":
        return False
    entry = res.store.get(job["key"])
    if entry is None:
        return False
    res.store.finish(job["key"], Outcome(attempt=job["attempt"], entry=entry, status="exact"), None)
    return True


def _complete_with_retries(res: Resources, job: dict[str, Any]) -> Completion:
    for retry in range(res.max_retries + 1):
        try:
            return res.llm.chat(job["model"], job["messages"], job.get("options"))
        except PermanentLLMError:
            raise
        except LLMError as exc:
            if retry == res.max_retries:
                raise
            delay = res.retry_backoff_s * 2**retry
            log.warning("LLM call failed (%s); retry %d in %.1fs", exc, retry + 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


class _Heartbeat:
    """Keeps the running lease alive while the LLM works, from a side thread."""

    def __init__(self, res: Resources, key: str, attempt: str) -> None:
        self.res, self.key, self.attempt = res, key, attempt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        interval = self.res.lease.lease_ms / 3000
        while not self._stop.wait(interval):
            try:
                if not self.res.lease.extend(self.key, self.attempt):
                    log.warning("lost the lease of %s; finishing anyway", self.key[:12])
                    return
            except Exception as exc:  # a failed beat must not kill the answer
                log.warning("heartbeat failed: %s", exc)
