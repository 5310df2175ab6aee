"""The tasks: `answer` (queue embed), `generate` (queue llm), `embed` (queue embed) and
`audit` (queue audit: a semantic hit answered again, off the request path).

Thin wrappers: they read the job (cache.job: a `Job`, or an `EmbedJob`, built by the web
in webapp/chat.py and webapp/embed.py) and call the plain functions in tasks.flow.
"""

from typing import Any

from cache.job import AuditJob, EmbedJob, Job, describe
from tasks import flow
from tasks.app import app
from tasks.resources import resources


@app.task(name="flock.answer")
def answer(payload: dict[str, Any]) -> None:
    job = Job.from_payload(payload)
    res = resources()
    with flow.errors_reach_waiters(res, job):
        next_job = flow.answer(res, job)
        if next_job is not None:
            payload = next_job.to_payload()
            # argsrepr: what Flower shows of the task; the prompt stays out of monitoring.
            app.send_task("flock.generate", args=[payload], queue="llm",
                          argsrepr=describe(payload), kwargsrepr="{}")  # fmt: skip


@app.task(name="flock.generate")
def generate(payload: dict[str, Any]) -> None:
    job = Job.from_payload(payload)
    res = resources()
    with flow.errors_reach_waiters(res, job):
        flow.generate(res, job)


@app.task(name="flock.embed")
def embed(payload: dict[str, Any]) -> None:
    flow.embed(resources(), EmbedJob.from_payload(payload))


@app.task(name="flock.audit")
def audit(payload: dict[str, Any]) -> None:
    flow.audit(resources(), AuditJob.from_payload(payload))
