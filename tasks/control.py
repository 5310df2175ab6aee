"""The workers' inspect commands, without the tasks' arguments.

Celery's `active`, `reserved`, `scheduled` and `query_task` answer with each task's real
arguments (a job: the user's prompt and conversation) unless the caller asks for `safe`,
which Flower does not. Flower shows them on its worker pages. These replacements, under
the same names, answer with the redacted `argsrepr` every task is sent with (cache.job:
describe), so nothing that monitors the workers sees a prompt. Loaded by the workers only
(tasks/app.py `include`); the web sends tasks by name and never imports this.
"""

from __future__ import annotations

from typing import Any

from celery.worker import state as worker_state
from celery.worker.control import inspect_command


def _info(request: Any) -> dict[str, Any]:
    return request.info(safe=True)


@inspect_command(alias="dump_active")
def active(state: Any, safe: bool = False, **kwargs: Any) -> list[dict[str, Any]]:
    """List of tasks currently being executed (arguments redacted)."""
    return [_info(r) for r in state.tset(worker_state.active_requests)]


@inspect_command(alias="dump_reserved")
def reserved(state: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """List of currently reserved tasks, not including scheduled/active (redacted)."""
    waiting = state.tset(worker_state.reserved_requests) - state.tset(worker_state.active_requests)
    return [_info(r) for r in waiting]


@inspect_command(alias="dump_schedule")
def scheduled(state: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """List of currently scheduled ETA/countdown tasks (redacted)."""
    out = []
    for waiting in state.consumer.timer.schedule.queue:
        request = (getattr(waiting.entry, "args", None) or [None])[0]
        if hasattr(request, "info"):
            out.append({"eta": request.eta.isoformat() if request.eta else None,
                        "priority": waiting.priority, "request": _info(request)})  # fmt: skip
    return out


@inspect_command(variadic="ids", signature="[id1 [id2 [... [idN]]]]")
def query_task(state: Any, ids: Any, **kwargs: Any) -> dict[str, Any]:
    """Query for task information by id (redacted)."""
    ids = [ids] if isinstance(ids, str) else list(ids or ())
    found = {}
    for task_id in ids:
        request = worker_state.requests.get(task_id)
        if request is None:
            continue
        if request in worker_state.active_requests:
            where = "active"
        elif request in worker_state.reserved_requests:
            where = "reserved"
        else:
            where = "ready"
        found[task_id] = (where, _info(request))
    return found
