"""candlecast's read-only web app: JSON API (web.api) and HTML pages with charts (web.pages).

`create_app(config)` builds everything the app needs (a read-only engine, a session factory, a model
cache); nothing happens at import time. `flask --app web run` calls `create_app()` with the default
configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, Response, current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.session import make_engine, make_session_factory
from jobs.config import Config, load_config
from web.live import ModelCache

MAX_BODY_BYTES = 16 * 1024
STATE_KEY = "candlecast"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"
    ),
}


@dataclass
class WebState:
    """Per-app (hence per-process) resources."""

    config: Config
    engine: Engine
    sessions: sessionmaker[Session]
    models: ModelCache


def state() -> WebState:
    """The current app's WebState."""
    return current_app.extensions[STATE_KEY]


def db_session() -> Session:
    """This request's session, opened on first use and closed on teardown."""
    if "db_session" not in g:
        g.db_session = state().sessions()
    return g.db_session


def create_app(config: Config | None = None, *, engine: Engine | None = None) -> Flask:
    """Build the Flask app for `config` (default: load_config()); `engine` overrides the URL's."""
    from web.api import bp as api_bp
    from web.errors import register_error_handlers
    from web.pages import bp as pages_bp

    config = config if config is not None else load_config()
    engine = engine if engine is not None else make_engine(config.database.url, read_only=True)
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[STATE_KEY] = WebState(
        config=config,
        engine=engine,
        sessions=make_session_factory(engine),
        models=ModelCache(),
    )
    app.register_blueprint(api_bp)
    app.register_blueprint(pages_bp)
    register_error_handlers(app)

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return app


__all__ = ["create_app", "db_session", "state"]
