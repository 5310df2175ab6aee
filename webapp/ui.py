"""The browser frontend: static files from frontend/, no build step, served at /."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, send_from_directory
from flask.typing import ResponseReturnValue

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"

bp = Blueprint("ui", __name__)


@bp.get("/")
def index() -> ResponseReturnValue:
    return send_from_directory(FRONTEND, "index.html")


@bp.get("/ui/<path:name>")
def asset(name: str) -> ResponseReturnValue:
    return send_from_directory(FRONTEND, name)
