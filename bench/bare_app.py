"""The exact bench's baseline: the least a Flask app must do to serve a cached answer.

POST /api/v1/chat {"prompt": ...}: parse the JSON body, one Redis GET of BARE_PREFIX + prompt,
return the stored bytes as the JSON body. Same Redis pool settings as Flock's web tier.
Served like Flock: gunicorn 'bench.bare_app:create_app()' with the same worker class and count.
"""

from __future__ import annotations

import os

import redis
from flask import Flask, Response, abort, jsonify, request


def create_app() -> Flask:
    app = Flask(__name__, static_folder=None)
    pool = redis.BlockingConnectionPool.from_url(
        os.environ["REDIS_URL"],
        max_connections=int(os.environ.get("REDIS_MAX_CONNECTIONS", "50")),
        timeout=10,
    )
    client = redis.Redis(connection_pool=pool)
    prefix = os.environ.get("BARE_PREFIX", "bench:bare:")

    @app.post("/api/v1/chat")
    def chat():
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            abort(400)
        raw = client.get(prefix + body["prompt"])
        if raw is None:
            abort(404)
        return Response(raw, mimetype="application/json")

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    return app
