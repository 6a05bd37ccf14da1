"""`candlecast forecast` and `candlecast backtest`: on-demand forecasts, walk-forward tests."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich import box
from rich.table import Table

from forecasting.model_names import DEFAULT_MODELS
from jobs.cli_support import (
    EXIT_LOCKED,
    AppContext,
    CommandError,
    UsageError,
    backtest_progress,
    fail_cleanly,
    pass_app,
    require_schema,
    stderr,
    stdout,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from forecasting.train import TrainedModel
    from jobs.config import Config

DATE = click.DateTime(["%Y-%m-%d"])


class StoreLockedError(CommandError):
    """`backtest --store`: another run holds the database's run lock, so nothing is stored."""

    exit_code = EXIT_LOCKED


@click.command()
@click.option("--ticker", required=True, help="Ticker to forecast (must be configured).")
@click.option(
    "--as-of",
    type=DATE,
    help="As-of date (default: the latest stored session); a "
    "non-session date means the latest stored session before it.",
)
@pass_app
@fail_cleanly
def forecast(app: AppContext, ticker: str, as_of) -> None:
    """Print the next four candles of TICKER with their dates and 80% close interval.

    Candles are synced first. The latest stored model trained on data up to the as-of date is
    used when it is at most [model] retrain_every sessions old; otherwise the global network is
    fitted over the configured tickers on the history_years before the as-of date and stored as
    a new model version. Nothing else is written.
    """
    from db import repository
    from forecasting.forecast_path import forecast_set
    from jobs.global_fit import universe_loader
    from jobs.sync import provider_for, sync_tickers

    config = app.config
    symbols = app.tickers(ticker, name="--ticker")
    if len(symbols) != 1:
        raise UsageError("--ticker: give one ticker (forecast one ticker at a time)")
    (symbol,) = symbols
    require_schema(config)
    factory = app.session_factory()
    (synced,) = sync_tickers(config, factory, provider_for(config), [symbol])
    if not synced.ok:
        stderr.print(f"warning: {synced.error}; using the candles already stored")
    with factory() as session:
        stored = repository.load_candles(session, ticker=symbol)
    candles = stored if as_of is None else stored.loc[stored.index <= as_of]
    if candles.empty:
        raise CommandError(f"no candles stored for {symbol} on or before {as_of or 'today'}")
    as_of_day = candles.index[-1].date()
    policy = FreshOrFitNow(factory, config)
    result = forecast_set(
        symbol,
        as_of_day,
        policy,
        candles=candles,
        exchange=config.tickers.exchange_for(symbol),
        universe=universe_loader(factory),
    )
    stdout.print(_forecast_table(symbol, as_of_day, candles, stored, result.candles))
    stdout.print(policy.source)


class FreshOrFitNow:
    """The forecast command's model policy: the newest fresh stored model, else the global
    network fitted now over the configured tickers and stored as a new model version."""

    def __init__(self, factory: sessionmaker[Session], config: Config) -> None:
        self.factory, self.config = factory, config
        self.source = ""  # which model served, for the command's last line

    def model_for(self, ticker: str, as_of: date) -> TrainedModel:
        from db import model_store
        from jobs.global_fit import global_records, trained_from_global_record

        found = _fresh_stored_model(self.factory, ticker, as_of, self.config.model.retrain_every)
        if found is not None:
            version_id, trained = found
            self.source = f"model version {version_id} (trained on data up to {trained.train_end})"
            return trained
        with stderr.status(f"fitting the global model on data up to {as_of}"):
            records = global_records(self.factory, self.config, self.config.tickers.symbols, as_of)
        record = records.get(ticker, f"{ticker} is not a configured ticker")
        if isinstance(record, str):
            raise CommandError(record)
        with self.factory.begin() as session:
            version_id = model_store.add_model_version(session, record=record).id
        self.source = f"model version {version_id} (trained now)"
        return trained_from_global_record(record)  # the network just fitted, not loaded again


