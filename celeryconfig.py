"""Celery's own settings for the workers (and the web's task sender).

Celery reads lowercase module attributes. Flock's settings (settings.py) give the broker;
the workers read the rest of them from `settings.current()` themselves (tasks/resources.py).
"""

from settings import current, redis_timeouts

# The broker may live elsewhere (another Redis database, RabbitMQ); the cache lives at REDIS_URL.
broker_url = current().broker_url
broker_connection_retry_on_startup = True
if broker_url.startswith(("redis://", "rediss://", "unix://")):
    # No command without a deadline (the workers' BRPOP asks for 1 s at a time).
    broker_transport_options = {
        k: v
        for k, v in redis_timeouts(current().redis_timeout_s).items()
        if k in ("socket_timeout", "socket_connect_timeout")
    }

# Results travel through Flock's own keys and pub/sub, not Celery's result backend.
task_ignore_result = True

# A message is acknowledged only after its task ran, and a task whose worker died
# is requeued: no message is lost. Waiters do not rely on this for speed (lease takeover).
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# A broker error that is not a lost connection (a full Redis refuses the ack's ZREM:
# OutOfMemoryError) restarts the consumer, as a lost connection does, instead of stopping
# the worker for good ("Unrecoverable error"; tests/test_redis_full.py). The unacknowledged
# message stays in kombu's `unacked` hash and is restored like any other.
broker_channel_error_retry = True

task_routes = {
    "flock.answer": {"queue": "embed"},
    "flock.generate": {"queue": "llm"},
    # Embeddings requests: a queue of their own on the same embedders (tasks/resources.py
    # adds it to every worker that takes `embed`); a worker alternates between its queues,
    # so a backlog of embeddings never stands in front of a question.
    "flock.embed": {"queue": "embeddings"},
    # Audits of semantic hits: their own queue and worker, one at a time, so they never
    # hold up an answer (cache/audit.py).
    "flock.audit": {"queue": "audit"},
}
task_default_queue = "embed"

# Flower shows every task only when workers send events.
worker_send_task_events = True
task_send_sent_event = True

task_serializer = "json"
accept_content = ["json"]
