"""Backfill follows the nightly run's per-ticker rules (issue 17 item 16), on SQLite/PostgreSQL.

Each ticker forecasts as of its own latest session on or before the backfilled date, on its own
exchange calendar (jobs.pipeline.Pipeline._ticker_as_ofs, shared with the nightly run), and the
global model is fitted over the tickers that synced only.
"""

from __future__ import annotations

import logging
from datetime import date

import pandas as pd
import pytest
from sqlalchemy import func, select

import jobs.global_fit
from db.models import Forecast, ForecastRun, ForecastRunTicker, GlobalModel
from jobs.pipeline import Pipeline
from jobs.sync import provider_for, sync_tickers
from tests.conftest import one_backend
from tests.jobs.test_calendar_data import write_london

pytestmark = pytest.mark.slow  # real daemons, training or installs: seconds each

BOXING_DAY = date(2023, 12, 26)  # an XNYS session, an XLON holiday


def stored_as_ofs(factory) -> dict[tuple[int, str], date]:
    """(run id, ticker) -> the as-of date of that ticker's forecasts stored by that run (a
    later run forecasting the same ticker and as-of date replaces them)."""
    with factory() as s:
        rows = s.execute(select(Forecast.run_id, Forecast.ticker, Forecast.as_of_date)).all()
    return {(run_id, ticker): as_of for run_id, ticker, as_of in rows}


def statuses(factory, run_id: int) -> dict[str, str]:
    with factory() as s:
        rows = s.scalars(select(ForecastRunTicker).where(ForecastRunTicker.run_id == run_id))
        return {t.ticker: t.status for t in rows}


@one_backend
def test_backfill_forecasts_each_ticker_as_of_its_own_exchange_session(
    pipeline_config, universe, session_factory
):
    write_london(universe, "SHEL.L", date(2023, 12, 29))
    config = pipeline_config(
        tickers={"symbols": ["AAPL", "SHEL.L"], "exchanges": {"SHEL.L": "XLON"}}
    )
    results = Pipeline(config).run_backfill(
        start=date(2023, 12, 22), end=date(2023, 12, 26), retrain_every=10
    )
    # XNYS sessions 22 and 26; London is closed on the 26th (Boxing Day)
    assert [r.as_of for r in results] == [date(2023, 12, 22), BOXING_DAY]
    assert [r.status for r in results] == ["succeeded"] * 2, [r.outcomes for r in results]
    first, boxing = (r.run_id for r in results)
    assert statuses(session_factory, boxing) == {"AAPL": "succeeded", "SHEL.L": "succeeded"}
    # SHEL.L as of its latest session on or before the 26th (the nightly run's rule); this set
    # replaces the one the run of the 22nd stored for the same as-of date
    assert stored_as_ofs(session_factory) == {
        (first, "AAPL"): date(2023, 12, 22),
        (boxing, "AAPL"): BOXING_DAY,
        (boxing, "SHEL.L"): date(2023, 12, 22),
    }
    with session_factory() as s:
        runs = {r.id: r.as_of_date for r in s.scalars(select(ForecastRun))}
        sizes = s.execute(
            select(func.count())
            .select_from(Forecast)
            .group_by(Forecast.ticker, Forecast.as_of_date)
        ).scalars()
        assert list(sizes) == [4, 4, 4]
    assert runs[boxing] == BOXING_DAY


@one_backend
def test_backfill_forecasts_a_ticker_missing_a_session_as_of_its_latest_one(
    pipeline_config, universe, session_factory, caplog
):
    path = universe / "MSFT.csv"
    frame = pd.read_csv(path)
    frame[frame["Date"] != "2023-12-27"].to_csv(path, index=False)
    with caplog.at_level(logging.WARNING, logger="candlecast.pipeline"):
        results = Pipeline(pipeline_config()).run_backfill(
            start=date(2023, 12, 26), end=date(2023, 12, 28), retrain_every=10
        )
    assert [r.as_of for r in results] == [date(2023, 12, d) for d in (26, 27, 28)]
    assert [r.status for r in results] == ["succeeded"] * 3, [r.outcomes for r in results]
    assert stored_as_ofs(session_factory)[(results[1].run_id, "MSFT")] == BOXING_DAY
    assert (
        "MSFT: forecast as of 2023-12-26, its last stored session; XNYS has sessions up to "
        "2023-12-27" in caplog.messages
    )


@one_backend
def test_backfill_fits_the_global_model_over_the_tickers_that_synced(
    pipeline_config, universe, session_factory, monkeypatch
):
    """The global model (HAR-range pooled inside it) is fitted over the tickers that synced:
    once for a retrain every 10 sessions, and stored with that universe. (With per-ticker
    networks this was the pooled HAR-range fit they shared.)"""
    config = pipeline_config()
    sync_tickers(config, session_factory, provider_for(config), ["AAPL", "MSFT"])
    (universe / "MSFT.csv").write_text("garbage,,x\n1,2,3\n")  # stored candles, failing sync
    pooled: list[tuple[str, ...]] = []
    real = jobs.global_fit.global_records

    def spy(factory, config, tickers, as_of):
        pooled.append(tuple(tickers))
        return real(factory, config, tickers, as_of)

    monkeypatch.setattr(jobs.global_fit, "global_records", spy)
    results = Pipeline(config).run_backfill(
        start=date(2023, 12, 28), end=date(2023, 12, 29), retrain_every=10
    )
    assert [r.status for r in results] == ["partial", "partial"]
    assert all(
        [(o.ticker, o.status) for o in r.outcomes] == [("AAPL", "succeeded"), ("MSFT", "failed")]
        for r in results
    )
    assert pooled == [("AAPL",)]  # once (one retrain), without the ticker whose sync failed
    with session_factory() as s:
        assert [g.tickers for g in s.scalars(select(GlobalModel))] == [["AAPL"]]
