"""The web tier's Flask config, made from the process's `Settings` (settings.py)."""

from __future__ import annotations

from typing import Any

from settings import Settings


def from_settings(s: Settings) -> dict[str, Any]:
    return {
        "REDIS_URL": s.redis_url,
        "REDIS_CLUSTER": s.redis_cluster,
        "CELERY_BROKER_URL": s.broker_url,
        "DATABASE_URL": s.database_url,
        "DATABASE_POOL_SIZE": s.database_pool_size,
        "SECRET_KEY": s.secret_key,
        "REQUESTS_PER_MINUTE": s.requests_per_minute,
        "ALLOW_REGISTRATION": s.allow_registration,
        "AUTH_ATTEMPTS_PER_MINUTE": s.auth_attempts_per_minute,
        "MAX_KEYS_PER_USER": s.max_keys_per_user,
        "OPS_TOKEN": s.ops_token,
        "API_KEY_MEMORY_S": s.api_key_memory_s,
        "API_KEY_CACHE_S": s.api_key_cache_s,
        "API_KEY_LAST_KNOWN_S": s.api_key_last_known_s,
        "FEEDBACK_QUORUM": s.feedback_quorum,
        "FEEDBACK_PER_MINUTE": s.feedback_per_minute,
        "CACHE_MAX_TTL": s.cache_max_ttl,
        "REQUEST_LOG_INTERVAL_S": s.request_log_interval_s,
        "KEY_PREFIX": s.flock_key_prefix,
        "OLLAMA_URL": s.ollama_url,
        "LLM_BACKEND": s.llm_backend,
        "FLOWER_URL": s.flower_url,
        "OLLAMA_MODEL": s.ollama_model,
        "SEMANTIC_THRESHOLD": s.semantic_threshold,
        "SEMANTIC_MAX_ERROR": s.semantic_max_error,
        "AUDIT_RATE": s.audit_rate,
        "CACHE_TTL": s.cache_ttl,
        "LOCK_LEASE_MS": s.lock_lease_ms,
        "REQUEST_TIMEOUT_S": s.request_timeout_s,
        "MAX_PROMPT_CHARS": s.max_prompt_chars,
        "EMBED_MAX_TEXTS": s.embed_max_texts,
        "EMBED_MAX_CHARS": s.embed_max_chars,
        "REDIS_MAX_CONNECTIONS": s.redis_max_connections,
        "REDIS_TIMEOUT_S": s.redis_timeout_s,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": s.session_cookie_secure,
        "PERMANENT_SESSION_LIFETIME": s.session_lifetime_s,
        # Flask refuses bigger bodies with 413 before parsing them.
        "MAX_CONTENT_LENGTH": s.max_body_bytes,
    }
