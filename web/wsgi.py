"""WSGI entry point for servers given a module path: `gunicorn web.wsgi:app`.

Importing this module loads the default configuration ($CANDLECAST_CONFIG or config.toml).
"""

from __future__ import annotations

from jobs.config import load_config
from web import create_app

app = create_app(load_config())
