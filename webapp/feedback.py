"""Feedback on answers, and the namespaces' earned thresholds.

POST /api/v1/feedback {"id": <answer id>, "good": bool}: on an answer the caller received
(admins: any). Every report is recorded (`feedback`); "good": false is a vote against the
entry that served it:

- the entry is taken out of service (PostgreSQL, Redis and its aliases, every index) when
  its owner or an admin says so, or when FEEDBACK_QUORUM distinct users have; one user
  alone cannot spoil an answer that everybody shares;
- a wrong *semantic* hit at similarity s is also a vote to raise its namespace's threshold
  (`namespace_thresholds`, mirrored in the Redis hash the embedders read). An admin's vote,
  or any vote in a private namespace (only its owner is ever served there), raises it to
  s + 0.01 at once. Otherwise it rises only as far as a quorum agrees: to just above the
  similarity that FEEDBACK_QUORUM distinct users' reports reach (each user counted at their
  highest). Never above 0.995. Aliases made below the new threshold are dropped.

Each user may send FEEDBACK_PER_MINUTE reports (429 beyond).

GET /api/v1/admin/namespaces                        thresholds and their votes (admins)
DELETE /api/v1/admin/namespaces/<namespace>/threshold  resets one: the namespace requires
                                                    the request's threshold again, and
                                                    earlier votes no longer count
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from psycopg.rows import dict_row

from webapp import db
from webapp.auth import User, admin_required, current_user, login_required
from webapp.errors import BadRequest, NotFound, RateLimited
from webapp.services import services

bp = Blueprint("feedback", __name__, url_prefix="/api/v1")
MAX_THRESHOLD = 0.995
# Votes for a namespace's threshold that count: wrong semantic hits since its last reset.
_NAMESPACE_VOTES = (
    "FROM feedback WHERE namespace = %s AND NOT good AND outcome = 'semantic'"
    " AND similarity IS NOT NULL AND at > coalesce((SELECT reset_at FROM namespace_thresholds"
    " WHERE namespace = %s), '-infinity')"
)


@bp.post("/feedback")
@login_required
def feedback() -> ResponseReturnValue:
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise BadRequest("'id' (the answer's id) is required")
    if not isinstance(body.get("good"), bool):
        raise BadRequest("'good' must be true or false")
    user = current_user()
    wait_s = services().feedback_limiter.take(f"feedback:user{user.id}")
    if wait_s:
        raise RateLimited("too much feedback; try again later", retry_after_s=int(wait_s))
    row = _answer(body["id"], user)
    entry = services().repo.by_id(row["entry_id"])
    semantic = row["outcome"] == "semantic" and entry is not None
    with db.pool().connection() as conn:
        conn.execute(
            "INSERT INTO feedback (answer_id, user_id, good, outcome, namespace, prompt, matched,"
            " similarity, entry_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (body["id"], user.id, body["good"], row["outcome"],
             entry["namespace"] if entry else None, row["prompt"],
             entry["prompt"] if semantic and entry else None, row["similarity"],
             row["entry_id"]),
        )  # fmt: skip
        votes = _count(conn, "SELECT count(DISTINCT user_id) FROM feedback WHERE entry_id = %s"
                       " AND NOT good", (row["entry_id"],))  # fmt: skip
    quorum = current_app.config["FEEDBACK_QUORUM"]
    answer: dict[str, Any] = {
        "id": body["id"], "recorded": True, "invalidated": [], "votes": votes, "quorum": quorum,
        "namespace_threshold": None,
    }  # fmt: skip
    if body["good"] or entry is None:
        return jsonify(answer)
    decisive = user.is_admin or entry["owner_id"] == user.id or entry["scope"] == "private"
    if decisive or votes >= quorum:
        removed = services().repo.invalidate("feedback", entry_id=row["entry_id"])
        services().forget(removed)
        answer["invalidated"] = [r.id for r in removed]
    if semantic and row["similarity"] is not None:
        alone = user.is_admin or entry["scope"] == "private"  # a private namespace is one user's
        answer["namespace_threshold"] = _tighten(entry["namespace"], row["similarity"], alone)
    return jsonify(answer)


def _tighten(namespace: str, similarity: float, decisive: bool) -> float | None:
    """Count a wrong semantic hit at `similarity` against its namespace; returns the
    namespace's threshold now (None: it has none). Raised at once by a `decisive` vote,
    else only as far as a quorum of distinct users' reports reach."""
    base = current_app.config["SEMANTIC_THRESHOLD"]
    quorum = current_app.config["FEEDBACK_QUORUM"]
    with db.pool().connection() as conn:
        if decisive:
            level: float | None = similarity
        else:
            # Each user at their highest report; the quorum-th highest is where they agree.
            agreed = conn.execute(
                f"SELECT max(similarity) AS s {_NAMESPACE_VOTES} GROUP BY user_id"
                " ORDER BY s DESC OFFSET %s LIMIT 1",
                (namespace, namespace, quorum - 1),
            ).fetchone()
            level = float(agreed[0]) if agreed else None
        wanted = min(MAX_THRESHOLD, max(base, level + 0.01)) if level is not None else 0.0
        row = conn.execute(
            "INSERT INTO namespace_thresholds (namespace, threshold, wrong_hits)"
            " VALUES (%s, %s, 1) ON CONFLICT (namespace) DO UPDATE SET"
            " threshold = greatest(namespace_thresholds.threshold, excluded.threshold),"
            " wrong_hits = namespace_thresholds.wrong_hits + 1, updated_at = now()"
            " RETURNING threshold",
            (namespace, wanted),
        ).fetchone()
        assert row is not None  # an upsert with RETURNING gives its row
        threshold = float(row[0])
        if threshold <= 0:
            return None
        services().redis.hset(services().keys.nsthreshold, namespace, str(threshold))
        if level is not None:
            live = conn.execute(
                "SELECT id FROM cache_entries WHERE namespace = %s AND invalidated_at IS NULL",
                (namespace,),
            ).fetchall()
            services().store.drop_aliases_below([i for (i,) in live], threshold)
    return threshold


