"""Shared pieces of the `candlecast` commands: exit codes, errors, the lazily loaded context."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from db.urls import safe_url
from jobs.config import Config, ConfigError, load_config, validate_ticker
from jobs.text import one_line

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_RUN_FAILED = 4
EXIT_LOCKED = 5
EXIT_INTERRUPTED = 6
RUN_EXIT_CODES = {
    "succeeded": EXIT_OK,
    "partial": EXIT_PARTIAL,
    "failed": EXIT_RUN_FAILED,
    "interrupted": EXIT_INTERRUPTED,
}

stdout = Console()
stderr = Console(stderr=True)


class CommandError(click.ClickException):
    """A failure reported as one line on stderr with exit code 1."""

    exit_code = EXIT_FAILURE

    def show(self, file: Any = None) -> None:
        click.echo(f"candlecast: error: {self.format_message()}", err=True)


class UsageError(CommandError):
    exit_code = EXIT_USAGE


def fail_cleanly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected errors (bad config, database unreachable, ...) into one stderr line; the
    traceback is logged at DEBUG level (shown with --verbose)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sqlalchemy.exc import DBAPIError, SQLAlchemyError

        from db.session import DatabaseFileError

        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            _log_traceback(exc)
            raise UsageError(one_line(str(exc))) from None
        except DatabaseFileError as exc:
            _log_traceback(exc)
            raise CommandError(one_line(str(exc))) from None
        except DBAPIError as exc:
            _log_traceback(exc)
            message = one_line(str(exc.orig)) or exc.orig.__class__.__name__
            raise CommandError(f"database error{_database(args)}: {message}") from None
        except SQLAlchemyError as exc:
            _log_traceback(exc)
            message = one_line(str(exc)) or exc.__class__.__name__
            raise CommandError(f"database error{_database(args)}: {message}") from None

    return wrapper


def _log_traceback(exc: BaseException) -> None:
    logging.getLogger("candlecast.cli").debug("traceback of the error below", exc_info=exc)


def _database(args: tuple[Any, ...]) -> str:
    """' (<database URL>)' for the command's AppContext once its config is loaded, else ''."""
    for arg in args:
        if isinstance(arg, AppContext) and arg._config is not None:
            return f" ({safe_url(arg._config.database.url)})"
    return ""


class AppContext:
    """Lazily loaded configuration and database handles for one CLI invocation."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def session_factory(self):
        from db.session import make_engine, make_session_factory

        return make_session_factory(make_engine(self.config.database.url))

    def tickers(
        self, option: str | None, *, name: str = "--tickers", configured_only: bool = True
    ) -> tuple[str, ...]:
        """The tickers named by the option (validated), or every configured ticker when it is
        absent. An empty value is a usage error, never "all"; so is a ticker that is not in
        [tickers] symbols, unless `configured_only` is False (a backtest may study any)."""
        if option is None:
            return self.config.tickers.symbols
        symbols = tuple(s.strip().upper() for s in option.split(",") if s.strip())
        if not symbols:
            raise UsageError(f"{name}: no ticker given (leave the option out for all of them)")
        for symbol in symbols:
            try:
                validate_ticker(symbol)
            except ValueError as exc:
                raise UsageError(f"{name}: {exc}") from None
        configured = self.config.tickers.symbols
        unknown = [s for s in symbols if s not in configured]
        if configured_only and unknown:
            raise UsageError(
                f"{name}: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a "
                f"configured ticker ([tickers] symbols: {', '.join(configured)})"
            )
        return symbols


pass_app = click.make_pass_decorator(AppContext)


def require_schema(config: Config) -> None:
    """Fail with a helpful message when the database has not been migrated yet."""
    from db import migrate

    if migrate.current(config.database.url) is None:
        raise CommandError(
            f"the database {safe_url(config.database.url)} has no schema; "
            "run `candlecast db upgrade` first"
        )


PLAIN_PROGRESS_EVERY_S = 5.0  # without a terminal: a progress line at most this often


@contextmanager
def backtest_progress() -> Iterator[Callable[[int, int, str], None]]:
    """A progress(done, total, message) callback on stderr: a rich bar with the ETA on a
    terminal; otherwise plain lines (the first step, then at most every few seconds, and the
    last), so a log or a pipe shows where a long backtest is."""
    if stderr.is_terminal:
        with progress_bar(eta=True) as bar:
            task = bar.add_task("backtest", total=None)
            yield lambda done, total, message: bar.update(
                task, completed=done, total=total, description=message
            )
        return
    began, last = time.monotonic(), [-math.inf]

    def plain(done: int, total: int, message: str) -> None:
        now = time.monotonic()
        if done not in (1, total) and now - last[0] < PLAIN_PROGRESS_EVERY_S:
            return
        last[0] = now
        elapsed = now - began
        eta = elapsed / done * (total - done) if done else 0.0
        stderr.print(
            f"backtest {done}/{total} ({100 * done / max(total, 1):.0f}%, "
            f"{elapsed:.0f} s, ETA {eta:.0f} s): {message}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    yield plain


def progress_bar(*, eta: bool = False) -> Progress:
    """A transient progress bar on stderr: description, bar, done/total, elapsed (and ETA)."""
    eta_columns = (TextColumn("ETA"), TimeRemainingColumn()) if eta else ()
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        *eta_columns,
        console=stderr,
        transient=True,
    )
