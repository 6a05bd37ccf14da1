"""Write side of job runs: forecast_runs, forecast_run_tickers and the forecasts they store.

Also the baselines' forecasts (baseline_forecasts), stored beside the model's to be scored alike.
Forecast prices are stored to forecasting.numbers.SIGNIFICANT_DIGITS significant digits (a model's
float32 arithmetic leaves digits that mean nothing), and a missing one (None, NaN) as NULL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from math import isfinite
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from db.models import (
    FINISHED_RUN_STATUSES,
    QUANTILE_COLUMNS,
    BaselineForecast,
    Forecast,
    ForecastRun,
    ForecastRunTicker,
    utcnow,
)
from forecasting.numbers import round_sig

# Runs the daemon resumes at start-up when a killed process left them unfinished.
RESUMABLE_TRIGGERS = ("schedule", "manual")


def _number(value: Any) -> float | None:
    """A float, or None for a missing value (None, NaN or inf: pandas rows carry NaN, and
    baselines without an interval have NaN bounds)."""
    if value is None:
        return None
    number = float(value)
    return number if isfinite(number) else None


def _stored(value: Any) -> float | None:
    """A forecast price as stored: SIGNIFICANT_DIGITS significant digits, None when missing."""
    return round_sig(_number(value))


@dataclass(frozen=True)
class ForecastRow:
    """One predicted candle, as the pipeline hands it to the database.

    `quantiles` holds the close quantiles in QUANTILE_COLUMNS order (close_q05 .. close_q95), or
    is empty when the model made none (the columns are then NULL).
    """

    horizon: int
    target_date: date
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    close_lo: float | None
    close_hi: float | None
    quantiles: tuple[float | None, ...] = ()

    def __post_init__(self) -> None:
        if self.quantiles and len(self.quantiles) != len(QUANTILE_COLUMNS):
            raise ValueError(
                f"quantiles must hold {len(QUANTILE_COLUMNS)} values "
                f"({', '.join(QUANTILE_COLUMNS)}) or none, got {len(self.quantiles)}"
            )

    @classmethod
    def of(cls, item: Any, *, target_date: date) -> ForecastRow:
        """From any object with horizon, open, high, low, close, close_lo, close_hi attributes.

        Quantiles come from `item.quantiles` (a ForecastCandle), else from close_q05 .. close_q95
        attributes (a backtest row), else none.
        """
        quantiles = tuple(getattr(item, "quantiles", None) or ())
        if not quantiles and all(hasattr(item, name) for name in QUANTILE_COLUMNS):
            quantiles = tuple(getattr(item, name) for name in QUANTILE_COLUMNS)
        values = tuple(_number(q) for q in quantiles)
        return cls(
            horizon=int(item.horizon),
            target_date=target_date,
            open=_number(item.open),
            high=_number(item.high),
            low=_number(item.low),
            close=_number(item.close),
            close_lo=_number(item.close_lo),
            close_hi=_number(item.close_hi),
            quantiles=() if all(v is None for v in values) else values,
        )

    def columns(self) -> dict[str, Any]:
        """Every column of a stored forecast row this carries (forecasts and baseline_forecasts),
        prices as stored (see _stored)."""
        prices = ("open", "high", "low", "close", "close_lo", "close_hi")
        return {
            "horizon": self.horizon,
            "target_date": self.target_date,
            **{name: _stored(getattr(self, name)) for name in prices},
            **self.quantile_columns(),
        }

    def quantile_columns(self) -> dict[str, float | None]:
        """close_q05 .. close_q95 -> value as stored (all None when there are no quantiles)."""
        values = self.quantiles or (None,) * len(QUANTILE_COLUMNS)
        return dict(zip(QUANTILE_COLUMNS, (_stored(v) for v in values), strict=True))


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


def touch_run(session: Session, *, run_id: int) -> None:
    """Advance the run's heartbeat: the process is alive and working on it (after each ticker)."""
    session.execute(
        update(ForecastRun).where(ForecastRun.id == run_id).values(heartbeat_at=utcnow())
    )


