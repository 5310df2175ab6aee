"""Celery settings for the workers (and the web's task sender), read from the environment.

Celery's own settings are lowercase module attributes; Flock's worker settings
use the `flock_` prefix and are read by tasks/resources.py through `app.conf`.
"""

import os

# The broker may live elsewhere (another Redis database, RabbitMQ); the cache lives at REDIS_URL.
flock_redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
broker_url = os.environ.get("CELERY_BROKER_URL") or flock_redis_url
broker_connection_retry_on_startup = True

# Results travel through Flock's own keys and pub/sub, not Celery's result backend.
task_ignore_result = True

# A message is acknowledged only after its task ran, and a task whose worker died
# is requeued: no message is lost. Waiters do not rely on this for speed (lease takeover).
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

task_routes = {
    "flock.answer": {"queue": "embed"},
    "flock.generate": {"queue": "llm"},
    "flock.embed": {"queue": "embed"},
}
task_default_queue = "embed"

# Flower shows every task only when workers send events.
worker_send_task_events = True
task_send_sent_event = True

task_serializer = "json"
accept_content = ["json"]

flock_database_url = os.environ.get("DATABASE_URL", "postgresql:///flock")
flock_key_prefix = os.environ.get("FLOCK_KEY_PREFIX", "flock:v1:")
flock_ollama_url = os.environ.get("OLLAMA_URL", "http://127.0.0.1:11434")
# ollama | embedded (SmolLM2-135M inside the llm worker) | auto (Ollama if it answers).
flock_llm_backend = os.environ.get("LLM_BACKEND", "auto")
flock_llm_timeout_s = float(os.environ.get("LLM_TIMEOUT_S", "120"))
flock_llm_max_retries = int(os.environ.get("LLM_MAX_RETRIES", "2"))
flock_llm_retry_backoff_s = float(os.environ.get("LLM_RETRY_BACKOFF_S", "0.5"))
# The uncertain band: a verifier score from this value up to its threshold asks the LLM
# "same question?" before a semantic hit is refused. Unset (default): off.
flock_llm_verify_band = (
    float(os.environ["LLM_VERIFY_BAND"]) if os.environ.get("LLM_VERIFY_BAND") else None
)
if flock_llm_verify_band is not None and not 0.0 <= flock_llm_verify_band <= 1.0:
    raise ValueError(f"LLM_VERIFY_BAND must be within 0..1, not {flock_llm_verify_band}")
flock_lock_lease_ms = int(os.environ.get("LOCK_LEASE_MS", "10000"))
# The ONNX export of the embedding model is built once and kept here.
flock_embed_cache_dir = os.environ.get("EMBED_CACHE_DIR", "var/models")
# Eviction: a sweep every EVICT_INTERVAL_S (one across all workers) drops expired
# entries and the least recently hit beyond CACHE_MAX_ENTRIES.
flock_cache_max_entries = int(os.environ.get("CACHE_MAX_ENTRIES", "100000"))
flock_evict_interval_s = float(os.environ.get("EVICT_INTERVAL_S", "30"))
