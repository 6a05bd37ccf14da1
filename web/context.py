"""The web app's per-process state and request helpers, for every module of web/: the app's
WebState (config, engine, sessions, model cache), this request's database session, the strict JSON
provider and the security headers. web/__init__.py builds the app from them; modules import them
from here, never from the `web` package, so the package and its modules import each other in one
direction only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import current_app, g
from flask.json.provider import DefaultJSONProvider
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from jobs.config import Config

if TYPE_CHECKING:
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
SECURITY_HEADER_ITEMS = tuple(SECURITY_HEADERS.items())

logger = logging.getLogger("candlecast.web")


def finite_or_null(obj: Any) -> Any:
    """`obj` with every NaN/inf float (in dicts, lists, tuples, at any depth) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite_or_null(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_null(value) for value in obj]
    return obj


class FiniteJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, but strict: NaN/Infinity are never emitted, they become null."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        default = kwargs.pop("default", self.default)
        kwargs["allow_nan"] = False
        kwargs["default"] = lambda o: finite_or_null(default(o))
        try:
            return super().dumps(obj, **kwargs)
        except ValueError:
            # Out of range float values (NaN/inf): the only ValueError json.dumps raises here.
            logger.warning("JSON response held NaN/inf; sent as null")
            return super().dumps(finite_or_null(obj), **kwargs)


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
