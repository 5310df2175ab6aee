"""The hold bench's baseline: the least a Flask app must do to hold N requests for one event.

POST /api/v1/chat {"prompt": ...}: parse the JSON body, wait for one process-wide event, return
a small JSON answer. The first request of a round starts a timer of SLEEP_S seconds that sets
the round's event, so every request parked meanwhile is released at once, as one LLM answer
releases Flock's waiters; the next request starts a new round. No Redis, no PostgreSQL, no
cache: what is left is gunicorn, gevent and Flask holding sockets and greenlets. Served like
Flock: the Procfile's web command with this app instead.
"""

from __future__ import annotations

import os
import threading

from flask import Flask, abort, jsonify, request


def create_app() -> Flask:
    app = Flask(__name__, static_folder=None)
    sleep_s = float(os.environ.get("SLEEP_S", "20"))
    # Under the gevent worker, threading is monkey-patched: the events and timers are
    # gevent's, and waiting on an event parks a greenlet.
    lock = threading.Lock()
    rounds = [threading.Event()]
    rounds[0].set()  # no round open yet

    @app.post("/api/v1/chat")
    def chat():
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            abort(400)
        with lock:
            if rounds[-1].is_set():
                rounds[-1] = threading.Event()
                threading.Timer(sleep_s, rounds[-1].set).start()
            released = rounds[-1]
        released.wait()
        return jsonify({"message": {"role": "assistant", "content": f"slept {sleep_s:g} s"}})

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    return app