def _forecast_table(symbol, as_of_day, candles, stored, forecast) -> Table:
    """The four candles with their 80% interval; for a past as-of date, the actual close beside
    each (the stored candle of that day, when there is one) and whether it fell inside."""
    actual = {ts.date(): row for ts, row in stored.loc[stored.index > candles.index[-1]].iterrows()}
    known = any(c.date in actual for c in forecast)
    table = Table(
        title=f"{symbol} as of {as_of_day} (last close {candles['close'].iloc[-1]:.2f})",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        collapse_padding=True,
    )
    for name in ("date", "open", "high", "low", "close", "80% interval"):
        table.add_column(name, justify="left" if name == "date" else "right", no_wrap=True)
    if known:  # fits 80 columns with prices up to 9,999.99
        table.add_column("actual", justify="right", no_wrap=True)
        table.add_column("in 80%", justify="center", no_wrap=True)
    for c in forecast:
        row = [
            str(c.date),
            f"{c.open:.2f}",
            f"{c.high:.2f}",
            f"{c.low:.2f}",
            f"{c.close:.2f}",
            f"{c.close_lo:.2f}..{c.close_hi:.2f}",
        ]
        if known:
            day = actual.get(c.date)
            if day is None:
                row += ["—", ""]
            else:
                inside = c.close_lo <= day["close"] <= c.close_hi
                row += [f"{day['close']:.2f}", "yes" if inside else "no"]
        table.add_row(*row)
    return table


def _fresh_stored_model(factory, ticker: str, as_of: date, retrain_every: int):
    """(id, TrainedModel) of the newest stored model usable for `as_of`, or None.

    Usable is the shared rule (db.model_store.model_is_fresh). A version that fails its checks
    (sha256, truncated or invalid .keras, unloadable, old calibration) is reported on one
    stderr line and skipped, so the caller retrains instead of crashing.
    """
    from db import model_store
    from forecasting.artifact import UnusableModelError, usable_from_record

    with factory() as session:
        candidates = model_store.model_candidates(session, ticker=ticker, trained_up_to=as_of)
        for candidate in candidates:
            age = model_store.sessions_between(
                session, ticker=ticker, start=candidate.train_end, end=as_of
            )
            if not model_store.model_is_fresh(
                train_end=candidate.train_end,
                as_of=as_of,
                age_sessions=age,
                retrain_every=retrain_every,
            ):
                return None  # older candidates are older still
            version = model_store.model_version_by_id(session, version_id=candidate.id)
            if version is None:
                continue
            try:
                return candidate.id, usable_from_record(model_store.model_version_record(version))
            except UnusableModelError as exc:
                stderr.print(
                    f"warning: model version {candidate.id} of {ticker} is unusable and is "
                    f"skipped: {exc}",
                    markup=False,
                    soft_wrap=True,
                )
    return None


