"""Candle repository functions: upsert counts, idempotency, ranges and frame round trips."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Candle
from db.repository import (
    CandleRange,
    UpsertCounts,
    candle_ranges,
    empty_candle_frame,
    last_session_date,
    latest_session_dates,
    load_candles,
    load_recent_candles,
    upsert_candles,
)

FETCHED = datetime(2024, 1, 10, 23, 0, tzinfo=UTC)


def candle_frame(start: str, periods: int, *, base: float = 100.0) -> pd.DataFrame:
    """Business-day candles with distinct, exactly representable values."""
    index = pd.bdate_range(start, periods=periods, name="session_date")
    close = base + np.arange(periods, dtype="float64") * 0.25
    return pd.DataFrame(
        {
            "open": close - 0.5,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": 1_000_000.0 + np.arange(periods),
        },
        index=index,
    )


def test_upsert_counts_and_idempotency(session_factory: sessionmaker[Session]) -> None:
    frame = candle_frame("2024-01-01", 10)
    with session_factory.begin() as session:
        counts = upsert_candles(
            session, ticker="AAPL", frame=frame, source="bundled", fetched_at=FETCHED
        )
    assert counts == UpsertCounts(added=10, updated=0, unchanged=0)

    with session_factory.begin() as session:
        again = upsert_candles(session, ticker="AAPL", frame=frame, source="bundled")
    assert again == UpsertCounts(added=0, updated=0, unchanged=10)

    changed = pd.concat([frame.iloc[5:], candle_frame("2024-01-15", 3, base=200.0)])
    changed.iloc[0, changed.columns.get_loc("close")] += 0.125  # one corrected session
    with session_factory.begin() as session:
        counts = upsert_candles(session, ticker="AAPL", frame=changed, source="bundled")
    assert counts == UpsertCounts(added=3, updated=1, unchanged=4)

    with session_factory() as session:
        stored = session.scalars(select(Candle).order_by(Candle.session_date)).all()
        assert len(stored) == 13
        assert stored[5].close == frame["close"].iloc[5] + 0.125
        assert stored[0].fetched_at == FETCHED  # untouched rows keep their fetch time
        assert stored[5].fetched_at > FETCHED


def test_source_change_counts_as_update(session_factory: sessionmaker[Session]) -> None:
    frame = candle_frame("2024-01-01", 4)
    with session_factory.begin() as session:
        upsert_candles(session, ticker="AAPL", frame=frame, source="bundled")
        counts = upsert_candles(session, ticker="AAPL", frame=frame, source="yfinance")
    assert counts == UpsertCounts(added=0, updated=4, unchanged=0)
    with session_factory() as session:
        assert set(session.scalars(select(Candle.source))) == {"yfinance"}


def test_tickers_are_independent(session_factory: sessionmaker[Session]) -> None:
    frame = candle_frame("2024-01-01", 5)
    with session_factory.begin() as session:
        upsert_candles(session, ticker="AAPL", frame=frame, source="bundled")
        counts = upsert_candles(session, ticker="MSFT", frame=frame, source="bundled")
    assert counts.added == 5


def test_load_candles_round_trip(session_factory: sessionmaker[Session]) -> None:
    frame = candle_frame("2023-12-25", 8)
    frame["volume"] = frame["volume"].astype("int64")  # providers may hand integer volumes
    with session_factory.begin() as session:
        upsert_candles(session, ticker="AAPL", frame=frame.iloc[::-1], source="bundled")
    with session_factory() as session:
        loaded = load_candles(session, ticker="AAPL")
        window = load_candles(
            session, ticker="AAPL", start=date(2023, 12, 27), end=date(2024, 1, 2)
        )
    expected = frame.astype("float64")
    expected.index = expected.index.as_unit("ns")
    pd.testing.assert_frame_equal(loaded, expected, check_freq=False)
    assert list(window.index.date) == [
        date(2023, 12, 27),
        date(2023, 12, 28),
        date(2023, 12, 29),
        date(2024, 1, 1),
        date(2024, 1, 2),
    ]
    pd.testing.assert_frame_equal(window, expected.loc["2023-12-27":"2024-01-02"], check_freq=False)


def test_recent_candles_of_many_tickers_are_each_ones_tail(
    session_factory: sessionmaker[Session],
) -> None:
    """One query: each ticker's last `sessions` candles up to `end`, within a calendar window
    that `sessions` trading days fit in; a ticker whose data ended before it has none."""
    with session_factory.begin() as session:
        upsert_candles(session, ticker="AAPL", frame=candle_frame("2023-01-02", 300), source="x")
        upsert_candles(session, ticker="MSFT", frame=candle_frame("2023-09-01", 40), source="x")
        upsert_candles(session, ticker="OLD", frame=candle_frame("2023-01-02", 60), source="x")
    end = date(2023, 10, 2)
    tickers = ["AAPL", "MSFT", "OLD", "NONE"]
    with session_factory() as session:
        recent = load_recent_candles(session, tickers=tickers, end=end, sessions=30)
        expected = {t: load_candles(session, ticker=t, end=end).tail(30) for t in tickers}
    assert set(recent) == set(tickers)
    assert [len(recent[t]) for t in tickers] == [30, 22, 0, 0]
    for ticker in ("AAPL", "MSFT"):
        pd.testing.assert_frame_equal(recent[ticker], expected[ticker], check_freq=False)


def test_load_candles_empty(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        loaded = load_candles(session, ticker="NONE")
    assert loaded.empty
    assert list(loaded.columns) == ["open", "high", "low", "close", "volume"]
    assert loaded.index.name == "session_date"
    assert isinstance(loaded.index, pd.DatetimeIndex)
    assert (loaded.dtypes == "float64").all()
    pd.testing.assert_frame_equal(loaded, empty_candle_frame())


def test_last_session_date_and_ranges(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        assert last_session_date(session, ticker="AAPL") is None
        assert candle_ranges(session) == []
    with session_factory.begin() as session:
        upsert_candles(session, ticker="MSFT", frame=candle_frame("2024-01-01", 3), source="b")
        upsert_candles(session, ticker="AAPL", frame=candle_frame("2023-06-01", 20), source="b")
    with session_factory() as session:
        assert last_session_date(session, ticker="AAPL") == date(2023, 6, 28)
        assert candle_ranges(session) == [
            CandleRange(ticker="AAPL", first=date(2023, 6, 1), last=date(2023, 6, 28), count=20),
            CandleRange(ticker="MSFT", first=date(2024, 1, 1), last=date(2024, 1, 3), count=3),
        ]
        assert candle_ranges(session, tickers=["MSFT", "TSLA"]) == [
            CandleRange(ticker="MSFT", first=date(2024, 1, 1), last=date(2024, 1, 3), count=3),
        ]
        assert latest_session_dates(session, ticker="AAPL", count=3) == [
            date(2023, 6, 28),
            date(2023, 6, 27),
            date(2023, 6, 26),
        ]
        assert latest_session_dates(session, ticker="MSFT", count=10) == [
            date(2024, 1, 3),
            date(2024, 1, 2),
            date(2024, 1, 1),
        ]
        assert latest_session_dates(session, ticker="TSLA", count=3) == []


def test_upsert_does_not_commit(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        upsert_candles(session, ticker="AAPL", frame=candle_frame("2024-01-01", 3), source="b")
        session.rollback()
        assert last_session_date(session, ticker="AAPL") is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns="volume"), "lacks columns"),
        (lambda f: f.assign(close=np.nan), "NaN"),
        (lambda f: pd.concat([f, f.iloc[:1]]), "duplicate"),
    ],
)
def test_upsert_rejects_bad_frames(
    session_factory: sessionmaker[Session], mutate, message: str
) -> None:
    with session_factory() as session, pytest.raises(ValueError, match=message):
        upsert_candles(
            session, ticker="AAPL", frame=mutate(candle_frame("2024-01-01", 3)), source="b"
        )


def test_upsert_empty_frame(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        counts = upsert_candles(session, ticker="AAPL", frame=empty_candle_frame(), source="b")
    assert counts == UpsertCounts(0, 0, 0)


def test_upsert_3000_rows_is_fast(session_factory: sessionmaker[Session]) -> None:
    frame = candle_frame("2012-01-02", 3000)
    with session_factory.begin() as session:
        started = time.perf_counter()
        counts = upsert_candles(session, ticker="AAPL", frame=frame, source="bundled")
        session.flush()
        elapsed = time.perf_counter() - started
    assert counts.added == 3000
    assert elapsed < 1.0, f"upserting 3000 candles took {elapsed:.2f}s"
    with session_factory.begin() as session:
        started = time.perf_counter()
        counts = upsert_candles(session, ticker="AAPL", frame=frame * 1.5, source="bundled")
        elapsed = time.perf_counter() - started
    assert counts.updated == 3000
    assert elapsed < 1.0, f"updating 3000 candles took {elapsed:.2f}s"
