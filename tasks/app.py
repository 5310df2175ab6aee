"""The Celery app. Importing it loads no task and no model: the web sends tasks by name."""

from celery import Celery

app = Celery("flock", include=["tasks.answer", "tasks.sweeper", "tasks.control"])
app.config_from_object("celeryconfig")
