"""The `candlecast` command line: database migrations, market-data sync and inspection.

Exit codes: 0 success, 1 failure, 2 invalid usage or configuration.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from jobs.config import Config, ConfigError, load_config, validate_ticker

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

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
    """Turn expected errors (bad config, database unreachable, ...) into one stderr line."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sqlalchemy.exc import OperationalError, SQLAlchemyError

        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        except OperationalError as exc:
            raise CommandError(f"database error: {str(exc.orig).strip()}") from None
        except SQLAlchemyError as exc:
            raise CommandError(f"database error: {exc}") from None

    return wrapper


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

    def session_factory(self):  # noqa: ANN201 - sessionmaker type comes from the db layer
        from db.session import make_engine, make_session_factory

        return make_session_factory(make_engine(self.config.database.url))

    def tickers(self, option: str | None) -> tuple[str, ...]:
        """The tickers named by --tickers (validated), or every configured ticker."""
        if not option:
            return self.config.tickers.symbols
        symbols = tuple(s.strip().upper() for s in option.split(",") if s.strip())
        if not symbols:
            raise UsageError("--tickers: no ticker given")
        for symbol in symbols:
            try:
                validate_ticker(symbol)
            except ValueError as exc:
                raise UsageError(f"--tickers: {exc}") from None
        return symbols


pass_app = click.make_pass_decorator(AppContext)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="CANDLECAST_CONFIG",
    help="Configuration file (default: $CANDLECAST_CONFIG, else the project's config.toml).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug details to stderr.")
@click.version_option(package_name="candlecast")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """candlecast: nightly LSTM forecasts of the next four daily candles per ticker."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = AppContext(config_path)


@cli.group()
def db() -> None:
    """Create, migrate or inspect the database schema (Alembic)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@pass_app
@fail_cleanly
def db_upgrade(app: AppContext, revision: str) -> None:
    """Create the schema or migrate it to REVISION (same as `alembic upgrade head`)."""
    from db import migrate

    url = app.config.database.url
    migrate.upgrade(url, revision)
    click.echo(f"database at revision {migrate.current(url)} ({_safe_url(url)})")


@db.command("downgrade")
@click.argument("revision")
@pass_app
@fail_cleanly
def db_downgrade(app: AppContext, revision: str) -> None:
    """Migrate the schema down to REVISION ('base' drops every table and view)."""
    from db import migrate

    url = app.config.database.url
    migrate.downgrade(url, revision)
    click.echo(f"database at revision {migrate.current(url) or 'base'} ({_safe_url(url)})")


@db.command("current")
@pass_app
@fail_cleanly
def db_current(app: AppContext) -> None:
    """Print the schema revision the database is at."""
    from db import migrate

    click.echo(migrate.current(app.config.database.url) or "base (empty database)")


@cli.command()
@click.option("--tickers", "tickers_opt", help="Comma-separated tickers (default: all configured).")
@pass_app
@fail_cleanly
def sync(app: AppContext, tickers_opt: str | None) -> None:
    """Fetch new daily candles into the database (incremental, idempotent).

    Only sessions from a few before the last stored one onwards are fetched; a new ticker gets
    [data] history_years of history. Prints rows added/updated per ticker; exits 1 if any failed.
    """
    from forecasting.providers import make_provider
    from jobs.sync import sync_tickers

    config = app.config
    tickers = app.tickers(tickers_opt)
    _require_schema(config)
    provider = make_provider(
        config.data.provider,
        csv_dir=config.data.csv_dir,
        auto_adjust=config.data.yfinance_auto_adjust,
        retries=config.data.yfinance_retries,
        history_years=config.data.history_years,
    )
    factory = app.session_factory()
    with _progress() as progress:
        task = progress.add_task("sync", total=len(tickers))
        results = sync_tickers(
            config, factory, provider, tickers, on_done=lambda r: progress.advance(task)
        )
    table = Table("ticker", "added", "updated", "dropped", "first", "last", "error")
    for r in results:
        table.add_row(
            r.ticker,
            str(r.added),
            str(r.updated),
            str(r.dropped),
            str(r.first or ""),
            str(r.last or ""),
            r.error or "",
        )
    stdout.print(table)
    failed = [r.ticker for r in results if not r.ok]
    if failed:
        raise CommandError(f"sync failed for {', '.join(failed)}")


@cli.command()
@pass_app
@fail_cleanly
def tickers(app: AppContext) -> None:
    """List configured tickers with the date range and count of their stored candles."""
    from db import repository

    _require_schema(app.config)
    with app.session_factory()() as session:
        ranges = {r.ticker: r for r in repository.candle_ranges(session)}
    table = Table("ticker", "exchange", "first", "last", "sessions")
    for symbol in app.config.tickers.symbols:
        r = ranges.get(symbol)
        table.add_row(
            symbol,
            app.config.tickers.exchange_for(symbol),
            str(r.first) if r else "-",
            str(r.last) if r else "-",
            str(r.count) if r else "0",
        )
    stdout.print(table)


def _require_schema(config: Config) -> None:
    """Fail with a helpful message when the database has not been migrated yet."""
    from db import migrate

    if migrate.current(config.database.url) is None:
        raise CommandError(
            f"the database {_safe_url(config.database.url)} has no schema; "
            "run `candlecast db upgrade` first"
        )


def _safe_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
    )


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    try:
        cli.main(args=argv, prog_name="candlecast", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("candlecast: aborted", err=True)
        return EXIT_FAILURE
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
