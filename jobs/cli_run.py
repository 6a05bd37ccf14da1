"""`candlecast run-once`, `backfill` and `scheduler`: the nightly job by hand or on schedule."""

from __future__ import annotations

import logging
import signal
import threading

import click
from rich import box
from rich.table import Table

from jobs.cli_support import (
    EXIT_LOCKED,
    EXIT_OK,
    RUN_EXIT_CODES,
    AppContext,
    CommandError,
    fail_cleanly,
    pass_app,
    require_schema,
    stderr,
    stdout,
)
from jobs.stop_signals import on_stop_signals

log = logging.getLogger("candlecast.cli")


class LockedError(CommandError):
    """Another run holds the database's run lock."""

    exit_code = EXIT_LOCKED


class RunExit(CommandError):
    """A run that ended partial, failed or interrupted: its status decides the exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = code


def _stop_on_signals() -> threading.Event:
    """SIGTERM/SIGINT/SIGHUP set the returned flag: the ticker in progress finishes, the run ends
    `interrupted`."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        stderr.print(
            f"{signal.Signals(signum).name}: finishing the ticker in progress, then stopping"
        )
        stop.set()

    on_stop_signals(handler)  # SIGTERM, SIGINT and SIGHUP (jobs.stop_signals)
    return stop


def _outcome_table(title: str, outcomes) -> Table:
    """One row per ticker that fits 80 columns (the closes never wrap). A failed ticker's error
    is not repeated here: it was printed on its own line as the ticker finished."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("ticker", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("s", justify="right", no_wrap=True)  # seconds (training included)
    table.add_column("model", justify="right", no_wrap=True)
    table.add_column("closes h1..h4", no_wrap=True)
    for o in outcomes:
        table.add_row(
            o.ticker,
            o.status,
            f"{o.duration_s:.0f}",
            f"v{o.model_version_id}" if o.model_version_id else "",
            " ".join(f"{c:.2f}" for c in o.closes),
        )
    return table


def _pipeline(app: AppContext):
    from jobs.pipeline import Pipeline

    require_schema(app.config)
    return Pipeline(app.config, stop_event=_stop_on_signals(), on_ticker=_print_progress)


def _print_progress(outcome) -> None:
    """One stderr line per finished ticker, so a long run shows where it is."""
    detail = f": {outcome.error}" if outcome.error else ""
    stderr.print(
        f"{outcome.ticker} {outcome.status} in {outcome.duration_s:.1f} s{detail}",
        markup=False,  # errors may hold [brackets]
        highlight=False,
        soft_wrap=True,  # one line per ticker, however long its error
    )


@click.command("run-once")
@click.option(
    "--as-of",
    type=click.DateTime(["%Y-%m-%d"]),
    help="As-of session (YYYY-MM-DD); default: the latest stored session on or before today.",
)
@click.option("--tickers", "tickers_opt", help="Comma-separated tickers (default: all configured).")
@pass_app
@fail_cleanly
def run_once(app: AppContext, as_of, tickers_opt: str | None) -> None:
    """Do one night's work now: sync, retrain and forecast every ticker, store the results.

    Exits 0 when every ticker succeeded, 3 when some failed (partial), 4 when all failed,
    5 when another run holds the lock, 6 when interrupted by SIGTERM/SIGINT/SIGHUP.
    """
    from db.run_lock import RunLockedError

    tickers = app.tickers(tickers_opt)
    pipeline = _pipeline(app)
    try:
        result = pipeline.run_nightly(
            as_of=as_of.date() if as_of else None, tickers=tickers, trigger="manual"
        )
    except RunLockedError as exc:
        raise LockedError(str(exc)) from None
    as_of_text = result.as_of or "- (no candles stored)"
    stdout.print(_outcome_table(f"run {result.run_id} as of {as_of_text}", result.outcomes))
    stdout.print(
        f"run {result.run_id}: {result.status}" + (f" ({result.message})" if result.message else "")
    )
    code = RUN_EXIT_CODES[result.status]
    if code != EXIT_OK:
        raise RunExit(code, f"run {result.run_id} {result.status}: {result.message}")


@click.command()
@click.option("--start", required=True, type=click.DateTime(["%Y-%m-%d"]), help="First as-of date.")
@click.option("--end", required=True, type=click.DateTime(["%Y-%m-%d"]), help="Last as-of date.")
@click.option("--tickers", "tickers_opt", help="Comma-separated tickers (default: all configured).")
@click.option(
    "--retrain-every",
    type=click.IntRange(min=1),
    help="Retrain every N sessions (default: [model] retrain_every).",
)
@pass_app
@fail_cleanly
def backfill(app: AppContext, start, end, tickers_opt, retrain_every) -> None:
    """Store forecasts for past as-of dates, as if the nightly job had run then.

    Every stored session in [START, END] gets one run (trigger 'backfill'); models are retrained
    every N sessions. Re-running replaces earlier forecasts, never duplicates them.
    """
    from db.run_lock import RunLockedError

    if start > end:
        raise click.BadParameter("--start is after --end")
    tickers = app.tickers(tickers_opt)
    pipeline = _pipeline(app)

    def on_run(result) -> None:
        ok = sum(o.status == "succeeded" for o in result.outcomes)
        stderr.print(f"as of {result.as_of}: {result.status} ({ok}/{len(result.outcomes)})")

    try:
        results = pipeline.run_backfill(
            start=start.date(),
            end=end.date(),
            tickers=tickers,
            retrain_every=retrain_every,
            on_run=on_run,
        )
    except RunLockedError as exc:
        raise LockedError(str(exc)) from None
    table = Table("as of", "run", "status", "succeeded", "failed")
    for r in results:
        ok = sum(o.status == "succeeded" for o in r.outcomes)
        table.add_row(str(r.as_of), str(r.run_id), r.status, str(ok), str(len(r.outcomes) - ok))
    stdout.print(table)
    if not results:
        raise CommandError(f"no stored sessions between {start.date()} and {end.date()}")
    worst = max((RUN_EXIT_CODES[r.status] for r in results), default=EXIT_OK)
    if worst != EXIT_OK:
        raise RunExit(worst, "backfill finished with failures (see the table)")


@click.command()
@click.option(
    "--list",
    "list_only",
    is_flag=True,
    help="Print the job and its next fire times, then exit without starting.",
)
@click.option("--run-now", is_flag=True, help="Also start a run immediately.")
@pass_app
@fail_cleanly
def scheduler(app: AppContext, list_only: bool, run_now: bool) -> None:
    """Run the scheduler daemon: the nightly run on the [schedule] cron, in this process.

    The job is kept in the database, so a run missed while the daemon was down fires once on
    start-up if it is at most [schedule] misfire_grace_time_s late, and a run left unfinished by a
    killed daemon is resumed at start-up for the tickers without forecasts. SIGTERM, SIGINT and
    SIGHUP finish the ticker in progress, mark the run interrupted and exit 0 (SIGHUP reloads
    nothing: the config file is read before every run).
    """
    from jobs import scheduler as daemon

    config = app.config
    require_schema(config)
    if list_only:
        job = daemon.stored_job(config)
        stdout.print(
            f"job {daemon.JOB_ID}: {daemon.JOB_FUNC} on cron {config.schedule.cron!r} "
            f"({config.schedule.timezone}), misfire grace "
            f"{config.schedule.misfire_grace_time_s} s"
        )
        stored = (
            job.next_run_time.isoformat() if job and job.next_run_time else "none (not started yet)"
        )
        stdout.print(f"stored next run: {stored}")
        for when in daemon.next_fire_times(config):
            stdout.print(f"  {when.isoformat()}")
        return
    daemon.run_daemon(config, app.config_path, run_now=run_now)
