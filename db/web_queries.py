"""Read-only queries behind the web app (JSON API and pages). Every statement is parameterised.

Functions take a Session and keyword arguments, return plain rows or ORM objects and never write.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Float,
    Row,
    RowMapping,
    Select,
    and_,
    bindparam,
    cast,
    func,
    select,
    text,
    tuple_,
)
from sqlalchemy.orm import Session, selectinload, undefer

from db.models import QUANTILE_COLUMNS, Candle, ForecastRun, ForecastRunTicker, ModelVersion
from db.models import Forecast as ForecastRow
from db.views import forecast_accuracy

_F = ForecastRow.__table__.c
_C = Candle.__table__.c
# Plain table columns (not ORM attributes): the hot path skips the ORM's per-statement work.
FORECAST_COLUMNS = (
    _F.ticker,
    _F.as_of_date,
    _F.horizon,
    _F.target_date,
    _F.open,
    _F.high,
    _F.low,
    _F.close,
    _F.close_lo,
    _F.close_hi,
    _F.model_version_id,
    _F.run_id,
    *(_F[name] for name in QUANTILE_COLUMNS),
    _F.model_mix,
)


@lru_cache(maxsize=2)
def _forecast_on_or_before_stmt(with_attention: bool) -> Select[Any]:
    """Built once: forecast rows as of the latest candle session <= :day (one round trip)."""
    as_of = (
        select(func.max(_C.session_date))
        .where(_C.ticker == bindparam("ticker"), _C.session_date <= bindparam("day"))
        .scalar_subquery()
    )
    columns = (*FORECAST_COLUMNS, _F.attention) if with_attention else FORECAST_COLUMNS
    return (
        select(*columns)
        .where(_F.ticker == bindparam("ticker"), _F.as_of_date == as_of)
        .order_by(_F.horizon)
    )


def ping(session: Session) -> None:
    """Round trip to the database (raises a DBAPIError when it is unreachable)."""
    session.execute(text("SELECT 1")).scalar_one()


def session_on_or_before(session: Session, *, ticker: str, day: date) -> date | None:
    """The latest stored candle session of `ticker` on or before `day` (None if there is none)."""
    return session.scalar(
        select(func.max(Candle.session_date)).where(
            Candle.ticker == ticker, Candle.session_date <= day
        )
    )


def forecast_on_or_before(
    session: Session, *, ticker: str, day: date, with_attention: bool = True
) -> Sequence[Row[Any]]:
    """Forecast rows (by horizon) made as of the latest candle session <= `day`, in one query.

    `with_attention=False` skips the attention JSON (the API does not return it).
    """
    stmt = _forecast_on_or_before_stmt(with_attention)
    return session.execute(stmt, {"ticker": ticker, "day": day}).all()


def latest_forecasts(session: Session, *, tickers: Sequence[str]) -> Sequence[Row[Any]]:
    """Rows of the newest stored forecast of each ticker in `tickers`, by ticker and horizon."""
    latest = (
        select(ForecastRow.ticker, func.max(ForecastRow.as_of_date).label("as_of_date"))
        .where(ForecastRow.ticker.in_(list(tickers)))
        .group_by(ForecastRow.ticker)
        .subquery()
    )
    stmt = (
        select(*FORECAST_COLUMNS, _F.attention)
        .join(
            latest,
            and_(
                ForecastRow.ticker == latest.c.ticker,
                ForecastRow.as_of_date == latest.c.as_of_date,
            ),
        )
        .order_by(ForecastRow.ticker, ForecastRow.horizon)
    )
    return session.execute(stmt).all()


def model_versions_info(session: Session, *, ids: Sequence[int]) -> dict[int, RowMapping]:
    """id -> (id, ticker, train_start, train_end, created_at, val_loss); artifacts not loaded."""
    if not ids:
        return {}
    stmt = select(
        ModelVersion.id,
        ModelVersion.ticker,
        ModelVersion.train_start,
        ModelVersion.train_end,
        ModelVersion.created_at,
        ModelVersion.val_loss,
    ).where(ModelVersion.id.in_(sorted(set(ids))))
    return {row.id: row for row in session.execute(stmt).mappings()}


def latest_model_id(session: Session, *, ticker: str, trained_up_to: date) -> int | None:
    """Id of the newest model of `ticker` trained on data up to `trained_up_to` (no artifact)."""
    return session.scalar(
        select(ModelVersion.id)
        .where(ModelVersion.ticker == ticker, ModelVersion.train_end <= trained_up_to)
        .order_by(ModelVersion.train_end.desc(), ModelVersion.id.desc())
        .limit(1)
    )


def model_version_with_artifact(session: Session, *, version_id: int) -> ModelVersion | None:
    """The model version `version_id` with its `.keras` bytes loaded."""
    stmt = (
        select(ModelVersion)
        .where(ModelVersion.id == version_id)
        .options(undefer(ModelVersion.artifact))
    )
    return session.scalars(stmt).first()


def nth_session_before(session: Session, *, ticker: str, day: date, n: int) -> date | None:
    """The session `n - 1` rows before the latest one <= `day` (start of an n-row tail)."""
    return session.scalar(
        select(Candle.session_date)
        .where(Candle.ticker == ticker, Candle.session_date <= day)
        .order_by(Candle.session_date.desc())
        .offset(max(n - 1, 0))
        .limit(1)
    )


def _accuracy_filter(ticker: str, start: date | None, end: date | None) -> list[Any]:
    conditions: list[Any] = [forecast_accuracy.c.ticker == ticker]
    if start is not None:
        conditions.append(forecast_accuracy.c.as_of_date >= start)
    if end is not None:
        conditions.append(forecast_accuracy.c.as_of_date <= end)
    return conditions


def forecast_history(
    session: Session, *, ticker: str, start: date | None, end: date | None, limit: int
) -> Sequence[RowMapping]:
    """Past forecasts with actuals and errors (forecast_accuracy), newest as-of first."""
    fa = forecast_accuracy.c
    stmt = (
        select(forecast_accuracy)
        .where(*_accuracy_filter(ticker, start, end))
        .order_by(fa.as_of_date.desc(), fa.horizon)
        .limit(limit)
    )
    return session.execute(stmt).mappings().all()


def accuracy_by_horizon(
    session: Session, *, ticker: str, start: date | None, end: date | None
) -> Sequence[RowMapping]:
    """Per horizon: forecasts with a known actual, model MAE, naive MAE, 80% coverage (`coverage`),
    50/90% coverage and the mean Winkler score of each interval (NULL where none was scored).
    """
    fa = forecast_accuracy.c
    stmt = (
        select(
            fa.horizon,
            func.count().label("n"),
            func.avg(fa.abs_error).label("model_mae"),
            func.avg(fa.naive_abs_error).label("naive_mae"),
            cast(func.avg(fa.in_interval), Float).label("coverage"),
            cast(func.avg(fa.in_interval_50), Float).label("coverage_50"),
            cast(func.avg(fa.in_interval_90), Float).label("coverage_90"),
            *(func.avg(fa[f"winkler_{lv}"]).label(f"winkler_{lv}") for lv in (50, 80, 90)),
        )
        .where(*_accuracy_filter(ticker, start, end), fa.actual_close.is_not(None))
        .group_by(fa.horizon)
        .order_by(fa.horizon)
    )
    return session.execute(stmt).mappings().all()


def recent_runs(session: Session, *, limit: int) -> Sequence[ForecastRun]:
    """The newest `limit` runs with their per-ticker outcomes."""
    stmt = (
        select(ForecastRun)
        .options(selectinload(ForecastRun.tickers))
        .order_by(ForecastRun.started_at.desc(), ForecastRun.id.desc())
        .limit(limit)
    )
    return session.scalars(stmt).all()


def latest_run(session: Session) -> ForecastRun | None:
    """The most recently started run, or None."""
    stmt = select(ForecastRun).order_by(ForecastRun.started_at.desc(), ForecastRun.id.desc())
    return session.scalars(stmt.limit(1)).first()


def latest_ticker_outcomes(session: Session, *, tickers: Sequence[str]) -> dict[str, RowMapping]:
    """ticker -> its outcome in the newest run that included it, with that run's times."""
    newest = (
        select(ForecastRunTicker.ticker, func.max(ForecastRunTicker.run_id).label("run_id"))
        .where(ForecastRunTicker.ticker.in_(list(tickers)))
        .group_by(ForecastRunTicker.ticker)
    )
    stmt = (
        select(
            ForecastRunTicker.ticker,
            ForecastRunTicker.run_id,
            ForecastRunTicker.status,
            ForecastRunTicker.error,
            ForecastRun.started_at,
            ForecastRun.finished_at,
        )
        .join(ForecastRun, ForecastRun.id == ForecastRunTicker.run_id)
        .where(tuple_(ForecastRunTicker.ticker, ForecastRunTicker.run_id).in_(newest))
    )
    return {row.ticker: row for row in session.execute(stmt).mappings()}
