"""Log set-up of every candlecast process: one record per line on stderr, UTC timestamps.

`configure(settings, verbose=...)` installs one stderr handler on the root logger, formatted as
text (`2026-12-01T22:40:00.123Z INFO candlecast.scheduler: scheduler starting ...`) or as JSON
(one object per line: ts, level, logger, message, plus run_id / ticker where a call site passed
them with `extra=`). candlecast's own loggers log from `[logging] level` up; other libraries only
warnings and errors; `--verbose` is DEBUG for everything. The web server's gunicorn logs use the
same formatters (web.serve). Nothing is configured at import time.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.config import LoggingConfig

# Loggers whose records follow [logging] level (the rest: WARNING and up unless --verbose).
OWN_LOGGERS = ("candlecast", "web", "jobs", "db", "forecasting")
# `extra=` fields a record may carry; JSON lines include them when set.
CONTEXT_FIELDS = ("run_id", "ticker")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def iso_utc(created: float, msecs: float) -> str:
    """A record's time as ISO-8601 UTC with milliseconds: 2026-12-01T22:40:00.123Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """`<ISO-8601 UTC> <LEVEL> <logger>: <message>` (a traceback, with --verbose, follows)."""

    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_utc(record.created, record.msecs)


class JsonFormatter(logging.Formatter):
    """One JSON object per record and line: ts, level, logger, message [, run_id, ticker, exc]."""

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": iso_utc(record.created, record.msecs),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def formatter(kind: str) -> logging.Formatter:
    """The formatter of a `[logging] format` value ("text" or "json")."""
    return JsonFormatter() if kind == "json" else TextFormatter()


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted (as logging's last resort does)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr


class _Threshold(logging.Filter):
    """Own loggers from `own` up, every other logger from `other` up.

    Applied in the handler, so a logger level raised elsewhere (the daemon's INFO) cannot undercut
    a stricter `[logging] level`.
    """

    def __init__(self, own: int, other: int) -> None:
        super().__init__()
        self.own = own
        self.other = other

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name.split(".", 1)[0] in OWN_LOGGERS
        return record.levelno >= (self.own if own else self.other)


def level_number(name: str) -> int:
    """The logging level of a `[logging] level` value (any case); ValueError if unknown."""
    number = logging.getLevelName(name.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {name!r}")
    return number


def configure(
    settings: LoggingConfig | None = None, *, verbose: bool = False, keep: bool = False
) -> bool:
    """Install (or replace) candlecast's stderr handler; returns whether it did.

    Does nothing when the root logger has handlers that are not ours (logging configured by the
    host: pytest, an embedding application), nor with `keep=True` when ours is already there.
    """
    from jobs.config import LoggingConfig

    settings = settings or LoggingConfig()
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, StderrHandler)]
    if len(ours) != len(root.handlers) or (keep and ours):
        return False
    own = logging.DEBUG if verbose else level_number(settings.level)
    other = logging.DEBUG if verbose else logging.WARNING
    handler = StderrHandler()
    handler.setFormatter(formatter(settings.format))
    handler.addFilter(_Threshold(own, other))
    for old in ours:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(other)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(own)
    return True


def logs_are_json() -> bool:
    """Whether this process logs JSON lines (for machines: every failure gets its own record,
    even when the CLI also prints it for people)."""
    return any(
        isinstance(h, StderrHandler) and isinstance(h.formatter, JsonFormatter)
        for h in logging.getLogger().handlers
    )
