"""`candlecast web`: serve the app with gunicorn (a production WSGI server), never the scheduler.

Each worker process builds its own app (engine, session factory, model cache) after the fork.
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from jobs.config import Config

TIMEOUT_S = 120  # the first live forecast in a worker imports TensorFlow and loads a model


class CandlecastServer(BaseApplication):
    """gunicorn application whose workers run `web.create_app(config)`."""

    def __init__(self, config: Config, options: dict[str, Any]) -> None:
        self._config = config
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from web import create_app

        return create_app(self._config)


def gunicorn_options(config: Config, workers: int | None = None) -> dict[str, Any]:
    """gunicorn settings from the [web] section (`workers` overrides web.workers)."""
    count = workers if workers is not None else config.web.workers
    if count < 1:
        raise ValueError(f"workers must be >= 1, got {count}")
    return {
        "bind": f"{config.web.host}:{config.web.port}",
        "workers": count,
        "worker_class": "sync",
        "timeout": TIMEOUT_S,
        "graceful_timeout": 10,
        "preload_app": False,
        "proc_name": "candlecast-web",
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
    }


def serve(config: Config, *, workers: int | None = None) -> None:
    """Run gunicorn bound to web.host:web.port until it is stopped (SIGINT/SIGTERM)."""
    CandlecastServer(config, gunicorn_options(config, workers)).run()
