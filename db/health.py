"""Read-only queries behind readiness (/readyz, `candlecast status`) and the Prometheus metrics.

`readiness()` is the one place the verdict is decided; the caller passes the time a run was last
due (jobs.health computes it from the cron schedule), so this module knows nothing of schedules.
Every query here is cheap: one indexed lookup or one aggregate over a bounded set of rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import Float, cast, func, select
from sqlalchemy.orm import Session

from db.models import FINISHED_RUN_STATUSES, Candle, Forecast, ForecastRun, ForecastRunTicker
from db.views import forecast_accuracy

DEGRADED_STATUSES: tuple[str, ...] = ("failed", "partial")
ACCURACY_SESSIONS = 60  # rolling accuracy: the last this many scored target sessions
# Newest finish first; a final row without finished_at (not written by candlecast) sorts last on
# both backends (PostgreSQL would put NULLs first in a DESC order).
_NEWEST_FINISHED = (
    ForecastRun.finished_at.is_(None),
    ForecastRun.finished_at.desc(),
    ForecastRun.id.desc(),
)


@dataclass(frozen=True)
class DataAge:
    """How far the stored candles are behind: the stalest ticker's newest candle."""

    as_of: date  # the oldest of the tickers' newest candles
    sessions_behind: int  # sessions of its exchange after it, up to today
    tickers: tuple[str, ...]  # the tickers whose newest candle is that old
    stale_after: int  # [schedule] data_stale_after_sessions (0: never stale)

    @property
    def stale(self) -> bool:
        return self.stale_after > 0 and self.sessions_behind > self.stale_after

    def describe(self) -> str:
        names = ", ".join(self.tickers[:5]) + (" ..." if len(self.tickers) > 5 else "")
        return (
            f"the newest candle of {names} is from {self.as_of.isoformat()}, "
            f"{self.sessions_behind} sessions ago"
        )


def newest_candles(session: Session, *, tickers: Sequence[str]) -> dict[str, date]:
    """ticker -> its newest stored candle's session date (tickers without any left out)."""
    if not tickers:
        return {}
    stmt = (
        select(Candle.ticker, func.max(Candle.session_date))
        .where(Candle.ticker.in_(tickers))
        .group_by(Candle.ticker)
    )
    return {ticker: day for ticker, day in session.execute(stmt)}


@dataclass(frozen=True)
class Readiness:
    """The verdict: ok, or degraded with one human-readable reason per problem."""

    reasons: list[str] = field(default_factory=list)
    latest_run: ForecastRun | None = None  # the latest finished run
    last_success: ForecastRun | None = None  # the latest succeeded run
    due_at: datetime | None = None  # the run that must have succeeded by now was due then
    stale: bool = False  # no run succeeded since due_at (one of the reasons)
    data: DataAge | None = None  # how old the stored candles are (jobs.health.data_age)

    @property
    def ok(self) -> bool:
        return not self.reasons

    @property
    def status(self) -> str:
        return "ok" if self.ok else "degraded"


def latest_finished_run(session: Session) -> ForecastRun | None:
    """The run that finished last (any final status), or None."""
    stmt = (
        select(ForecastRun)
        .where(ForecastRun.status.in_(FINISHED_RUN_STATUSES))
        .order_by(*_NEWEST_FINISHED)
        .limit(1)
    )
    return session.scalars(stmt).first()


def last_success(session: Session) -> ForecastRun | None:
    """The succeeded run that finished last, or None."""
    stmt = (
        select(ForecastRun)
        .where(ForecastRun.status == "succeeded")
        .order_by(*_NEWEST_FINISHED)
        .limit(1)
    )
    return session.scalars(stmt).first()


def describe_run(run: ForecastRun) -> str:
    """'run 7 (schedule, as of 2023-12-29)': how a reason names a run."""
    as_of = f", as of {run.as_of_date.isoformat()}" if run.as_of_date else ""
    return f"run {run.id} ({run.trigger}{as_of})"


def readiness(
    session: Session,
    *,
    now: datetime,
    due_at: datetime | None,
    stale_after_hours: float,
    data: DataAge | None = None,
) -> Readiness:
    """Degraded when the latest finished run failed or was partial, when no run succeeded
    (finished) at or after `due_at`: the latest scheduled fire time at least `stale_after_hours`
    before `now`, i.e. the run that should have succeeded by now (None: nothing was due), or
    when the candles are stale (`data`, see DataAge)."""
    reasons: list[str] = []
    stale = False
    latest = latest_finished_run(session)
    success = last_success(session)
    if latest is not None and latest.status in DEGRADED_STATUSES:
        message = f": {latest.message}" if latest.message else ""
        reasons.append(f"latest finished {describe_run(latest)} is {latest.status}{message}")
    if due_at is not None and (
        success is None or success.finished_at is None or success.finished_at < due_at
    ):
        stale = True
        last = "never"
        if success is not None and success.finished_at is not None:
            last = f"{describe_run(success)} at {success.finished_at.isoformat()}"
        reasons.append(
            f"no run succeeded within {stale_after_hours:g} h of the run due at "
            f"{due_at.isoformat()} (last success: {last})"
        )
    if data is not None and data.stale:
        reasons.append(
            f"the data is stale: {data.describe()} (more than {data.stale_after}; "
            "[schedule] data_stale_after_sessions)"
        )
    return Readiness(
        reasons=reasons,
        latest_run=latest,
        last_success=success,
        due_at=due_at,
        stale=stale,
        data=data,
    )


def run_ticker_counts(session: Session, *, run_id: int) -> dict[str, int]:
    """Ticker status -> how many tickers of run `run_id` ended with it."""
    stmt = (
        select(ForecastRunTicker.status, func.count())
        .where(ForecastRunTicker.run_id == run_id)
        .group_by(ForecastRunTicker.status)
    )
    return {status: int(count) for status, count in session.execute(stmt)}


def newest_forecast_times(session: Session, *, tickers: Sequence[str]) -> dict[str, datetime]:
    """Ticker -> when its newest stored forecast was written (tickers without one are absent)."""
    stmt = (
        select(Forecast.ticker, func.max(Forecast.created_at))
        .where(Forecast.ticker.in_(list(tickers)))
        .group_by(Forecast.ticker)
    )
    return {ticker: created for ticker, created in session.execute(stmt) if created is not None}


def rolling_accuracy(
    session: Session, *, tickers: Sequence[str], sessions: int = ACCURACY_SESSIONS
) -> list[dict[str, Any]]:
    """Per ticker and horizon, over its last `sessions` scored forecasts (actual close known):
    n, model close MAE, naive close MAE and 80% interval coverage (NULL where never scored)."""
    fa = forecast_accuracy.c
    ranked = (
        select(
            fa.ticker,
            fa.horizon,
            fa.abs_error,
            fa.naive_abs_error,
            fa.in_interval,
            func.row_number()
            .over(partition_by=(fa.ticker, fa.horizon), order_by=fa.target_date.desc())
            .label("rank"),
        )
        .where(fa.ticker.in_(list(tickers)), fa.actual_close.is_not(None))
        .subquery()
    )
    r = ranked.c
    stmt = (
        select(
            r.ticker,
            r.horizon,
            func.count().label("n"),
            cast(func.avg(r.abs_error), Float).label("model_mae"),
            cast(func.avg(r.naive_abs_error), Float).label("naive_mae"),
            cast(func.avg(r.in_interval), Float).label("coverage_80"),
        )
        .where(r.rank <= sessions)
        .group_by(r.ticker, r.horizon)
        .order_by(r.ticker, r.horizon)
    )
    return [dict(row) for row in session.execute(stmt).mappings()]
