"""Write side of job runs: forecast_runs, forecast_run_tickers and the forecasts they store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from db.models import Forecast, ForecastRun, ForecastRunTicker, utcnow

FINAL_RUN_STATUSES = ("succeeded", "partial", "failed", "interrupted", "abandoned")


@dataclass(frozen=True)
class ForecastRow:
    """One predicted candle, as the pipeline hands it to the database."""

    horizon: int
    target_date: date
    open: float
    high: float
    low: float
    close: float
    close_lo: float | None
    close_hi: float | None

    @classmethod
    def of(cls, item: Any, *, target_date: date) -> ForecastRow:
        """From any object with horizon, open, high, low, close, close_lo, close_hi attributes."""
        return cls(
            horizon=int(item.horizon),
            target_date=target_date,
            open=float(item.open),
            high=float(item.high),
            low=float(item.low),
            close=float(item.close),
            close_lo=None if item.close_lo is None else float(item.close_lo),
            close_hi=None if item.close_hi is None else float(item.close_hi),
        )


def start_run(session: Session, *, trigger: str, as_of_date: date | None = None) -> ForecastRun:
    """Insert a `running` run row for this process and return it (with its id)."""
    run = ForecastRun(trigger=trigger, status="running", as_of_date=as_of_date)
    run.heartbeat_at = utcnow()
    session.add(run)
    session.flush()
    return run


def set_run_as_of(session: Session, *, run_id: int, as_of_date: date) -> None:
    session.execute(
        update(ForecastRun).where(ForecastRun.id == run_id).values(as_of_date=as_of_date)
    )


def finish_run(session: Session, *, run_id: int, status: str, message: str | None = None) -> None:
    """Record the final status of a run."""
    if status not in FINAL_RUN_STATUSES:
        raise ValueError(f"not a final run status: {status!r}")
    session.execute(
        update(ForecastRun)
        .where(ForecastRun.id == run_id)
        .values(status=status, finished_at=utcnow(), message=message)
    )


def abandon_running_runs(session: Session) -> list[int]:
    """Mark every `running` run (and its running tickers) abandoned; returns their ids.

    Only call while holding the run lock: then no live process can own a running run.
    """
    ids = list(session.scalars(select(ForecastRun.id).where(ForecastRun.status == "running")))
    if not ids:
        return []
    session.execute(
        update(ForecastRunTicker)
        .where(ForecastRunTicker.run_id.in_(ids), ForecastRunTicker.status == "running")
        .values(status="failed", error="abandoned: the process running it stopped")
    )
    session.execute(
        update(ForecastRun)
        .where(ForecastRun.id.in_(ids))
        .values(
            status="abandoned",
            finished_at=utcnow(),
            message="abandoned: the process running it stopped before finishing",
        )
    )
    return ids


def start_ticker(session: Session, *, run_id: int, ticker: str) -> None:
    """Insert (or reset) the ticker's row of a run as `running`."""
    session.merge(
        ForecastRunTicker(
            run_id=run_id, ticker=ticker, status="running", error=None, duration_s=None
        )
    )


def finish_ticker(
    session: Session,
    *,
    run_id: int,
    ticker: str,
    status: str,
    duration_s: float,
    error: str | None = None,
    model_version_id: int | None = None,
) -> None:
    """Record a ticker's outcome within a run (inserting the row if needed)."""
    session.merge(
        ForecastRunTicker(
            run_id=run_id,
            ticker=ticker,
            status=status,
            error=error,
            duration_s=duration_s,
            model_version_id=model_version_id,
        )
    )


def replace_forecasts(
    session: Session,
    *,
    run_id: int,
    ticker: str,
    as_of_date: date,
    rows: Sequence[ForecastRow],
    model_version_id: int | None,
    attention: Any | None = None,
) -> None:
    """Store a forecast set, replacing any earlier one for (ticker, as_of_date)."""
    horizons = sorted(row.horizon for row in rows)
    if horizons != list(range(1, len(rows) + 1)):
        raise ValueError(f"forecast horizons must be 1..{len(rows)}, got {horizons}")
    session.execute(
        delete(Forecast).where(Forecast.ticker == ticker, Forecast.as_of_date == as_of_date)
    )
    session.add_all(
        Forecast(
            run_id=run_id,
            model_version_id=model_version_id,
            ticker=ticker,
            as_of_date=as_of_date,
            horizon=row.horizon,
            target_date=row.target_date,
            open=row.open,
            high=row.high,
            low=row.low,
            close=row.close,
            close_lo=row.close_lo,
            close_hi=row.close_hi,
            attention=attention,
        )
        for row in rows
    )
    session.flush()
