"""The `candlecast` command line: migrations, sync, the nightly run, backfill, forecasts, backtests,
the scheduler daemon and the web server.

Exit codes: 0 success, 1 failure, 2 invalid usage or configuration, 3 run partial (some tickers
failed), 4 run failed (every ticker failed), 5 another run holds the lock, 6 run interrupted.
"""

from __future__ import annotations

import os
import sys
from typing import Literal

import click
from rich.table import Table

from db.urls import safe_url
from jobs import cli_model, cli_run, logs
from jobs.cli_support import (
    EXIT_FAILURE,
    EXIT_OK,
    AppContext,
    CommandError,
    fail_cleanly,
    pass_app,
    progress_bar,
    require_schema,
    stdout,
)
from jobs.config import Config


def first_sentence(text: str | None) -> str:
    """The first sentence of a docstring, whole (click's short help cuts it at ~45 chars)."""
    paragraph = " ".join((text or "").strip().split("\n\n", 1)[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


class FirstSentenceGroup(click.Group):
    """A group whose --help lists each command with the first sentence of its help, whole."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, first_sentence(command.help)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=FirstSentenceGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="CANDLECAST_CONFIG",
    help=(
        "Configuration file. Default: $CANDLECAST_CONFIG; else, in a source checkout, the"
        " repository's config.toml; else ./config.toml of the current directory if there is one;"
        " else the packaged default (`candlecast init` writes a copy), whose relative paths such"
        " as var/candlecast.db then resolve against the current directory."
    ),
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug details to stderr.")
@click.version_option(package_name="candlecast")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """candlecast: nightly forecasts of the next four daily candles per ticker."""
    logs.configure(verbose=verbose)  # the defaults until the config is read (it has [logging])
    ctx.obj = _LoggingAppContext(config_path, verbose)


class _LoggingAppContext(AppContext):
    """The AppContext that applies the config's [logging] section as soon as it is loaded (a
    config error thus never logs anything before its one-line message)."""

    def __init__(self, config_path: str | None, verbose: bool) -> None:
        super().__init__(config_path)
        self.verbose = verbose

    @property
    def config(self) -> Config:
        first = self._config is None
        config = super().config
        if first:
            logs.configure(config.logging, verbose=self.verbose)
        return config


@cli.command()
@click.argument("directory", required=False, default=".", type=click.Path(file_okay=False))
def init(directory: str) -> None:
    """Write a commented starter config.toml (the packaged default) into DIRECTORY.

    DIRECTORY defaults to the current directory and is created (with its parents) when missing.
    An existing config.toml is never overwritten. Relative paths in it (the SQLite file
    var/candlecast.db) resolve against DIRECTORY.
    """
    from pathlib import Path

    from jobs.config import in_checkout, packaged_config_path

    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create {folder}: {exc.strerror or exc}") from None
    target = folder / "config.toml"
    text = packaged_config_path().read_text(encoding="utf-8")
    try:
        with open(target, "x", encoding="utf-8") as file:
            file.write(text)
    except FileExistsError:
        raise CommandError(f"{target} already exists (not overwritten)") from None
    except OSError as exc:
        raise CommandError(f"cannot write {target}: {exc.strerror}") from None
    hint = "next: candlecast db upgrade, then candlecast run-once"
    if in_checkout():
        hint = f"a checkout reads the repository's config.toml by default: use --config {target}"
    click.echo(f"wrote {target}; {hint}", err=True)


@cli.group(cls=FirstSentenceGroup)
def db() -> None:
    """Create, migrate or inspect the database schema (Alembic)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@pass_app
@fail_cleanly
def db_upgrade(app: AppContext, revision: str) -> None:
    """Create the schema or migrate it to REVISION (same as `alembic upgrade head`)."""
    _migrate(app, "upgrade", revision)


@db.command("downgrade")
@click.argument("revision")
@pass_app
@fail_cleanly
def db_downgrade(app: AppContext, revision: str) -> None:
    """Migrate the schema down to REVISION ('base' drops every table and view)."""
    _migrate(app, "downgrade", revision)


def _migrate(app: AppContext, way: Literal["upgrade", "downgrade"], revision: str) -> None:
    """db.migrate's upgrade or downgrade to REVISION, then 'database at revision R (URL,
    password hidden)'."""
    from db import migrate

    url = app.config.database.url
    getattr(migrate, way)(url, revision)
    click.echo(f"database at revision {migrate.current(url) or 'base'} ({safe_url(url)})")


@db.command("current")
@pass_app
@fail_cleanly
def db_current(app: AppContext) -> None:
    """Print the schema revision the database is at."""
    from db import migrate

    click.echo(migrate.current(app.config.database.url) or "base (empty database)")


@db.command("prune")
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    help="Newest versions per ticker whose artifacts stay (default: [model] keep_versions).",
)
@click.option("--dry-run", is_flag=True, help="Only print what would be dropped.")
@pass_app
@fail_cleanly
def db_prune(app: AppContext, keep: int | None, dry_run: bool) -> None:
    """Drop the .keras bytes of old model versions; their rows and metadata stay.

    Per ticker the newest KEEP versions and those serving its latest forecasts keep theirs (the
    nightly run does the same after each run). Takes the run lock: exits 5 while a run holds it
    (--dry-run writes nothing and does not). Freed space is reused by the database; VACUUM
    returns it to the file system.
    """
    from db.model_store import prune_artifacts
    from db.run_lock import RunLockedError, RunLockHandle
    from db.session import make_engine, make_session_factory

    require_schema(app.config)
    keep = keep or app.config.model.keep_versions
    engine = make_engine(app.config.database.url)
    lock = RunLockHandle(engine)
    try:
        if not dry_run:
            try:
                lock.acquire()
            except RunLockedError as exc:
                raise cli_run.LockedError(f"{exc}; nothing pruned") from None
        with make_session_factory(engine).begin() as session:
            result = prune_artifacts(session, keep=keep, dry_run=dry_run)
    finally:
        lock.release()  # a no-op when not acquired
        engine.dispose()
    if result.tickers:
        table = Table("ticker", "versions", "MB")
        for ticker, pruned in result.tickers.items():
            table.add_row(ticker, str(pruned.versions), f"{pruned.bytes / 1e6:.1f}")
        stdout.print(table)
    verb = "would drop" if dry_run else "dropped"
    click.echo(
        f"{verb} the artifacts of {result.versions} model versions "
        f"({result.bytes / 1e6:.1f} MB), keeping the newest {keep} per ticker and those "
        "serving the latest forecasts"
    )


