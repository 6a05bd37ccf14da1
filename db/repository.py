"""All of candlecast's SQL. Functions take a Session and keyword arguments and never commit.

Candle frames everywhere follow one contract: a DatetimeIndex named `session_date` (midnight,
naive, unit ns) and float64 columns open, high, low, close, volume, sorted by date (the stored
volume is an integer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import Candle, utcnow

CANDLE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
SESSION_INDEX = "session_date"


@dataclass(frozen=True)
class UpsertCounts:
    """How many rows an upsert inserted, changed and found identical."""

    added: int
    updated: int
    unchanged: int


@dataclass(frozen=True)
class CandleRange:
    """The stored span of one ticker's candles."""

    ticker: str
    first: date
    last: date
    count: int


def _dialect_insert(session: Session, table: Any) -> postgresql.Insert | sqlite.Insert:
    """INSERT construct of the session's dialect (supports ON CONFLICT on SQLite and PostgreSQL)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"upserts are not implemented for dialect {name!r}")


def _session_dates(frame: pd.DataFrame) -> list[date]:
    index = pd.DatetimeIndex(frame.index)
    if index.tz is not None:
        index = index.tz_localize(None)
    if index.hasnans:
        raise ValueError("candle frame index contains NaT")
    dates = [ts.date() for ts in index]
    if len(set(dates)) != len(dates):
        raise ValueError("candle frame has duplicate session dates")
    return dates


def upsert_candles(
    session: Session,
    *,
    ticker: str,
    frame: pd.DataFrame,
    source: str,
    fetched_at: datetime | None = None,
) -> UpsertCounts:
    """Insert new sessions of `ticker` and update changed ones; identical rows are left alone.

    A row counts as updated when any of its OHLCV values or its source differs from the stored
    one. Rows are written in one batched INSERT ... ON CONFLICT DO UPDATE; volume is rounded to
    whole shares (the column is an integer).
    """
    missing = [c for c in CANDLE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"candle frame lacks columns {missing}")
    if frame.empty:
        return UpsertCounts(0, 0, 0)
    dates = _session_dates(frame)
    values = frame.loc[:, list(CANDLE_COLUMNS)].to_numpy(dtype="float64")
    if pd.isna(values).any():
        raise ValueError(f"candle frame for {ticker} contains NaN values")
    fetched_at = fetched_at or utcnow()

    stored_rows = session.execute(
        select(Candle.session_date, Candle.source, *(getattr(Candle, c) for c in CANDLE_COLUMNS))
        .where(Candle.ticker == ticker)
        .where(Candle.session_date.between(min(dates), max(dates)))
    ).all()
    stored = {row[0]: (row[1], tuple(row[2:])) for row in stored_rows}

    added = updated = unchanged = 0
    rows: list[dict[str, Any]] = []
    for session_date, (*prices, volume) in zip(dates, values.tolist(), strict=True):
        row_values = (*prices, round(volume))  # volume is an integer column: whole shares
        previous = stored.get(session_date)
        if previous is None:
            added += 1
        elif previous[0] == source and previous[1] == row_values:
            unchanged += 1
            continue
        else:
            updated += 1
        row = dict(zip(CANDLE_COLUMNS, row_values, strict=True))
        row.update(ticker=ticker, session_date=session_date, source=source, fetched_at=fetched_at)
        rows.append(row)

    if rows:
        stmt = _dialect_insert(session, Candle.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Candle.ticker, Candle.session_date],
            set_={name: stmt.excluded[name] for name in (*CANDLE_COLUMNS, "source", "fetched_at")},
        )
        session.execute(stmt, rows)
    return UpsertCounts(added=added, updated=updated, unchanged=unchanged)


def delete_candles_not_in(
    session: Session,
    *,
    ticker: str,
    keep: Sequence[date],
    start: date,
    end: date | None = None,
) -> list[date]:
    """Delete `ticker`'s stored candles in [start, end] (end None: open) not dated in `keep`.

    A sync calls it so the synced range holds exactly what the provider returned (a row the
    provider no longer has, e.g. an off-calendar one, does not outlive a re-sync). Returns the
    deleted dates, oldest first.
    """
    query = select(Candle.session_date).where(Candle.ticker == ticker)
    query = query.where(Candle.session_date >= start)
    if end is not None:
        query = query.where(Candle.session_date <= end)
    kept = set(keep)
    gone = sorted(d for d in session.scalars(query) if d not in kept)
    if gone:
        session.execute(
            delete(Candle).where(Candle.ticker == ticker).where(Candle.session_date.in_(gone))
        )
    return gone


def last_session_date(session: Session, *, ticker: str) -> date | None:
    """The latest stored session of `ticker`, or None when it has no candles."""
    return session.scalar(select(func.max(Candle.session_date)).where(Candle.ticker == ticker))


def candle_ranges(session: Session, *, tickers: Sequence[str] | None = None) -> list[CandleRange]:
    """First and last session and row count per ticker in `candles` (all, or only `tickers`)."""
    query = select(
        Candle.ticker,
        func.min(Candle.session_date),
        func.max(Candle.session_date),
        func.count(),
    )
    if tickers is not None:
        query = query.where(Candle.ticker.in_(list(tickers)))
    rows = session.execute(query.group_by(Candle.ticker).order_by(Candle.ticker)).all()
    return [CandleRange(ticker=t, first=f, last=la, count=n) for t, f, la, n in rows]


def latest_session_dates(
    session: Session, *, ticker: str, count: int, end: date | None = None
) -> list[date]:
    """The `count` latest stored session dates of `ticker` (on or before `end`), newest first."""
    query = select(Candle.session_date).where(Candle.ticker == ticker)
    if end is not None:
        query = query.where(Candle.session_date <= end)
    query = query.order_by(Candle.session_date.desc()).limit(count)
    return list(session.scalars(query))


def empty_candle_frame() -> pd.DataFrame:
    """A candle frame with no rows (the frame contract's columns, dtypes and index)."""
    return _candle_frame([], [])


def _candle_frame(dates: Sequence[date], values: Sequence[Sequence[float]]) -> pd.DataFrame:
    index = pd.DatetimeIndex(pd.to_datetime(list(dates)), name=SESSION_INDEX).as_unit("ns")
    return pd.DataFrame(
        list(values), index=index, columns=list(CANDLE_COLUMNS), dtype="float64"
    ).rename_axis(SESSION_INDEX)


def load_candles(
    session: Session,
    *,
    ticker: str,
    start: date | None = None,
    end: date | None = None,
) -> pd.DataFrame:
    """Stored candles of `ticker` between `start` and `end` (both inclusive), oldest first."""
    stmt = select(Candle.session_date, *(getattr(Candle, c) for c in CANDLE_COLUMNS)).where(
        Candle.ticker == ticker
    )
    if start is not None:
        stmt = stmt.where(Candle.session_date >= start)
    if end is not None:
        stmt = stmt.where(Candle.session_date <= end)
    rows = session.execute(stmt.order_by(Candle.session_date)).all()
    return _candle_frame([r[0] for r in rows], [tuple(r[1:]) for r in rows])


def load_recent_candles(
    session: Session, *, tickers: Sequence[str], end: date, sessions: int
) -> dict[str, pd.DataFrame]:
    """The last `sessions` stored candles up to `end` of each of `tickers`, in one query, taken
    from a calendar-day window wide enough for `sessions` trading days: a ticker whose data
    stopped before that window has none there (what a cross-section of `end`'s recent sessions
    needs)."""
    start = end - timedelta(days=sessions * 7 // 5 + 20)
    stmt = (
        select(Candle.ticker, Candle.session_date, *(getattr(Candle, c) for c in CANDLE_COLUMNS))
        .where(Candle.ticker.in_(sorted(set(tickers))))
        .where(Candle.session_date >= start, Candle.session_date <= end)
        .order_by(Candle.ticker, Candle.session_date)
    )
    grouped: dict[str, tuple[list, list]] = {t: ([], []) for t in tickers}
    for row in session.execute(stmt):
        days, values = grouped[row[0]]
        days.append(row[1])
        values.append(tuple(row[2:]))
    return {t: _candle_frame(d, v).tail(sessions) for t, (d, v) in grouped.items()}
