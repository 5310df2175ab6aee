"""Security headers on every response, the UI's and the API's alike.

The Content-Security-Policy matches frontend/: its scripts, styles and requests all come
from this origin, the only image is the `data:` favicon, and nothing may frame it (nor
may any page frame it: clickjacking). webapp.fastpath answers below Flask and adds the same.
"""

from __future__ import annotations

from flask import Flask, Response

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


def init_app(app: Flask) -> None:
    @app.after_request
    def _secure(resp: Response) -> Response:
        for name, value in HEADERS:
            resp.headers.setdefault(name, value)
        return resp