def finish_run(session: Session, *, run_id: int, status: str, message: str | None = None) -> None:
    """Record the final status of a run."""
    if status not in FINISHED_RUN_STATUSES:
        raise ValueError(f"not a final run status: {status!r}")
    session.execute(
        update(ForecastRun)
        .where(ForecastRun.id == run_id)
        .values(status=status, finished_at=(now := utcnow()), heartbeat_at=now, message=message)
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


def run_to_resume(session: Session, *, as_of_date: date) -> ForecastRun | None:
    """The newest schedule or manual run of `as_of_date` a stopped process left unfinished.

    That is one still `running` (its process was killed: only call while no run can be in
    progress, or let the run lock decide) or already marked `abandoned`; None when there is none,
    or when a later run of that as-of date finished (it did, or decided, the rest).
    """
    run = session.scalars(
        select(ForecastRun)
        .where(
            ForecastRun.as_of_date == as_of_date,
            ForecastRun.trigger.in_(RESUMABLE_TRIGGERS),
            ForecastRun.status.in_(("running", "abandoned")),
        )
        .order_by(ForecastRun.id.desc())
        .limit(1)
    ).first()
    if run is None:
        return None
    finished_later = session.scalar(
        select(ForecastRun.id)
        .where(
            ForecastRun.as_of_date == as_of_date,
            ForecastRun.id > run.id,
            ForecastRun.status.in_(("succeeded", "partial", "failed", "interrupted")),
        )
        .limit(1)
    )
    return None if finished_later is not None else run


def tickers_without_forecasts(
    session: Session, *, tickers: Sequence[str], as_of_dates: Mapping[str, date]
) -> list[str]:
    """The `tickers` (in order) with no stored forecast set as of their date in `as_of_dates`.

    A ticker missing from `as_of_dates` (no as-of date: no candles) counts as without one.
    """
    dated = {t: d for t, d in as_of_dates.items() if t in tickers}
    stored: set[tuple[str, date]] = set()
    if dated:
        stored = {
            (ticker, day)
            for ticker, day in session.execute(
                select(Forecast.ticker, Forecast.as_of_date)
                .where(Forecast.ticker.in_(dated), Forecast.as_of_date.in_(set(dated.values())))
                .distinct()
            )
        }
    return [t for t in tickers if (t, dated.get(t)) not in stored]


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
    model_mix: dict[str, Any] | None = None,
) -> None:
    """Store a forecast set, replacing any earlier one for (ticker, as_of_date).

    `model_mix` (JSON-able: which model produced which numbers) is stored on every row of the set.
    """
    _check_horizons(rows)
    session.execute(
        delete(Forecast).where(Forecast.ticker == ticker, Forecast.as_of_date == as_of_date)
    )
    session.add_all(
        Forecast(
            run_id=run_id,
            model_version_id=model_version_id,
            ticker=ticker,
            as_of_date=as_of_date,
            attention=attention,
            model_mix=model_mix or None,
            **row.columns(),
        )
        for row in rows
    )
    session.flush()


def replace_baseline_forecasts(
    session: Session,
    *,
    run_id: int,
    ticker: str,
    as_of_date: date,
    model: str,
    rows: Sequence[ForecastRow],
) -> None:
    """Store baseline `model`'s forecast set, replacing any earlier one for (ticker, as_of_date).

    Other baselines' rows (and the model's own forecasts) of that ticker and date are untouched.
    """
    if not model:
        raise ValueError("baseline model name must not be empty")
    _check_horizons(rows)
    session.execute(
        delete(BaselineForecast).where(
            BaselineForecast.ticker == ticker,
            BaselineForecast.as_of_date == as_of_date,
            BaselineForecast.model == model,
        )
    )
    session.add_all(
        BaselineForecast(
            run_id=run_id,
            ticker=ticker,
            as_of_date=as_of_date,
            model=model,
            **row.columns(),
        )
        for row in rows
    )
    session.flush()


def _check_horizons(rows: Sequence[ForecastRow]) -> None:
    horizons = sorted(row.horizon for row in rows)
    if horizons != list(range(1, len(rows) + 1)):
        raise ValueError(f"forecast horizons must be 1..{len(rows)}, got {horizons}")
