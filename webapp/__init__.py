"""Flock's web tier: `create_app()` builds the Flask app (gunicorn 'webapp:create_app()')."""

from __future__ import annotations

from typing import Any

from flask import Flask

from settings import Settings
from webapp import (
    api,
    auth,
    bodies,
    compat_ollama,
    compat_openai,
    config,
    db,
    embed,
    entries,
    errors,
    fastpath,
    feedback,
    openapi,
    ops,
    security,
    services,
    ui,
)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, static_folder=None)
    # The factory runs once per web process: that is when the environment is read.
    app.config.from_mapping(config.from_settings(Settings.from_env()))
    if test_config:
        app.config.from_mapping(test_config)
    if not app.config["SECRET_KEY"]:
        # No fallback: a guessable key would let anyone forge a session cookie.
        raise RuntimeError("SECRET_KEY is not set (make run sets a development-only one)")
    errors.init_app(app)
    security.init_app(app)
    db.init_app(app)
    services.init_app(app)
    auth.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(entries.bp)
    app.register_blueprint(feedback.bp)
    app.register_blueprint(compat_openai.bp)
    app.register_blueprint(compat_ollama.bp)
    app.register_blueprint(embed.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(ui.bp)
    fastpath.init_app(app)
    bodies.init_app(app)  # last: its middleware wraps the fast path too
    return app
