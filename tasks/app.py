"""The Celery app. Importing it loads no task and no model: the web sends tasks by name."""

from celery import Celery

from tasks import broker

broker.install()  # a lost broker costs a reconnect, never the worker (tasks/broker.py)

app = Celery("flock", include=["tasks.answer", "tasks.sweeper", "tasks.control"])
app.config_from_object("celeryconfig")
