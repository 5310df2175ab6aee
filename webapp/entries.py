"""Cache entries API and stats (feedback: webapp/feedback.py).

Users see shared entries and their own private ones, and may invalidate what they
caused; admins see and invalidate everything. Another user's shared entry is listed but
not theirs to invalidate (403): feedback is how they say it is wrong, a vote. Invalidation
reaches PostgreSQL (the row is marked), Redis (the hot copy and its aliases) and every
semantic index.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from psycopg.rows import dict_row

from webapp import db
from webapp.auth import User, admin_required, current_user, login_required
from webapp.errors import BadRequest, Forbidden, NotFound
from webapp.services import services

bp = Blueprint("entries", __name__, url_prefix="/api/v1")
MAX_AGE_S = 1000 * 366 * 24 * 3600  # a thousand years: older than any entry

_FIELDS = (
    "id, model, prompt, response, scope, owner_id, created_at, expires_at, hits, last_hit_at,"
    " invalidated_at, invalidated_reason"
)


def _visible(user: User) -> tuple[str, tuple[Any, ...]]:
    if user.is_admin:
        return "TRUE", ()
    return "(scope = 'shared' OR owner_id = %s)", (user.id,)


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name, str(default))
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(f"'{name}' must be an integer") from exc
    if not low <= value <= high:
        raise BadRequest(f"'{name}' must be between {low} and {high}")
    return value


@bp.get("/entries")
@login_required
def list_entries() -> ResponseReturnValue:
    where, params = _visible(current_user())
    clauses, args = [where, "invalidated_at IS NULL", "expires_at > now()"], list(params)
    if q := request.args.get("q"):
        clauses.append("(prompt ILIKE %s OR response ILIKE %s)")
        args += [f"%{q}%", f"%{q}%"]
    if model := request.args.get("model"):
        clauses.append("model = %s")
        args.append(model)
    limit = _int_arg("limit", 50, 1, 500)
    offset = _int_arg("offset", 0, 0, 10**9)
    with db.pool().connection() as conn:
        rows = (
            conn.cursor(row_factory=dict_row)
            .execute(
                f"SELECT {_FIELDS} FROM cache_entries WHERE {' AND '.join(clauses)}"
                f" ORDER BY created_at DESC LIMIT %s OFFSET %s",
                (*args, limit, offset),
            )
            .fetchall()
        )
    return jsonify({"entries": rows, "limit": limit, "offset": offset})


def _get_visible(entry_id: str) -> dict[str, Any]:
    row = services().repo.by_id(entry_id)
    user = current_user()
    if row is None or not (user.is_admin or row["scope"] == "shared" or row["owner_id"] == user.id):
        raise NotFound("no such entry")  # another's private entry does not exist for you
    return row


@bp.get("/entries/<entry_id>")
@login_required
def show_entry(entry_id: str) -> ResponseReturnValue:
    row = _get_visible(entry_id)
    row.pop("key", None)
    row.pop("namespace", None)
    return jsonify(row)


@bp.delete("/entries/<entry_id>")
@login_required
def invalidate_entry(entry_id: str) -> ResponseReturnValue:
    row = _get_visible(entry_id)
    user = current_user()
    if not user.is_admin and row["owner_id"] != user.id:
        raise Forbidden("only the user who caused an entry, or an admin, may invalidate it")
    removed = services().repo.invalidate("invalidated", entry_id=entry_id)
    services().forget(removed)
    return jsonify({"invalidated": [r.id for r in removed]})


@bp.post("/entries/invalidate")
@admin_required
def invalidate_many() -> ResponseReturnValue:
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not ({"model", "older_than_s"} & set(body)):
        raise BadRequest("give 'model' and/or 'older_than_s'")
    model, age = body.get("model"), body.get("older_than_s")
    if "model" in body and not isinstance(model, str):
        raise BadRequest("'model' must be a string")
    if "older_than_s" in body and (
        isinstance(age, bool) or not isinstance(age, int | float) or not 0 <= age <= MAX_AGE_S
    ):
        # Bounded: PostgreSQL's timestamps end, and now() minus more is an error (a 500).
        raise BadRequest(f"'older_than_s' must be a number of seconds from 0 to {MAX_AGE_S}")
    removed = services().repo.invalidate("invalidated", model=model, older_than_s=age)
    services().forget(removed)
    return jsonify({"invalidated": len(removed)})


@bp.get("/stats")
@login_required
def stats() -> ResponseReturnValue:
    window = _int_arg("window", 3600, 1, 366 * 24 * 3600)
    with db.pool().connection() as conn:
        rows = (
            conn.cursor(row_factory=dict_row)
            .execute(
                "SELECT outcome, count(*) AS n, sum(tokens_saved) AS tokens_saved,"
                " percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_ms,"
                " percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95_ms"
                " FROM request_log WHERE at > now() - make_interval(secs => %s)"
                " GROUP BY outcome",
                (window,),
            )
            .fetchall()
        )
        namespaces = (
            conn.cursor(row_factory=dict_row)
            .execute(
                "SELECT left(namespace, 16) AS namespace, threshold, wrong_hits, updated_at"
                " FROM namespace_thresholds WHERE threshold > 0 ORDER BY updated_at DESC LIMIT 50"
            )
            .fetchall()
        )
        audits = (
            conn.cursor(row_factory=dict_row)
            .execute(
                "SELECT left(namespace, 16) AS namespace, count(*) AS audited,"
                " count(*) FILTER (WHERE NOT correct) AS wrong, max(at) AS last"
                " FROM audits WHERE at > now() - make_interval(secs => %s)"
                " GROUP BY namespace ORDER BY max(at) DESC LIMIT 50",
                (window,),
            )
            .fetchall()
        )
    by = {r["outcome"]: r for r in rows}
    audited = sum(a["audited"] for a in audits)
    wrong = sum(a["wrong"] for a in audits)
    answered = sum(r["n"] for o, r in by.items() if o != "error")
    hits = sum(by[o]["n"] for o in ("exact", "semantic", "coalesced") if o in by)
    return jsonify(
        {
            "window_s": window,
            "semantic_threshold": current_app.config["SEMANTIC_THRESHOLD"],
            "namespace_thresholds": namespaces,
            "requests": sum(r["n"] for r in rows),
            "counts": {o: by[o]["n"] if o in by else 0 for o in _OUTCOMES},
            "hit_rate": hits / answered if answered else None,
            "llm_calls": by["miss"]["n"] if "miss" in by else 0,
            "llm_calls_saved": hits,
            "tokens_saved": sum(int(r["tokens_saved"] or 0) for r in rows),
            # Semantic hits answered again and judged (AUDIT_RATE); the error rate they
            # measure is what SEMANTIC_MAX_ERROR bounds.
            "audits": {
                "audited": audited,
                "wrong": wrong,
                "error_rate": wrong / audited if audited else None,
                "max_error": current_app.config["SEMANTIC_MAX_ERROR"],
                "audit_rate": current_app.config["AUDIT_RATE"],
                "namespaces": audits,
            },
            "latency_ms": {
                o: {"p50": by[o]["p50_ms"], "p95": by[o]["p95_ms"]} for o in _OUTCOMES if o in by
            },
        }
    )


_OUTCOMES = ("exact", "semantic", "coalesced", "miss", "error")