def _count(conn: Any, sql: str, params: tuple[Any, ...]) -> int:
    row = conn.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def _answer(answer_id: str, user: User) -> dict[str, Any]:
    """The logged answer (the log is batched: give this process's buffer a flush, and
    other processes one interval, before saying it does not exist)."""
    deadline = time.monotonic() + 3 * services().log.interval_s
    while True:
        services().log.flush()
        with db.pool().connection() as conn:
            row = (
                conn.cursor(row_factory=dict_row)
                .execute(
                    "SELECT entry_id, user_id, outcome, prompt, similarity FROM request_log"
                    " WHERE answer_id = %s",
                    (answer_id,),
                )
                .fetchone()
            )
        if row is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if row is None or row["entry_id"] is None or not (user.is_admin or row["user_id"] == user.id):
        raise NotFound("no such answer of yours")
    return row


# --- admins: the namespaces' thresholds --------------------------------------------------


@bp.get("/admin/namespaces")
@admin_required
def namespaces() -> ResponseReturnValue:
    with db.pool().connection() as conn:
        rows = (
            conn.cursor(row_factory=dict_row)
            .execute(
                "SELECT t.namespace, nullif(t.threshold, 0) AS threshold, t.wrong_hits,"
                " t.updated_at, t.reset_at, (SELECT count(DISTINCT f.user_id) FROM feedback f"
                "   WHERE f.namespace = t.namespace AND NOT f.good AND f.outcome = 'semantic'"
                "   AND f.at > coalesce(t.reset_at, '-infinity')) AS voters,"
                " (SELECT f.prompt || ' -> ' || f.matched FROM feedback f"
                "   WHERE f.namespace = t.namespace AND NOT f.good AND f.outcome = 'semantic'"
                "   ORDER BY f.at DESC LIMIT 1) AS latest"
                " FROM namespace_thresholds t ORDER BY t.updated_at DESC LIMIT 500"
            )
            .fetchall()
        )
    cfg = current_app.config
    return jsonify({"semantic_threshold": cfg["SEMANTIC_THRESHOLD"],
                    "quorum": cfg["FEEDBACK_QUORUM"], "namespaces": rows})  # fmt: skip


@bp.delete("/admin/namespaces/<namespace>/threshold")
@admin_required
def reset_threshold(namespace: str) -> ResponseReturnValue:
    with db.pool().connection() as conn:
        row = conn.execute(
            "UPDATE namespace_thresholds SET threshold = 0, wrong_hits = 0, reset_at = now(),"
            " updated_at = now() WHERE namespace = %s RETURNING reset_at",
            (namespace,),
        ).fetchone()
    if row is None:
        raise NotFound("no threshold recorded for that namespace")
    services().redis.hdel(services().keys.nsthreshold, namespace)
    return jsonify({"namespace": namespace, "threshold": None, "reset_at": row[0]})
