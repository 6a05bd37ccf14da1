"""candlecast's read-only web app: JSON API (web.api) and HTML pages with charts (web.pages).

`create_app(config)` builds everything the app needs (a read-only engine, a session factory, a model
cache); nothing happens at import time. `flask --app web run` calls `create_app()` with the default
configuration.

JSON responses are strict JSON: the app's JSON provider (FiniteJSONProvider) never emits NaN or
Infinity; a non-finite float anywhere in a response body is sent as null (and logged), so a bad
value reaching a view degrades one field instead of producing a body that strict parsers reject.

A SQLite database file is followed (db.session): when it is deleted, every request answers 503
"database file missing" (/healthz included); when another file is put in its place, the next
request reads it, and the model cache (keyed by model version id) starts empty again.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g
from sqlalchemy import Engine

from db.session import make_engine, make_session_factory, on_file_change
from jobs.config import Config, load_config
from web.context import (
    MAX_BODY_BYTES,
    SECURITY_HEADER_ITEMS,
    SECURITY_HEADERS,
    STATE_KEY,
    FiniteJSONProvider,
    WebState,
    db_session,
    finite_or_null,
    state,
)
from web.live import ModelCache

logger = logging.getLogger("candlecast.web")


def create_app(config: Config | None = None, *, engine: Engine | None = None) -> Flask:
    """Build the Flask app for `config` (default: load_config()); `engine` overrides the URL's."""
    from web.api import bp as api_bp
    from web.errors import register_error_handlers
    from web.fast_predict import PredictFastPath
    from web.health import bp as health_bp
    from web.metrics import install_metrics
    from web.pages import bp as pages_bp

    config = config if config is not None else load_config()
    engine = engine if engine is not None else make_engine(config.database.url, read_only=True)
    app = Flask(__name__)
    app.json = FiniteJSONProvider(app)
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    web_state = WebState(
        config=config,
        engine=engine,
        sessions=make_session_factory(engine),
        models=ModelCache(),
    )
    app.extensions[STATE_KEY] = web_state

    def _new_database_file() -> None:
        logger.warning("the database file was replaced: reading the new one")
        web_state.models = ModelCache(web_state.models.maxsize)  # version ids may mean other models

    on_file_change(engine, _new_database_file)
    app.register_blueprint(api_bp)
    app.register_blueprint(pages_bp)
    app.register_blueprint(health_bp)
    install_metrics(app, lambda: web_state.sessions, config.tickers.symbols)
    register_error_handlers(app)
    # Repeated POST /predict bodies with a stored answer are answered before Flask.
    app.wsgi_app = PredictFastPath(app, SECURITY_HEADER_ITEMS)  # type: ignore[method-assign]

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    @app.after_request
    def _security_headers(response: Response) -> Response:
        # A view's own value wins. One pass over the few headers instead of a setdefault per
        # header (each one scans and validates): ~2 us instead of ~9 us on every response.
        headers = response.headers
        present = {name.lower() for name, _ in headers}
        for name, value in SECURITY_HEADER_ITEMS:
            if name.lower() not in present:
                headers.add(name, value)
        return response

    return app


__all__ = [
    "SECURITY_HEADERS",
    "FiniteJSONProvider",
    "create_app",
    "db_session",
    "finite_or_null",
    "state",
]