@click.command()
@click.option("--tickers", "tickers_opt", help="Comma-separated tickers (default: all configured).")
@click.option("--start", required=True, type=DATE, help="First as-of date.")
@click.option("--end", required=True, type=DATE, help="Last as-of date.")
@click.option(
    "--retrain-every",
    type=click.IntRange(min=1),
    help="Retrain every N sessions (default: [model] retrain_every = 21).",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    required=True,
    help="CSV file for one row per (ticker, as_of_date, horizon).",
)
@click.option(
    "--models",
    "models_opt",
    default=",".join(DEFAULT_MODELS),
    show_default=True,
    help="Comma-separated models to run side by side: candlecast (the served forecast), lstm "
    "(the network alone), har_range, naive, rw20, ewma, garch, empirical, range20, seed.",
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False, writable=True),
    help="Self-contained HTML report (default: OUTPUT with .html as suffix).",
)
@click.option(
    "--with-seed-baseline",
    is_flag=True,
    help="Also evaluate the seed recipe (slow: 50 epochs per retrain); same as adding 'seed' "
    "to --models.",
)
@click.option(
    "--store",
    is_flag=True,
    help="Also store the forecasts in the database as backfill runs (one per as-of date), "
    "replacing earlier ones for those dates: candlecast's in forecasts, the other models' in "
    "baseline_forecasts. Takes the nightly run's lock while storing: exit 5, nothing stored, when "
    "another run holds it.",
)
@pass_app
@fail_cleanly
def backtest(
    app: AppContext,
    tickers_opt,
    start,
    end,
    retrain_every,
    output,
    models_opt,
    report,
    with_seed_baseline,
    store,
) -> None:
    """Walk-forward evaluation of the product beside the baselines, on the same dates.

    For every session t in [START, END] whose next four sessions (the exchange calendar's) are
    known, every model forecasts them using only data up to t, refitted every N sessions on the
    history_years before the refit date (HAR-range pooled over the tickers given; the network
    one global fit per refit date over the tickers given, warm-started from the previous one,
    the served forecast its gated correction of HAR-range). Prints, pooled over tickers and per
    horizon: close MAE ratio vs naive, Winkler score at 50/80/90%, mean pinball loss, coverage
    per level, high/low MAE, and each model's ratio to each baseline with a moving-block
    bootstrap 95% interval (blocks of 10 sessions). OUTPUT gets the served forecast's rows
    (with its seven close quantiles); OUTPUT.models.csv every model's rows; the HTML report the
    skill bars, the reliability diagram and the rolling error.
    """
    import pandas as pd

    from forecasting import scoring as S
    from forecasting.backtest import walk_forward, write_rows_csv
    from forecasting.model_names import MODEL_NAMES, PRODUCT
    from forecasting.providers import fetch_candles
    from forecasting.report import write_html_report
    from jobs.sync import provider_for

    config = app.config
    if start > end:
        raise click.BadParameter("--start is after --end")
    models = [m.strip() for m in models_opt.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown or not models:
        raise click.BadParameter(
            f"unknown model(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(MODEL_NAMES)}",
            param_hint="--models",
        )
    if with_seed_baseline and "seed" not in models:
        models.append("seed")
    output_path, all_path, report_path = _output_paths(output, report)
    tickers = app.tickers(tickers_opt, configured_only=False)  # a backtest may study any ticker
    every = retrain_every or config.model.retrain_every
    provider = provider_for(config)
    # The first refit needs history_years before START, plus a margin for feature warm-up.
    fetch_from = (pd.Timestamp(start) - pd.DateOffset(years=config.data.history_years + 1)).date()
    stderr.print(
        f"backtest: {len(tickers)} ticker(s), {start.date()}..{end.date()}, models "
        f"{','.join(models)}, refit every {every} sessions: fetching candles",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    candles, failures = {}, []
    for ticker in tickers:
        try:
            candles[ticker], _ = fetch_candles(
                provider, ticker, start=fetch_from, on_invalid=config.data.on_invalid
            )
        except ValueError as exc:  # MarketDataError
            failures.append(f"{ticker}: {exc}")
    rows = pd.DataFrame()
    if candles:
        with backtest_progress() as progress:
            try:
                rows = walk_forward(
                    candles,
                    start=start.date(),
                    end=end.date(),
                    params=config.model,
                    history_years=config.data.history_years,
                    retrain_every=every,
                    models=models,
                    progress=progress,
                    exchange_for=config.tickers.exchange_for,
                )
            except ValueError as exc:  # InsufficientHistoryError and friends
                failures.append(str(exc))
    if rows.empty:
        raise CommandError("no forecasts: " + ("; ".join(failures) or "no sessions in range"))
    served_name = PRODUCT if PRODUCT in models else models[0]
    served = rows[rows["model"] == served_name].drop(columns="model")
    _write(lambda: write_rows_csv(served, output_path), output_path)
    _write(lambda: write_rows_csv(rows, all_path), all_path)
    scored = S.add_scores(rows)
    summary = S.summary_table(scored)
    summary_path = output_path.with_suffix(".summary.csv")
    _write(lambda: summary.to_csv(summary_path, index=False), summary_path)
    products = [m for m in models if m in (PRODUCT, "lstm", "har_range")]
    baselines = [m for m in models if m not in products]
    others = [m for m in models if m != served_name]
    click.echo(f"{served_name} rows -> {output_path}; every model's rows -> {all_path}")
    click.echo(f"per-model scores -> {summary_path}")
    if others:
        versus = S.skill_table(scored, [served_name], others)
        skill = S.skill_table(scored, products or [served_name], baselines or others)
        skill_path = output_path.with_suffix(".skill.csv")
        _write(lambda: skill.to_csv(skill_path, index=False), skill_path)
        click.echo(f"every model against every baseline -> {skill_path}\n")
        click.echo(S.format_versus(versus, served_name))
    _write(
        lambda: write_html_report(
            scored,
            report_path,
            models=products or models[:1],
            baselines=baselines,
            title=f"candlecast backtest {start.date()}..{end.date()}",
        ),
        report_path,
    )
    click.echo(f"report -> {report_path}")
    if store:
        stored = _store_backtest(app, rows, served_name)
        stdout.print(f"stored {stored} forecast sets as backfill runs")
    if failures:
        raise CommandError("; ".join(failures))


def _output_paths(output: str, report: str | None) -> tuple[Path, Path, Path]:
    """(--output, its .models.csv, the report) once each can be written: a UsageError line
    before any work otherwise (a backtest can compute for a long time before writing)."""
    output_path = Path(output)
    all_path = output_path.with_suffix(".models.csv")
    report_path = Path(report) if report else output_path.with_suffix(".html")
    _check_writable(output_path, "--output: cannot write")
    _check_writable(all_path, "--output: cannot write every model's rows to")
    _check_writable(report_path, "--report: cannot write")
    if report_path.resolve() == output_path.resolve():
        raise UsageError(f"--report: {report_path} is also the --output file")
    if report_path.resolve() == all_path.resolve():
        raise UsageError(f"--report: {report_path} is also the file of every model's rows")
    return output_path, all_path, report_path


def _check_writable(path: Path, what: str) -> None:
    """UsageError `what path: why` unless `path` is a file that can be created or replaced."""
    parent = path.parent
    if path.is_dir():
        reason = "it is a directory"
    elif not parent.exists():
        reason = f"no directory {parent}"
    elif not parent.is_dir():
        reason = f"{parent} is not a directory"
    elif not os.access(path if path.exists() else parent, os.W_OK):
        reason = "permission denied"
    else:
        return
    raise UsageError(f"{what} {path}: {reason}")


def _write(write, path: Path) -> None:
    """Run `write()`; an OSError (disk full, a directory removed meanwhile) is one line."""
    try:
        write()
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None


def _forecast_rows(group):
    """Stored-forecast rows of a DataFrame of backtest rows."""
    from db import runs

    return [runs.ForecastRow.of(r, target_date=r.target_date) for r in group.itertuples()]


def _store_backtest(app: AppContext, all_rows, served_name: str) -> int:
    """Write backtest forecasts as backfill runs (one per as-of date); returns sets stored.

    The served model's rows go to forecasts, the other models' to baseline_forecasts. They hold
    the nightly run's lock while storing, as the pipeline does; when another run holds it nothing
    is stored and the command exits 5 (EXIT_LOCKED)."""
    from db.run_lock import RunLockedError, RunLockHandle
    from db.session import make_engine, make_session_factory

    require_schema(app.config)
    engine = make_engine(app.config.database.url)
    lock = RunLockHandle(engine)
    try:
        lock.acquire()
    except RunLockedError as exc:
        engine.dispose()
        raise StoreLockedError(
            f"{exc}; nothing stored (the CSV and the report are written)"
        ) from None
    try:
        return _store_backtest_rows(make_session_factory(engine), all_rows, served_name)
    finally:
        lock.release()
        engine.dispose()


def _store_backtest_rows(factory, all_rows, served_name: str) -> int:
    """`_store_backtest`'s writes, under the run lock: a run per as-of date the served model
    forecast, holding that date's sets of every model (a date without it stores nothing)."""
    from db import runs

    stored = 0
    for as_of, by_date in all_rows.groupby("as_of_date", sort=True):
        if not (by_date["model"] == served_name).any():
            continue
        with factory.begin() as session:
            run = runs.start_run(session, trigger="backfill", as_of_date=as_of)
            for (ticker, model), group in by_date.groupby(["ticker", "model"]):
                forecast_set = {
                    "run_id": run.id,
                    "ticker": ticker,
                    "as_of_date": as_of,
                    "rows": _forecast_rows(group),
                }
                if model != served_name:
                    runs.replace_baseline_forecasts(session, model=model, **forecast_set)
                    continue
                runs.replace_forecasts(session, model_version_id=None, **forecast_set)
                runs.finish_ticker(
                    session, run_id=run.id, ticker=ticker, status="succeeded", duration_s=0.0
                )
                stored += 1
            runs.finish_run(
                session, run_id=run.id, status="succeeded", message="stored by candlecast backtest"
            )
    return stored
