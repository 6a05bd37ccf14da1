"""Read-only queries behind the web app (JSON API and pages). Every statement is parameterised.

Functions take a Session and keyword arguments, return plain rows or ORM objects and never write.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import date
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Engine,
    Float,
    Row,
    RowMapping,
    Select,
    String,
    and_,
    bindparam,
    cast,
    func,
    literal,
    select,
    text,
    tuple_,
    union_all,
)
from sqlalchemy.orm import Session, selectinload, undefer

from db.models import (
    QUANTILE_COLUMNS,
    Candle,
    ForecastRun,
    ForecastRunTicker,
    ModelVersion,
    data_changes,
)
from db.models import Forecast as ForecastRow
from db.views import baseline_accuracy, forecast_accuracy

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


def stored_as_of_around(
    session: Session, *, ticker: str, day: date
) -> tuple[date | None, date | None, date | None, date | None]:
    """(first, last) as-of dates with a stored forecast of `ticker`, and the nearest ones before
    and after `day`, in one query (None where there is none)."""
    as_of = _F.as_of_date
    mine = _F.ticker == ticker
    row = session.execute(
        select(
            select(func.min(as_of)).where(mine).scalar_subquery(),
            select(func.max(as_of)).where(mine).scalar_subquery(),
            select(func.max(as_of)).where(mine, as_of < day).scalar_subquery(),
            select(func.min(as_of)).where(mine, as_of > day).scalar_subquery(),
        )
    ).one()
    return row[0], row[1], row[2], row[3]


def forecast_on_or_before(
    session: Session, *, ticker: str, day: date, with_attention: bool = True
) -> Sequence[Row[Any]]:
    """Forecast rows (by horizon) made as of the latest candle session <= `day`, in one query.

    `with_attention=False` skips the attention JSON (the API does not return it).
    """
    stmt = _forecast_on_or_before_stmt(with_attention)
    return session.execute(stmt, {"ticker": ticker, "day": day}).all()


def latest_forecasts(session: Session, *, tickers: Sequence[str]) -> Sequence[Any]:
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


RECENT_CLOSES_CHUNK = 200  # tickers per query (SQLite allows 500 terms in one UNION ALL)


def recent_closes(
    session: Session, *, tickers: Sequence[str], sessions: int
) -> dict[str, list[tuple[date, float]]]:
    """ticker -> its last `sessions` (date, close) pairs, oldest first.

    One query per RECENT_CLOSES_CHUNK tickers: a UNION ALL of one `ORDER BY session_date DESC
    LIMIT sessions` per ticker, each an index range read of the candles primary key, so the cost
    follows the rows shown, not the years of history stored (a window function over every candle
    of the tickers took 12 ms of a 17 ms index page with five tickers of 19 years).
    """
    out: dict[str, list[tuple[date, float]]] = {}
    unique = list(dict.fromkeys(tickers))
    for first in range(0, len(unique), RECENT_CLOSES_CHUNK):
        parts = []
        for ticker in unique[first : first + RECENT_CLOSES_CHUNK]:
            tail = (
                select(_C.ticker, _C.session_date, _C.close)
                .where(_C.ticker == ticker)
                .order_by(_C.session_date.desc())
                .limit(sessions)
                .subquery()
            )
            parts.append(select(tail.c.ticker, tail.c.session_date, tail.c.close))
        for row in session.execute(union_all(*parts)):
            out.setdefault(row.ticker, []).append((row.session_date, row.close))
    return {ticker: sorted(rows) for ticker, rows in out.items()}


def latest_forecast_models(session: Session, *, tickers: Sequence[str]) -> dict[str, RowMapping]:
    """ticker -> (ticker, as_of_date, model_version_id, train_end, age_sessions) of its newest
    stored forecast; age_sessions counts the ticker's candle sessions in (train_end, as_of_date].
    Tickers whose newest forecast has no model version are absent.
    """
    if not tickers:
        return {}
    newest = (
        select(_F.ticker, func.max(_F.as_of_date).label("as_of_date"))
        .where(_F.ticker.in_(list(tickers)))
        .group_by(_F.ticker)
        .subquery()
    )
    made = (
        select(_F.ticker, _F.as_of_date, _F.model_version_id)
        .join(newest, and_(_F.ticker == newest.c.ticker, _F.as_of_date == newest.c.as_of_date))
        .where(_F.horizon == 1, _F.model_version_id.is_not(None))
        .subquery()
    )
    stmt = (
        select(
            made.c.ticker,
            made.c.as_of_date,
            made.c.model_version_id,
            ModelVersion.train_end,
            func.count(_C.session_date).label("age_sessions"),
        )
        .join(ModelVersion, ModelVersion.id == made.c.model_version_id)
        .outerjoin(
            Candle,
            and_(
                _C.ticker == made.c.ticker,
                _C.session_date > ModelVersion.train_end,
                _C.session_date <= made.c.as_of_date,
            ),
        )
        .group_by(made.c.ticker, made.c.as_of_date, made.c.model_version_id, ModelVersion.train_end)
    )
    return {row.ticker: row for row in session.execute(stmt).mappings()}


def runs_page(
    session: Session, *, status: str | None, limit: int, offset: int
) -> tuple[list[ForecastRun], int | None]:
    """One page of runs, newest first, with their ticker outcomes (two queries), and how many
    runs match `status` (None = any): the total comes with the page from a window count, or from
    a count query when the page is past the end.
    """
    where = [ForecastRun.status == status] if status is not None else []
    stmt = (
        select(ForecastRun, func.count().over().label("total"))
        .where(*where)
        .options(selectinload(ForecastRun.tickers))
        .order_by(ForecastRun.started_at.desc(), ForecastRun.id.desc())
        .limit(limit)
        .offset(offset)
    )
    rows = session.execute(stmt).all()
    if rows:
        return [row[0] for row in rows], int(rows[0].total)
    if offset == 0:
        return [], 0
    return [], session.scalar(select(func.count()).select_from(ForecastRun).where(*where))


def run_with_tickers(session: Session, *, run_id: int) -> ForecastRun | None:
    """The run `run_id` with its per-ticker outcomes (by ticker), or None."""
    stmt = (
        select(ForecastRun)
        .where(ForecastRun.id == run_id)
        .options(selectinload(ForecastRun.tickers))
    )
    return session.scalars(stmt).first()


def run_forecasts(session: Session, *, run_id: int) -> Sequence[RowMapping]:
    """The forecast candles stored by run `run_id` (ticker, as_of_date, horizon, close,
    model_mix), by ticker, newest as-of first, then horizon: what a run page shows."""
    stmt = (
        select(_F.ticker, _F.as_of_date, _F.horizon, _F.close, _F.model_mix)
        .where(_F.run_id == run_id)
        .order_by(_F.ticker, _F.as_of_date.desc(), _F.horizon)
    )
    return session.execute(stmt).mappings().all()


def model_version_metrics(session: Session, *, ids: Sequence[int]) -> dict[int, RowMapping]:
    """id -> (id, train_end, val_loss, metrics) of model versions (artifacts not loaded)."""
    if not ids:
        return {}
    stmt = select(
        ModelVersion.id, ModelVersion.train_end, ModelVersion.val_loss, ModelVersion.metrics
    ).where(ModelVersion.id.in_(sorted(set(ids))))
    return {row.id: row for row in session.execute(stmt).mappings()}


# --- API paging and response caching (issue 12 parts 4 and 5) ---


def forecast_history_page(
    session: Session,
    *,
    ticker: str,
    start: date | None,
    end: date | None,
    after: tuple[date, int] | None,
    limit: int,
) -> Sequence[RowMapping]:
    """One page of forecast_history (newest as-of first, then horizon), keyset-paginated.

    `after` is the (as_of_date, horizon) of the previous page's last row: only rows after it in
    that order are returned (as_of_date < d, or as_of_date = d and horizon > h).
    """
    fa = forecast_accuracy.c
    conditions = _accuracy_filter(ticker, start, end)
    if after is not None:
        day, horizon = after
        conditions.append((fa.as_of_date < day) | ((fa.as_of_date == day) & (fa.horizon > horizon)))
    stmt = (
        select(forecast_accuracy)
        .where(*conditions)
        .order_by(fa.as_of_date.desc(), fa.horizon)
        .limit(limit)
    )
    return session.execute(stmt).mappings().all()


@lru_cache(maxsize=1)
def _change_marker_stmt() -> Select[Any]:
    """Built once: the data version (one primary-key lookup)."""
    return select(data_changes.c.version).where(data_changes.c.id == 1)


def _marker(row: Sequence[Any] | None) -> tuple[int, ...]:
    """(version,); without the row (deleted by hand) a marker no other read returns, so nothing
    rendered is ever reused while it is missing."""
    if row is None:
        return (-1, secrets.randbits(64))
    return (row[0],)


def change_marker(session: Session) -> tuple[int, ...]:
    """(data version,): a random number the database replaces in every transaction that writes
    a table whose rows the app shows (triggers of migration 0004: candles, forecasts, runs, run
    tickers, model versions, baselines), so caches of rendered answers key on it. It changes at
    commit, whoever writes, and never repeats across a rebuilt schema.
    """
    return _marker(session.execute(_change_marker_stmt()).first())


# --- ticker page: accuracy panel honouring as-of and window, paged history (issue 12 part 2) ---


def _scored(table: Any, ticker: str, start: date | None, end: date | None) -> list[Any]:
    c = table.c
    conditions: list[Any] = [
        c.ticker == ticker,
        c.actual_close.is_not(None),
        c.abs_error.is_not(None),
        c.naive_abs_error.is_not(None),
    ]
    if start is not None:
        conditions.append(c.as_of_date >= start)
    if end is not None:
        conditions.append(c.as_of_date <= end)
    return conditions


_SCORED_COLUMNS = (
    "ticker", "as_of_date", "horizon", "open", "high", "low", "close", "close_lo", "close_hi",
    *QUANTILE_COLUMNS, "actual_high", "actual_low", "actual_close", "naive_close",
)  # fmt: skip


def scored_rows(
    session: Session,
    *,
    tickers: Sequence[str],
    start: date | None,
    end: date | None,
    product: str,
    baselines: Sequence[str],
) -> Sequence[RowMapping]:
    """Stored forecasts of `tickers` made in [start, end] whose actual is known, in the backtest
    row shape: the served ones (forecast_accuracy) under `product` and the `baselines`' rows
    (baseline_accuracy) under their model names, in one query."""

    def part(view: Any, model: Any, *extra: Any) -> Select[Any]:
        c = view.c
        conditions = [c.ticker.in_(tickers), c.actual_close.is_not(None), *extra]
        if start is not None:
            conditions.append(c.as_of_date >= start)
        if end is not None:
            conditions.append(c.as_of_date <= end)
        return select(model.label("model"), *(c[name] for name in _SCORED_COLUMNS)).where(
            *conditions
        )

    served = part(forecast_accuracy, literal(product, String))
    others = part(
        baseline_accuracy, baseline_accuracy.c.model, baseline_accuracy.c.model.in_(baselines)
    )
    return session.execute(union_all(served, others)).mappings().all()


def nth_forecast_date_back(session: Session, *, n: int) -> date | None:
    """The as-of date `n` stored as-of dates before the newest one (any ticker), or the oldest
    when there are fewer: the start of "the last n sessions" for a page about many tickers."""
    as_of = ForecastRow.as_of_date
    recent = select(as_of).group_by(as_of).order_by(as_of.desc()).limit(n).subquery()
    return session.scalar(select(func.min(recent.c.as_of_date)))


def scored_forecasts_page(
    session: Session,
    *,
    ticker: str,
    start: date | None,
    end: date | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[RowMapping], int]:
    """One page of scored forecasts (newest as-of first, then horizon) and how many there are."""
    fa = forecast_accuracy
    conditions = _scored(fa, ticker, start, end)
    stmt = (
        select(fa)
        .where(*conditions)
        .order_by(fa.c.as_of_date.desc(), fa.c.horizon)
        .limit(limit)
        .offset(offset)
    )
    rows = session.execute(stmt).mappings().all()
    total = session.scalar(select(func.count()).select_from(fa).where(*conditions)) or 0
    return rows, int(total)


_MARKER_SQL: dict[str, str] = {}


def change_marker_fast(engine: Engine, session: Callable[[], Session]) -> tuple[int, ...]:
    """change_marker over a pooled DBAPI connection (no Session, no ORM: the hot path of cached
    answers). Any failure falls back to change_marker(session()), which raises the usual
    errors (DBAPIError, DatabaseFileMissing) for the app's error handlers.
    """
    sql = _MARKER_SQL.get(engine.dialect.name)
    if sql is None:
        compiled = _change_marker_stmt().compile(
            dialect=engine.dialect, compile_kwargs={"literal_binds": True}
        )
        sql = _MARKER_SQL.setdefault(engine.dialect.name, str(compiled))
    try:
        raw = engine.raw_connection()
    except Exception:
        return change_marker(session())
    try:
        cursor = raw.cursor()
        try:
            cursor.execute(sql)
            row = cursor.fetchone()
        finally:
            cursor.close()
    except Exception:
        raw.invalidate()
        return change_marker(session())
    finally:
        raw.close()  # back to the pool, which rolls the read transaction back
    return _marker(row)
