"""`candlecast web`: serve the app with gunicorn (a production WSGI server), never the scheduler.

Each worker process builds its own app (engine, session factory, model cache) after the fork.

Workers are gunicorn's threaded workers (gthread) with `[web] threads` threads each, so a few slow
clients cannot occupy the whole server the way they could with one-request-at-a-time sync workers.
`CandlecastWorker` adds two things to gunicorn's ThreadWorker:

* every client socket is bounded by `[web] read_timeout_s`: while a request is read (or a response
  written) a client that stalls that long is disconnected, so its thread is freed instead of being
  held forever (gthread alone only bounds the wait for the *first* byte);
* the `Server` header says `candlecast`, not `gunicorn` (gunicorn has no setting for it; its
  header comes from `gunicorn.http.wsgi.SERVER`, which the worker sets in its own process).

gunicorn's own error answers (400 bad request line or header, 414 URI too long, 431 headers too
large, ...) are written by gunicorn before any request reaches Flask: they stay small HTML bodies
without the app's security headers (and without a `Server` header). gunicorn offers no hook for
them, and for most of them the request path, hence "API or page", is not even known.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
from typing import Any

import gunicorn.http.wsgi as gunicorn_wsgi
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.workers.gthread import ThreadWorker

from jobs import logs
from jobs.config import Config, WebConfig

SERVER_NAME = "candlecast"
# The access log line after the timestamp, level and logger (gunicorn.access): client, request
# line, status, response bytes, milliseconds, user agent. ([web] access_log turns it on.)
ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'

log = logging.getLogger("gunicorn.error")


class CandlecastServer(BaseApplication):
    """gunicorn application whose workers run `web.create_app(config)`."""

    def __init__(self, config: Config, options: dict[str, Any]) -> None:
        self.config = config  # read by CandlecastWorker (self.app) for [web] read_timeout_s
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from web import create_app

        return create_app(self.config)


class CandlecastLogger(GunicornLogger):
    """gunicorn's logger with candlecast's line format (jobs.logs) on its error and access logs,
    the access log written to stderr (gunicorn's "-" is stdout for it)."""

    log_format = "text"  # [logging] format; see logger_class

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        formatter = logs.formatter(self.log_format)
        for gunicorn_log in (self.error_log, self.access_log):
            for handler in gunicorn_log.handlers:
                if not getattr(handler, "_gunicorn", False):
                    continue
                handler.setFormatter(formatter)
                if gunicorn_log is self.access_log and type(handler) is logging.StreamHandler:
                    handler.setStream(sys.stderr)


@functools.cache
def logger_class(log_format: str) -> type[CandlecastLogger]:
    """The gunicorn logger class for a [logging] format (gunicorn takes a class, not options)."""
    return type(f"CandlecastLogger_{log_format}", (CandlecastLogger,), {"log_format": log_format})


class _BoundedSocket(socket.socket):
    """A client socket whose "blocking" mode waits at most `read_timeout` per read or write.

    gunicorn switches client sockets between non-blocking (while the worker's poller watches them)
    and blocking (while a thread reads the request or writes the response); here blocking means
    a timeout. A read that times out is reported as end of stream, which gunicorn handles as a
    client that went away (the connection is closed, the thread is free again).
    """

    read_timeout: float = float(WebConfig().read_timeout_s)

    def setblocking(self, flag: bool) -> None:
        if flag:
            self.settimeout(self.read_timeout)
        else:
            super().setblocking(False)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        try:
            return super().recv(bufsize, flags)
        except TimeoutError:
            log.debug("client sent nothing for %s s: treated as gone", self.gettimeout())
            return b""


class _BoundingListener:
    """The listener as ThreadWorker.accept sees it, handing out _BoundedSocket clients."""

    def __init__(self, listener: Any, read_timeout: float) -> None:
        self._listener = listener
        self._read_timeout = read_timeout

    def accept(self) -> tuple[_BoundedSocket, Any]:
        client, address = self._listener.accept()
        bounded = _BoundedSocket(client.family, client.type, client.proto, fileno=client.detach())
        bounded.read_timeout = self._read_timeout
        return bounded, address

    def getsockname(self) -> Any:
        return self._listener.getsockname()


class CandlecastWorker(ThreadWorker):
    """gunicorn's gthread worker with bounded client sockets and no `Server: gunicorn` banner."""

    def init_process(self) -> None:
        gunicorn_wsgi.SERVER = SERVER_NAME  # the Server header of every response of this worker
        gunicorn_wsgi.SERVER_SOFTWARE = SERVER_NAME  # the WSGI environ's SERVER_SOFTWARE
        os.environ["SERVER_SOFTWARE"] = SERVER_NAME
        super().init_process()

    def accept(self, listener: Any) -> None:
        config = getattr(self.app, "config", None)
        web = config.web if isinstance(config, Config) else WebConfig()
        super().accept(_BoundingListener(listener, float(web.read_timeout_s)))


def gunicorn_options(config: Config, workers: int | None = None) -> dict[str, Any]:
    """gunicorn settings from the [web] section (`workers` overrides web.workers)."""
    web = config.web
    count = workers if workers is not None else web.workers
    if count < 1:
        raise ValueError(f"workers must be >= 1, got {count}")
    return {
        "bind": f"{web.host}:{web.port}",
        "workers": count,
        "worker_class": CandlecastWorker,
        "threads": web.threads,
        # gthread's main loop reports to the arbiter every second whatever its threads do, so this
        # only restarts a worker that hangs as a whole; the first live forecast in a worker
        # (TensorFlow import, model load) runs in a thread and is not cut by it.
        "timeout": web.timeout_s,
        "keepalive": web.keepalive_s,
        "graceful_timeout": 10,
        "preload_app": False,
        "proc_name": "candlecast-web",
        # gunicorn >= 25 opens a control socket at a per-user path (~/.gunicorn/gunicorn.ctl or
        # $XDG_RUNTIME_DIR/gunicorn.ctl) shared by every instance of the user: never open it.
        "control_socket_disable": True,
        "accesslog": "-" if web.access_log else None,  # "-": stderr (CandlecastLogger)
        "access_log_format": ACCESS_LOG_FORMAT,
        "errorlog": "-",
        "loglevel": config.logging.level.lower(),
        "logger_class": logger_class(config.logging.format),
    }


def serve(config: Config, *, workers: int | None = None) -> None:
    """Run gunicorn bound to web.host:web.port until it is stopped (SIGINT/SIGTERM).

    The app's own log records go through jobs.logs (configured here unless the CLI already did).
    """
    logs.configure(config.logging, keep=True)
    CandlecastServer(config, gunicorn_options(config, workers)).run()


def main(argv: list[str] | None = None) -> None:
    """`python -m web.serve [--config FILE] [--workers N] [--host H] [--port P]`: what
    `candlecast web` runs (it replaces itself with this process)."""
    import argparse
    from dataclasses import replace

    from jobs.config import load_config

    parser = argparse.ArgumentParser(prog="candlecast web")
    parser.add_argument("--config")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    web = replace(config.web, host=args.host or config.web.host, port=args.port or config.web.port)
    serve(replace(config, web=web), workers=args.workers)


if __name__ == "__main__":
    main()