@cli.command()
@click.option("--tickers", "tickers_opt", help="Comma-separated tickers (default: all configured).")
@pass_app
@fail_cleanly
def sync(app: AppContext, tickers_opt: str | None) -> None:
    """Fetch new daily candles into the database (incremental, idempotent).

    Only sessions from a few before the last stored one onwards are fetched; a new ticker gets
    [data] history_years of history. Prints rows added/updated per ticker; exits 1 if any failed.
    """
    from jobs.sync import provider_for, sync_tickers

    config = app.config
    tickers = app.tickers(tickers_opt)
    require_schema(config)
    provider = provider_for(config)
    factory = app.session_factory()
    with progress_bar() as progress:
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
    for r in results:
        if r.rebased:
            stdout.print(
                f"{r.ticker}: provider prices changed on stored sessions (x{r.price_factor:.6g}, "
                "e.g. a split or dividend): replaced the whole stored history",
                soft_wrap=True,
            )
    failed = [r.ticker for r in results if not r.ok]
    if failed:
        raise CommandError(f"sync failed for {', '.join(failed)}")


@cli.command()
@pass_app
@fail_cleanly
def tickers(app: AppContext) -> None:
    """List configured tickers with the date range and count of their stored candles."""
    from db import repository

    require_schema(app.config)
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


@cli.command()
@click.option(
    "--workers", type=click.IntRange(min=1), help="Worker processes (default: [web] workers)."
)
@click.option("--host", help="Address to bind (default: [web] host).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: [web] port).")
@pass_app
@fail_cleanly
def web(app: AppContext, workers: int | None, host: str | None, port: int | None) -> None:
    """Serve the read-only web app and JSON API with gunicorn (production WSGI server).

    The app opens the database read-only and never writes; the scheduler never runs inside it.
    For development, `flask --app web run` works too.
    """
    config = app.config
    require_schema(config)
    args = [sys.executable, "-m", "web.serve"]
    if app.config_path:
        args += ["--config", app.config_path]
    for flag, value in (("--workers", workers), ("--host", host), ("--port", port)):
        if value is not None:
            args += [flag, str(value)]
    shown = f"{host or config.web.host}:{port or config.web.port}"
    click.echo(f"serving on http://{shown}/", err=True)
    sys.stderr.flush()
    # The web app runs in this process, replaced by `python -m web.serve` (same pid, signals and
    # exit code): the command line never imports the web package (jobs never imports web).
    os.execv(sys.executable, args)


class Degraded(click.ClickException):
    """`candlecast status` found problems (already printed): exit 1 without another message."""

    exit_code = EXIT_FAILURE

    def show(self, file: object = None) -> None:
        pass


@cli.command()
@pass_app
@fail_cleanly
def status(app: AppContext) -> None:
    """Print whether the service is ok or degraded (the verdict of the web app's /readyz).

    Degraded when the latest finished run failed or was partial, or when the run last due has
    not succeeded within [schedule] stale_after_hours: one line per reason. Exits 0 when ok,
    1 when degraded (or when the database cannot be read).
    """
    from jobs.health import check

    require_schema(app.config)
    with app.session_factory()() as session:
        verdict = check(session, app.config)
        latest, success = verdict.latest_run, verdict.last_success
        if verdict.ok:
            summary = f"latest finished run {latest.id} {latest.status}" if latest else "no runs"
            if success is not None and success.finished_at is not None:
                summary += f"; last success run {success.id} at {success.finished_at.isoformat()}"
            click.echo(f"ok: {summary}")
            return
        for reason in verdict.reasons:
            click.echo(f"degraded: {reason}")
    raise Degraded("degraded")


cli.add_command(cli_run.run_once)
cli.add_command(cli_run.backfill)
cli.add_command(cli_run.scheduler)
cli.add_command(cli_model.forecast)
cli.add_command(cli_model.backtest)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
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
