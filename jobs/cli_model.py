"""`candlecast forecast` and `candlecast backtest`: on-demand forecasts, walk-forward tests."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click
from rich.table import Table

from jobs.cli_support import (
    AppContext,
    CommandError,
    fail_cleanly,
    pass_app,
    progress_bar,
    require_schema,
    stderr,
    stdout,
)

DATE = click.DateTime(["%Y-%m-%d"])


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
def forecast(app: AppContext, ticker: str, as_of) -> None:  # noqa: ANN001
    """Print the next four candles of TICKER with their dates and 80% close interval.

    Candles are synced first. The latest stored model trained on data up to the as-of date is
    used when it is at most [model] retrain_every sessions old; otherwise a model is trained on the
    history_years before the as-of date and stored as a new model version. Nothing else is written.
    """
    from db import model_store, repository
    from forecasting.artifact import trained_from_record, trained_to_record
    from forecasting.predict import forecast as predict
    from jobs.sync import provider_for, sync_tickers

    config = app.config
    (symbol,) = app.tickers(ticker)
    if symbol not in config.tickers.symbols:
        raise CommandError(
            f"{symbol} is not a configured ticker ({', '.join(config.tickers.symbols)})"
        )
    require_schema(config)
    factory = app.session_factory()
    (synced,) = sync_tickers(config, factory, provider_for(config), [symbol])
    if not synced.ok:
        stderr.print(f"warning: {synced.error}; using the candles already stored")
    with factory() as session:
        candles = repository.load_candles(
            session, ticker=symbol, end=as_of.date() if as_of else None
        )
    if candles.empty:
        raise CommandError(f"no candles stored for {symbol} on or before {as_of or 'today'}")
    as_of_day = candles.index[-1].date()
    with factory() as session:
        version = model_store.latest_model_version(session, ticker=symbol, trained_up_to=as_of_day)
        record = model_store.model_version_record(version) if version else None
    age = _sessions_between(candles, record["train_end"], as_of_day) if record else None
    if record is None or age > config.model.retrain_every:
        from forecasting.train import train_model

        with stderr.status(f"training {symbol} on data up to {as_of_day}"):
            trained = train_model(
                candles,
                config.model,
                ticker=symbol,
                as_of=as_of_day,
                history_years=config.data.history_years,
            )
        with factory.begin() as session:
            version_id = model_store.add_model_version(
                session, record=trained_to_record(trained)
            ).id
        source = f"model version {version_id} (trained now)"
    else:
        trained = trained_from_record(record)
        source = f"model version {record['id']} (trained on data up to {record['train_end']})"
    result = predict(
        trained, candles, as_of=as_of_day, exchange=config.tickers.exchange_for(symbol)
    )
    table = Table(
        "date",
        "open",
        "high",
        "low",
        "close",
        "close 80% interval",
        title=f"{symbol} as of {as_of_day} (last close {candles['close'].iloc[-1]:.2f})",
    )
    for c in result.candles:
        table.add_row(
            str(c.date),
            f"{c.open:.2f}",
            f"{c.high:.2f}",
            f"{c.low:.2f}",
            f"{c.close:.2f}",
            f"{c.close_lo:.2f} .. {c.close_hi:.2f}",
        )
    stdout.print(table)
    stdout.print(source)


def _sessions_between(candles, start: date, end: date) -> int:  # noqa: ANN001
    index = candles.index
    return int(((index > str(start)) & (index <= str(end))).sum())


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
    "--with-seed-baseline",
    is_flag=True,
    help="Also evaluate the seed recipe (slow: 50 epochs per retrain); its rows go to "
    "OUTPUT with .seed.csv as suffix.",
)
@click.option(
    "--store",
    is_flag=True,
    help="Also store the forecasts in the database as "
    "backfill runs (one per as-of date), replacing earlier ones for those dates.",
)
@pass_app
@fail_cleanly
def backtest(
    app: AppContext, tickers_opt, start, end, retrain_every, output, with_seed_baseline, store
) -> None:  # noqa: ANN001
    """Walk-forward evaluation against the naive forecast (last close).

    For every session t in [START, END] with four later sessions known, forecast t+1..t+4 using
    only data up to t, retraining every N sessions on the history_years before the retrain date.
    Data comes straight from the configured provider. Prints MAE of the model and of the naive
    forecast, their ratio, directional accuracy and the 80% interval's coverage per ticker and
    horizon.
    """
    import pandas as pd

    from forecasting.backtest import format_summary, summarize, walk_forward
    from forecasting.providers import fetch_candles
    from jobs.sync import provider_for

    config = app.config
    if start > end:
        raise click.BadParameter("--start is after --end")
    tickers = app.tickers(tickers_opt)
    every = retrain_every or config.model.retrain_every
    provider = provider_for(config)
    # The first retrain needs history_years before START, plus a margin for feature warm-up.
    fetch_from = (pd.Timestamp(start) - pd.DateOffset(years=config.data.history_years + 1)).date()
    kinds = ["lstm", "seed"] if with_seed_baseline else ["lstm"]
    frames: dict[str, list[pd.DataFrame]] = {kind: [] for kind in kinds}
    failures = []
    with progress_bar() as progress:
        task = progress.add_task("backtest", total=len(tickers) * len(kinds))
        for ticker in tickers:
            try:
                candles, _ = fetch_candles(
                    provider, ticker, start=fetch_from, on_invalid=config.data.on_invalid
                )
                for kind in kinds:
                    progress.update(task, description=f"{ticker} {kind}")
                    frames[kind].append(
                        walk_forward(
                            candles,
                            ticker=ticker,
                            start=start.date(),
                            end=end.date(),
                            params=config.model,
                            history_years=config.data.history_years,
                            retrain_every=every,
                            exchange=config.tickers.exchange_for(ticker),
                            model_kind=kind,
                        )
                    )
                    progress.advance(task)
            except ValueError as exc:  # MarketDataError, InsufficientHistoryError
                failures.append(f"{ticker}: {exc}")
    rows = {kind: pd.concat(f, ignore_index=True) for kind, f in frames.items() if f}
    if "lstm" not in rows or rows["lstm"].empty:
        raise CommandError("no forecasts: " + ("; ".join(failures) or "no sessions in range"))
    rows["lstm"].to_csv(output, index=False)
    stdout.print(f"model (LSTM + attention), retrain every {every} sessions -> {output}")
    stdout.print(format_summary(summarize(rows["lstm"])))
    if "seed" in rows:
        seed_path = Path(output).with_suffix(".seed.csv")
        rows["seed"].to_csv(seed_path, index=False)
        stdout.print(f"\nseed recipe baseline -> {seed_path}")
        stdout.print(format_summary(summarize(rows["seed"])))
    if store:
        stored = _store_backtest(app, rows["lstm"])
        stdout.print(f"stored {stored} forecast sets as backfill runs")
    if failures:
        raise CommandError("; ".join(failures))


def _store_backtest(app: AppContext, rows) -> int:  # noqa: ANN001 - pandas DataFrame
    """Write backtest forecasts as backfill runs (one per as-of date); returns sets stored."""
    from db import runs

    require_schema(app.config)
    factory = app.session_factory()
    stored = 0
    for as_of, by_date in rows.groupby("as_of_date", sort=True):
        with factory.begin() as session:
            run = runs.start_run(session, trigger="backfill", as_of_date=as_of)
            for ticker, group in by_date.groupby("ticker"):
                runs.replace_forecasts(
                    session,
                    run_id=run.id,
                    ticker=ticker,
                    as_of_date=as_of,
                    model_version_id=None,
                    rows=[
                        runs.ForecastRow.of(r, target_date=r.target_date)
                        for r in group.itertuples()
                    ],
                )
                runs.finish_ticker(
                    session, run_id=run.id, ticker=ticker, status="succeeded", duration_s=0.0
                )
                stored += 1
            runs.finish_run(
                session, run_id=run.id, status="succeeded", message="stored by candlecast backtest"
            )
    return stored
