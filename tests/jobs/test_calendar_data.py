"""Exchange calendars and stored candles (issue 10 item 1), on real SQLite/PostgreSQL.

An off-calendar row is reported and dropped by validation, each ticker forecasts as of its own
exchange's latest session, and a re-sync deletes stored rows the provider no longer returns.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from db import repository
from db.models import Forecast, ForecastRun, ForecastRunTicker
from forecasting.calendar import _sessions, next_sessions
from jobs.pipeline import Pipeline
from jobs.sync import provider_for, sync_tickers
from tests.jobs.conftest import BUNDLED, SESSIONS

FRIDAY = date(2023, 12, 29)
SATURDAY = date(2023, 12, 30)


def add_row(path: Path, day: date) -> None:
    """Append a copy of the file's last row, dated `day`."""
    frame = pd.read_csv(path)
    row = frame.iloc[[-1]].copy()
    row["Date"] = day.isoformat()
    pd.concat([frame, row]).to_csv(path, index=False)


def stored_dates(factory, ticker: str) -> list[date]:
    with factory() as s:
        return [ts.date() for ts in repository.load_candles(s, ticker=ticker).index]


@pytest.mark.slow
def test_a_saturday_last_row_is_reported_and_dropped_and_every_ticker_succeeds(
    pipeline_config, universe, session_factory, caplog
):
    add_row(universe / "MSFT.csv", SATURDAY)
    with caplog.at_level(logging.WARNING, logger="candlecast.data"):
        result = Pipeline(pipeline_config()).run_nightly()
    assert "MSFT: dropped 1 of 301 rows (not a XNYS session: 1); first: 2023-12-30" in (
        caplog.messages
    )
    assert result.as_of == FRIDAY
    assert [(o.ticker, o.status) for o in result.outcomes] == [
        ("AAPL", "succeeded"),
        ("MSFT", "succeeded"),
    ]
    assert stored_dates(session_factory, "MSFT")[-1] == FRIDAY
    with session_factory() as s:
        assert s.get(ForecastRun, result.run_id).as_of_date == FRIDAY
        assert set(s.scalars(select(Forecast.as_of_date))) == {FRIDAY}


def write_london(folder: Path, ticker: str, last: date) -> None:
    """Bundled MSFT values on the last SESSIONS sessions of XLON up to `last` (no Boxing Day)."""
    days = [d for d in _sessions("XLON") if d <= last][-SESSIONS:]
    frame = pd.read_csv(BUNDLED / "MSFT.csv.gz").tail(SESSIONS).reset_index(drop=True)
    frame["Date"] = [d.isoformat() for d in days]
    frame.to_csv(folder / f"{ticker}.csv", index=False)


@pytest.mark.slow
def test_tickers_on_different_exchanges_each_get_their_own_as_of(
    pipeline_config, universe, session_factory, caplog
):
    london = date(2023, 12, 27)
    write_london(universe, "SHEL.L", london)
    config = pipeline_config(
        tickers={"symbols": ["AAPL", "SHEL.L"], "exchanges": {"SHEL.L": "XLON"}}
    )
    with caplog.at_level(logging.WARNING, logger="candlecast.pipeline"):
        result = Pipeline(config).run_nightly()
    assert [(o.ticker, o.status) for o in result.outcomes] == [
        ("AAPL", "succeeded"),
        ("SHEL.L", "succeeded"),
    ]
    # London traded on 12-28 and 12-29 too: the early end of its data is said, not hidden.
    assert (
        "SHEL.L: forecast as of 2023-12-27, its last stored session; XLON has sessions up to "
        "2023-12-29" in caplog.messages
    )
    assert result.as_of == FRIDAY  # the run's as_of: the latest of its tickers' own as-of dates
    with session_factory() as s:
        rows = s.execute(
            select(Forecast.ticker, Forecast.as_of_date, Forecast.target_date).order_by(
                Forecast.ticker, Forecast.horizon
            )
        ).all()
        statuses = {t.ticker: t.status for t in s.scalars(select(ForecastRunTicker))}
        run = s.get(ForecastRun, result.run_id)
    assert run.as_of_date == FRIDAY and run.status == "succeeded"
    assert statuses == {"AAPL": "succeeded", "SHEL.L": "succeeded"}
    by_ticker: dict[str, list[tuple[date, date]]] = {}
    for ticker, as_of, target in rows:
        by_ticker.setdefault(ticker, []).append((as_of, target))
    assert by_ticker["AAPL"] == [(FRIDAY, d) for d in next_sessions(FRIDAY, 4, "XNYS")]
    assert by_ticker["SHEL.L"] == [(london, d) for d in next_sessions(london, 4, "XLON")]
    assert by_ticker["SHEL.L"][0][1] == date(2023, 12, 28)


def test_a_resync_removes_a_stored_off_calendar_row_the_provider_no_longer_has(
    pipeline_config, session_factory
):
    config = pipeline_config()
    provider = provider_for(config)
    sync_tickers(config, session_factory, provider, ["AAPL", "MSFT"])
    before = stored_dates(session_factory, "MSFT")
    with session_factory.begin() as s:  # what the old code stored from a file with a Saturday
        legacy = repository.load_candles(s, ticker="MSFT").tail(1)
        legacy.index = pd.DatetimeIndex([pd.Timestamp(SATURDAY)], name="session_date")
        repository.upsert_candles(s, ticker="MSFT", frame=legacy, source="csv")
    assert stored_dates(session_factory, "MSFT")[-1] == SATURDAY

    (aapl, msft) = sync_tickers(config, session_factory, provider, ["AAPL", "MSFT"])
    assert stored_dates(session_factory, "MSFT") == before
    assert msft.ok and msft.removed == 1 and msft.last == FRIDAY
    assert aapl.ok and aapl.removed == 0


@pytest.mark.slow
def test_a_resync_removes_a_weekday_row_the_provider_dropped_and_keeps_older_rows(
    pipeline_config, universe, session_factory
):
    config = pipeline_config()
    provider = provider_for(config)
    sync_tickers(config, session_factory, provider, ["MSFT"])
    before = stored_dates(session_factory, "MSFT")
    frame = pd.read_csv(universe / "MSFT.csv")
    # The provider now lacks 2023-12-28 (inside the overlap a re-sync fetches) and 2023-01-03
    # (long before it: outside the synced range, so the stored row stays).
    frame = frame[~frame["Date"].isin(["2023-12-28", "2023-01-03"])]
    frame.to_csv(universe / "MSFT.csv", index=False)

    (msft,) = sync_tickers(config, session_factory, provider, ["MSFT"])
    assert stored_dates(session_factory, "MSFT") == [d for d in before if d != date(2023, 12, 28)]
    assert msft.ok and msft.removed == 1
    result = Pipeline(config).run_nightly(tickers=["MSFT"])
    assert result.as_of == FRIDAY and result.status == "succeeded"
