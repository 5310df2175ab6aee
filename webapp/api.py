"""Native API: POST /api/v1/chat (JSON, SSE with "stream": true, 202 with "wait": false)
and GET /api/v1/jobs/<id>. A thin adapter on webapp/call.py."""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context
from flask.typing import ResponseReturnValue

from webapp import chat, jobs, streaming
from webapp.auth import current_user
from webapp.call import ADMITTED, STARTED, Call, answer_body, authorize
from webapp.errors import ApiError, BadRequest
from webapp.services import services

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.post("/chat")
def chat_view() -> ResponseReturnValue:
    started = request.environ.get(STARTED) or time.perf_counter()
    user = current_user()
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequest(
            "the body must be valid JSON (Content-Type: application/json)", code="invalid_json"
        )
    call = Call.prepare(services(), current_app.config, body, user, started)
    # webapp.fastpath may have admitted this request already (then handed it over).
    lookup = call.admit(request.environ.pop(ADMITTED, None))
    if not call.req.wait:
        if call.req.stream:
            raise BadRequest("'stream' and 'wait': false do not go together")
        job_id = jobs.submit(call.svc, call.question())
        return jsonify({"id": job_id, "state": "pending", "url": f"/api/v1/jobs/{job_id}"}), 202
    if call.req.stream:
        return Response(
            stream_with_context(_events(call, lookup)),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    answer = call.ask(lookup=lookup)
    resp = jsonify(call.body(answer))
    resp.headers["X-Cache"] = answer.status
    return resp


def _events(call: Call, lookup: chat.Lookup | None) -> Iterator[str]:
    ask = lambda p: call.ask(p, lookup)  # noqa: E731
    for event, data in streaming.relay(call.svc, call.key, ask, call.timeout_s):
        if event == "meta":
            yield streaming.sse("meta", {**data, "threshold": call.threshold, "id": call.id,
                                         "model": call.req.model})  # fmt: skip
        elif event == "delta":
            yield streaming.sse("delta", {"content": data})
        elif event == "done":
            yield streaming.sse("done", call.body(data))
        elif event == "error":
            yield streaming.sse("error", {"error": {"code": data.code, "message": data.message}})
        else:
            yield streaming.sse(event, {})


@bp.get("/jobs/<job_id>")
def job_view(job_id: str) -> ResponseReturnValue:
    started = time.perf_counter()
    user = authorize()
    try:
        answer = jobs.poll(services(), job_id, user.id)
    except ApiError as exc:
        if exc.status == 404:
            raise
        error = {"code": exc.code, "message": exc.message}
        return jsonify({"id": job_id, "state": "error", "error": error})
    if answer is None:
        return jsonify({"id": job_id, "state": "pending"})
    threshold = current_app.config["SEMANTIC_THRESHOLD"]
    body = answer_body(answer, job_id, threshold, "shared", started)
    return jsonify({"id": job_id, "state": "done", "answer": body})
