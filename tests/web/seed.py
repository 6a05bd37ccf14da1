"""A small, realistic database for the web tests: candles, one tiny model, runs and forecasts.

AAPL and MSFT have candles 2022-01-03..2023-12-29 (GOOGL is configured but has none). AAPL has a
model trained to 2023-06-30 and stored forecasts as of its last STORED_SESSIONS sessions before
2023-12-29 (that last session has none, so it is served live); MSFT has one stored forecast.
AAPL's stored forecasts have close quantiles and a model mix; MSFT's has neither (an older model).

AAPL's model is its version of a tiny global fit over AAPL and MSFT (FIT_TICKERS; one
global_models row): a live AAPL forecast after the fit's data reads MSFT's candles too. MSFT's
version of that fit is not stored, so MSFT has no model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session

from db.model_store import add_global_model, add_model_version
from db.models import (
    QUANTILE_COLUMNS,
    BaselineForecast,
    Forecast,
    ForecastRun,
    ForecastRunTicker,
)
from db.repository import upsert_candles
from forecasting.calendar import next_sessions
from forecasting.providers import make_provider

TICKERS = ("AAPL", "MSFT", "GOOGL")
CANDLE_START = date(2022, 1, 3)
MODEL_AS_OF = date(2023, 6, 30)
FIT_TICKERS = ("AAPL", "MSFT")  # the global fit's universe; only AAPL's version is stored
STORED_SESSIONS = 30
ATTENTION_WINDOW = 20
# Close quantiles at 0.05 .. 0.95 as multiples of the forecast close (0.10/0.90 = close_lo/hi).
QUANTILE_FACTORS = (0.97, 0.98, 0.99, 1.0, 1.01, 1.02, 1.03)
MODEL_MIX = {"close": "naive", "quantiles": {"har_range": 0.7, "lstm": 0.3}, "range": "har_range"}


@dataclass(frozen=True)
class GlobalModel:
    """A global fit as the night stores it (jobs.global_fit.global_records): its global_models
    row and the model version record of each ticker (without ``global_model_id``, which is the
    row's id in one database)."""

    row: dict[str, Any]  # db.model_store.add_global_model's fields
    records: dict[str, dict[str, Any]]  # ticker -> model_versions record


@dataclass(frozen=True)
class Seed:
    """What the seeded database holds (for assertions)."""

    model_id: int
    global_model_id: int  # the global_models row AAPL's model (model_id) belongs to
    stored_as_of: tuple[date, ...]  # AAPL, oldest first
    last_session: date  # AAPL and MSFT; no AAPL forecast is stored for it
    msft_as_of: date
    run_ids: tuple[int, ...]


def bundled_candles(ticker: str) -> pd.DataFrame:
    """Bundled candles of `ticker` from CANDLE_START on."""
    frame = make_provider("bundled").fetch(ticker)
    return frame.loc[frame.index >= pd.Timestamp(CANDLE_START)]


def forecast_rows(
    candles: pd.DataFrame,
    *,
    ticker: str,
    as_of: date,
    run_id: int,
    model_id: int | None,
    with_quantiles: bool = True,
) -> list[Forecast]:
    """Four plausible stored forecast rows as of `as_of` (close drifts 0.1% per horizon)."""
    past = candles.loc[candles.index <= pd.Timestamp(as_of)]
    last = float(past["close"].iloc[-1])
    dates = [ts.date().isoformat() for ts in past.index[-ATTENTION_WINDOW:]]
    weights = [(i + 1) / sum(range(1, len(dates) + 1)) for i in range(len(dates))]
    rows = []
    for horizon, target in enumerate(next_sessions(as_of, 4, "XNYS"), start=1):
        close = last * (1 + 0.001 * horizon)
        quantiles = {
            name: close * factor if with_quantiles else None
            for name, factor in zip(QUANTILE_COLUMNS, QUANTILE_FACTORS, strict=True)
        }
        rows.append(
            Forecast(
                run_id=run_id,
                model_version_id=model_id,
                ticker=ticker,
                as_of_date=as_of,
                horizon=horizon,
                target_date=target,
                open=last,
                high=max(last, close) * 1.01,
                low=min(last, close) * 0.99,
                close=close,
                close_lo=close * 0.98,
                close_hi=close * 1.02,
                attention={"dates": dates, "weights": weights},
                model_mix=MODEL_MIX if with_quantiles else None,
                **quantiles,
            )
        )
    return rows


# The stored baselines the pages compare with: quantile spread around the last close relative to
# the model's (GARCH and EWMA wider), and the 20-session range's high/low distance.
BASELINE_SPREAD = {"garch": 1.6, "ewma": 1.3, "naive": None, "range20": None}


def baseline_rows(
    candles: pd.DataFrame, *, ticker: str, as_of: date, run_id: int
) -> list[BaselineForecast]:
    """Stored baseline forecasts as of `as_of`: GARCH and EWMA with wider quantiles than the
    seed's model, naive and the 20-session range without an interval."""
    past = candles.loc[candles.index <= pd.Timestamp(as_of)]
    last = float(past["close"].iloc[-1])
    rows = []
    for model, spread in BASELINE_SPREAD.items():
        for horizon, target in enumerate(next_sessions(as_of, 4, "XNYS"), start=1):
            quantiles = {
                name: last * (1 + (factor - 1) * spread * horizon**0.5) if spread else None
                for name, factor in zip(QUANTILE_COLUMNS, QUANTILE_FACTORS, strict=True)
            }
            reach = 0.012 if model == "range20" else 0.01
            rows.append(
                BaselineForecast(
                    run_id=run_id,
                    ticker=ticker,
                    as_of_date=as_of,
                    horizon=horizon,
                    target_date=target,
                    model=model,
                    open=last,
                    high=last * (1 + reach),
                    low=last * (1 - reach),
                    close=last,
                    close_lo=quantiles["close_q10"],
                    close_hi=quantiles["close_q90"],
                    **quantiles,
                )
            )
    return rows


def _run(session: Session, *, as_of: date, status: str, started: datetime) -> ForecastRun:
    run = ForecastRun(
        trigger="schedule",
        status=status,
        as_of_date=as_of,
        started_at=started,
        finished_at=started + timedelta(seconds=42),
        message=None if status == "succeeded" else "1 of 2 tickers failed",
    )
    session.add(run)
    session.flush()
    return run


def seed(session: Session, *, global_model: GlobalModel) -> Seed:
    """Fill an empty, migrated database (the caller commits)."""
    frames = {t: bundled_candles(t) for t in ("AAPL", "MSFT")}
    for ticker, frame in frames.items():
        upsert_candles(session, ticker=ticker, frame=frame, source="bundled")
    global_id = add_global_model(session, **global_model.row)
    record = global_model.records["AAPL"] | {"global_model_id": global_id}
    model = add_model_version(session, record=record)
    sessions = [ts.date() for ts in frames["AAPL"].index]
    stored = tuple(sessions[-STORED_SESSIONS - 1 : -1])
    start = datetime(2023, 12, 28, 23, 30, tzinfo=UTC)
    first = _run(session, as_of=stored[-1], status="succeeded", started=start)
    second = _run(session, as_of=sessions[-1], status="partial", started=start + timedelta(days=1))
    session.add_all(
        [
            ForecastRunTicker(
                run_id=first.id,
                ticker="AAPL",
                status="succeeded",
                duration_s=12.5,
                model_version_id=model.id,
            ),
            ForecastRunTicker(
                run_id=second.id,
                ticker="AAPL",
                status="failed",
                duration_s=0.4,
                error="RuntimeError: <boom> & friends",
            ),
            ForecastRunTicker(run_id=second.id, ticker="MSFT", status="succeeded", duration_s=9.0),
        ]
    )
    for as_of in stored:
        session.add_all(
            forecast_rows(
                frames["AAPL"], ticker="AAPL", as_of=as_of, run_id=first.id, model_id=model.id
            )
        )
        session.add_all(baseline_rows(frames["AAPL"], ticker="AAPL", as_of=as_of, run_id=first.id))
    session.add_all(
        forecast_rows(
            frames["MSFT"],
            ticker="MSFT",
            as_of=sessions[-1],
            run_id=second.id,
            model_id=None,
            with_quantiles=False,
        )
    )
    session.flush()
    return Seed(
        model_id=model.id,
        global_model_id=global_id,
        stored_as_of=stored,
        last_session=sessions[-1],
        msft_as_of=sessions[-1],
        run_ids=(first.id, second.id),
    )


def store_night(
    session: Session, candles: pd.DataFrame, days: Sequence[date], *, flat: bool = False
) -> None:
    """A finished scheduled run as of days[-1] with AAPL forecast sets as of each of `days`;
    `flat`: every close (and its interval) equals the open, so the answer differs from a
    normal set's."""
    run = ForecastRun(trigger="schedule", status="succeeded", as_of_date=days[-1])
    run.finished_at = datetime.now(UTC)
    session.add(run)
    session.flush()
    for day in days:
        rows = forecast_rows(candles, ticker="AAPL", as_of=day, run_id=run.id, model_id=None)
        if flat:
            for row in rows:
                row.close = row.close_lo = row.close_hi = row.open  # different values
                row.high, row.low = row.open * 1.01, row.open * 0.99
        session.add_all(rows)
