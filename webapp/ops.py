"""Operations endpoints.

GET /healthz         the process is alive (never looks further: a liveness probe that
                     failed on a dependency would restart healthy processes).
GET /readyz          every dependency answers: Redis, PostgreSQL, an embedder and an llm
                     worker (Celery ping), the LLM backend. 200 or 503, same shape.
GET /metrics         Prometheus text format (webapp/metrics.py).
GET /api/v1/config   what the browser UI shows: the Flower URL, the LLM backend, whether
                     anyone may register.

The details of /readyz (which check failed, with the exception's text: host names, ports)
and all of /metrics are for operators: they need `Authorization: Bearer <OPS_TOKEN>`.
Anyone else gets /readyz's status alone (200 or 503, `{"status": ...}`), enough for a load
balancer, and a 401 from /metrics. Without OPS_TOKEN, nobody gets the details.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

import requests
from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST
from psycopg_pool import ConnectionPool

from tasks.app import app as celery_app
from webapp import db, metrics
from webapp.errors import Unauthorized
from webapp.services import services

bp = Blueprint("ops", __name__)

# Checks run side by side; whatever has not answered by then is reported as down.
READY_TIMEOUT_S = 3.0
WORKER_ROLES = ("embedder", "llm")  # Procfile: -n embedder@%h, -n llm@%h


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify({"status": "ok"})


@bp.get("/api/v1/config")
def public_config() -> ResponseReturnValue:
    # No login: the sign-in page shows the backend note too, and nothing here is secret.
    return jsonify(
        {
            "flower_url": current_app.config["FLOWER_URL"] or None,
            "llm_backend": current_app.config["LLM_BACKEND"],
            "allow_registration": current_app.config["ALLOW_REGISTRATION"],
        }
    )


def _operator() -> bool:
    """Whether the caller sent `Authorization: Bearer <OPS_TOKEN>` (constant-time compare)."""
    token = current_app.config["OPS_TOKEN"]
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if not token or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


@bp.get("/metrics")
def metrics_view() -> ResponseReturnValue:
    if not _operator():
        raise Unauthorized("/metrics needs 'Authorization: Bearer <OPS_TOKEN>'")
    cfg = current_app.config
    gauges = metrics.RedisGauges(
        cfg["REDIS_URL"], cfg["REDIS_CLUSTER"], services().keys, cfg["CELERY_BROKER_URL"]
    )
    return Response(metrics.render(gauges), content_type=CONTENT_TYPE_LATEST)


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    cfg = current_app.config
    backend = cfg["LLM_BACKEND"]
    probes: dict[str, Callable[[], Any]] = {
        "redis": partial(_redis, cfg["REDIS_URL"], cfg["REDIS_CLUSTER"]),
        "postgres": partial(_postgres, db.pool()),
        "workers": partial(_workers, cfg["CELERY_BROKER_URL"]),
    }
    if backend != "embedded":
        probes["llm_backend"] = partial(_ollama, cfg["OLLAMA_URL"])
    results = _run(probes, READY_TIMEOUT_S)

    ping = results.pop("workers")
    for role in WORKER_ROLES:
        results[f"{role}_worker"] = _role_check(role, ping)
    # The embedded model runs inside the llm worker: it is up when that worker is.
    if backend == "embedded":
        results["llm_backend"] = {
            "ok": results["llm_worker"]["ok"],
            "detail": "embedded model in the llm worker",
        }
    elif backend == "auto" and not results["llm_backend"]["ok"]:
        # auto: a worker that found no Ollama at its start runs the embedded model instead.
        results["llm_backend"] = {
            "ok": results["llm_worker"]["ok"],
            "detail": f"Ollama does not answer ({results['llm_backend']['detail']}); "
            "with LLM_BACKEND=auto the llm worker falls back to the embedded demo model",
        }
    ready = all(check["ok"] for check in results.values())
    body: dict[str, Any] = {"status": "ready" if ready else "not_ready"}
    if _operator():  # the checks' details name hosts and ports: operators only
        body["checks"] = results
    return jsonify(body), 200 if ready else 503


def _run(probes: dict[str, Callable[[], Any]], timeout_s: float) -> dict[str, dict]:
    """Run every probe at once; each gives {"ok", "detail"} and none raises or outlasts
    `timeout_s` (a probe stuck past it is left to finish in the background)."""
    pool = ThreadPoolExecutor(max_workers=len(probes), thread_name_prefix="readyz")
    futures = {name: pool.submit(probe) for name, probe in probes.items()}
    pool.shutdown(wait=False)
    deadline = time.monotonic() + timeout_s
    return {name: _outcome(f, deadline, timeout_s) for name, f in futures.items()}


def _outcome(future: Future, deadline: float, timeout_s: float) -> dict[str, Any]:
    try:
        return {"ok": True, "detail": future.result(max(0.0, deadline - time.monotonic()))}
    except TimeoutError:
        return {"ok": False, "detail": f"no answer within {timeout_s:g} s"}
    except Exception as exc:  # a probe's failure is its report, never a 500
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}


def _role_check(role: str, ping: dict[str, Any]) -> dict[str, Any]:
    if not ping["ok"]:
        return ping
    names = [n for n in ping["detail"] if n.partition("@")[0].startswith(role)]
    if names:
        return {"ok": True, "detail": names}
    return {"ok": False, "detail": f"no {role} worker answered a ping"}


def _redis(url: str, cluster: bool) -> str:
    metrics.timed_redis(url, cluster).ping()
    return "PONG"


def _postgres(pool: ConnectionPool) -> str:
    with pool.connection(timeout=2.0) as conn:
        conn.execute("SELECT 1")
    return "SELECT 1"


def _workers(broker_url: str) -> list[str]:
    # A dead Redis broker would keep Celery's publisher retrying long after the deadline:
    # ask the broker itself first, with a short timeout.
    if broker_url.startswith(("redis://", "rediss://", "unix://")):
        metrics.timed_redis(broker_url).ping()
    replies = celery_app.control.ping(timeout=1.0)
    return sorted(name for reply in replies for name in reply)


def _ollama(url: str) -> str:
    resp = requests.get(f"{url.rstrip('/')}/api/version", timeout=2.0)
    resp.raise_for_status()
    return f"version {resp.json().get('version', '?')}"
