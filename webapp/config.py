"""Web-tier settings, read once from the environment (12-factor)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def from_env(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    return {
        "REDIS_URL": env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "CELERY_BROKER_URL": env.get("CELERY_BROKER_URL")
        or env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "DATABASE_URL": env.get("DATABASE_URL", "postgresql:///flock"),
        "DATABASE_POOL_SIZE": int(env.get("DATABASE_POOL_SIZE", "10")),
        "SECRET_KEY": env.get("SECRET_KEY"),
        "REQUESTS_PER_MINUTE": int(env.get("REQUESTS_PER_MINUTE", "600")),
        "REQUEST_LOG_INTERVAL_S": float(env.get("REQUEST_LOG_INTERVAL_S", "1.0")),
        "KEY_PREFIX": env.get("FLOCK_KEY_PREFIX", "flock:v1:"),
        "OLLAMA_URL": env.get("OLLAMA_URL", "http://127.0.0.1:11434"),
        "LLM_BACKEND": env.get("LLM_BACKEND", "ollama"),
        "FLOWER_URL": env.get("FLOWER_URL", "http://127.0.0.1:5555"),
        "OLLAMA_MODEL": env.get("OLLAMA_MODEL", "llama3.2:1b"),
        "SEMANTIC_THRESHOLD": _threshold(env.get("SEMANTIC_THRESHOLD", "0.8")),
        "CACHE_TTL": int(env.get("CACHE_TTL", str(7 * 24 * 3600))),
        "LOCK_LEASE_MS": int(env.get("LOCK_LEASE_MS", "10000")),
        "REQUEST_TIMEOUT_S": float(env.get("REQUEST_TIMEOUT_S", "120")),
        "MAX_PROMPT_CHARS": int(env.get("MAX_PROMPT_CHARS", "32000")),
        "REDIS_MAX_CONNECTIONS": int(env.get("REDIS_MAX_CONNECTIONS", "100")),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": env.get("SESSION_COOKIE_SECURE", "0") == "1",
        # Flask refuses bigger bodies with 413 before parsing them.
        "MAX_CONTENT_LENGTH": int(env.get("MAX_BODY_BYTES", str(1024 * 1024))),
    }


def _threshold(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise ValueError(f"SEMANTIC_THRESHOLD must be within 0..1, not {raw}")
    return value
