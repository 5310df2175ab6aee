"""The two tasks of a request: `answer` (queue embed) and `generate` (queue llm).

Thin wrappers: they parse the job and call the plain functions in tasks.flow.
A job is a small JSON dict built by the web (see webapp.chat.build_job).
"""

from tasks import flow
from tasks.app import app
from tasks.resources import resources


@app.task(name="flock.answer")
def answer(job: dict) -> None:
    res = resources()
    with flow.errors_reach_waiters(res, job):
        next_job = flow.answer(res, job)
        if next_job is not None:
            app.send_task("flock.generate", args=[next_job], queue="llm")


@app.task(name="flock.generate")
def generate(job: dict) -> None:
    res = resources()
    with flow.errors_reach_waiters(res, job):
        flow.generate(res, job)


@app.task(name="flock.embed")
def embed(job: dict) -> None:
    res = resources()
    flow.embed(res, job)
