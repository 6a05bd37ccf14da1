"""A killed daemon's run is resumed at the next start-up: only its tickers without forecasts."""

from __future__ import annotations

import logging
import signal
import subprocess
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

from db import migrate, runs
from db.models import Forecast, ForecastRun
from db.session import make_engine, make_session_factory
from forecasting.calendar import next_sessions
from jobs.pipeline import Pipeline
from jobs.scheduler import resume_abandoned
from jobs.tasks import TickerOutcome
from tests.jobs.conftest import write_config, write_universe
from tests.jobs.test_reliability import (
    NOTHING,
    SLOW_MODEL,
    TIMEOUT_S,
    fitting,
    forecast_sets,
    stored,
    wait_for,
)

pytestmark = pytest.mark.slow  # real daemons, training or installs: seconds each

AS_OF = date(2023, 12, 29)  # the last bundled session: the as-of a run now uses


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def store_set(session, run_id: int, ticker: str, as_of: date) -> None:
    """A forecast set with made-up numbers and the ticker's `succeeded` outcome."""
    rows = [
        runs.ForecastRow(h, day, 100.0, 101.0, 99.0, 100.5, 99.5, 101.5)
        for h, day in enumerate(next_sessions(as_of, 4), start=1)
    ]
    runs.replace_forecasts(
        session, run_id=run_id, ticker=ticker, as_of_date=as_of, rows=rows, model_version_id=None
    )
    runs.finish_ticker(session, run_id=run_id, ticker=ticker, status="succeeded", duration_s=1)


def leave_run(factory, *, as_of: date, done: tuple[str, ...], status="running", trigger="schedule"):
    """A run row as a killed process leaves it: `done` tickers stored (fake numbers), no others."""
    with factory.begin() as s:
        run = runs.start_run(s, trigger=trigger, as_of_date=as_of)
        run.pid, run.status = dead_pid(), status
        for ticker in done:
            store_set(s, run.id, ticker, as_of)
        return run.id


def fake_process_ticker(factory, config, run_id, ticker, as_of, *night_model):
    """process_ticker without the forecast, whatever the night's model it is given (the night
    still fits it; test_pipeline and the daemon test below forecast for real)."""
    with factory.begin() as s:
        store_set(s, run_id, ticker, as_of)
    return TickerOutcome(ticker, "succeeded")


def all_runs(factory) -> list[tuple[int, str, str, str | None]]:
    with factory() as s:
        rows = s.execute(
            select(ForecastRun.id, ForecastRun.trigger, ForecastRun.status, ForecastRun.message)
        )
        return sorted(tuple(r) for r in rows)


def test_resume_runs_only_the_tickers_without_forecasts_once(
    pipeline_config, session_factory, caplog, monkeypatch
):
    monkeypatch.setattr("jobs.pipeline.process_ticker", fake_process_ticker)
    pipeline = Pipeline(pipeline_config())
    pipeline._sync(("AAPL", "MSFT"), None)  # the candles the killed run had synced
    stale = leave_run(session_factory, as_of=AS_OF, done=("AAPL",))
    with caplog.at_level(logging.WARNING, logger="candlecast"):
        result = resume_abandoned(pipeline)
    assert (
        f"resuming abandoned run {stale} as of 2023-12-29: 1 ticker(s) without forecasts: MSFT"
        in caplog.text
    )
    assert result.status == "succeeded" and result.as_of == AS_OF
    assert [o.ticker for o in result.outcomes] == ["MSFT"]
    assert all_runs(session_factory) == [
        (
            stale,
            "schedule",
            "abandoned",
            "abandoned: the process running it stopped before finishing",
        ),
        (result.run_id, "schedule", "succeeded", f"1 ticker: all succeeded (resumes run {stale})"),
    ]
    with session_factory() as s:
        owners = dict(s.execute(select(Forecast.ticker, Forecast.run_id).distinct()).all())
    assert owners == {"AAPL": stale, "MSFT": result.run_id}  # AAPL's set was kept, not redone
    assert forecast_sets(session_factory) == {"AAPL": 4, "MSFT": 4}
    assert resume_abandoned(pipeline) is None  # a later run of that as-of finished


@pytest.mark.parametrize(
    "left",
    [
        {"as_of": date(2023, 12, 28), "done": ()},  # another as-of: the nightly run does today's
        {"as_of": AS_OF, "done": (), "trigger": "backfill"},
        {"as_of": AS_OF, "done": ("AAPL", "MSFT")},  # nothing left to do
        {"as_of": AS_OF, "done": (), "status": "interrupted"},  # stopped on purpose
    ],
    ids=["older-as-of", "backfill", "all-done", "interrupted"],
)
def test_nothing_to_resume(pipeline_config, session_factory, left):
    pipeline = Pipeline(pipeline_config())
    pipeline._sync(("AAPL", "MSFT"), None)
    assert resume_abandoned(pipeline) is None  # no runs at all
    leave_run(session_factory, **left)
    before = all_runs(session_factory)
    assert resume_abandoned(pipeline) is None
    assert all_runs(session_factory) == before


def test_a_daemon_killed_mid_run_resumes_it_at_start_up(tmp_path: Path, candlecast):
    """A daemon killed -9 during its night's global fit (the night's long step, before any
    ticker: tests/jobs/test_reliability.py) is restarted: it resumes that night at start-up,
    fitting again and forecasting every ticker without forecasts, once.

    (With per-ticker networks the kill came after AAPL's set, and the resume did MSFT alone; a
    global night's ticker steps, ~0.1 s each, are too short to kill between. That a resume
    redoes only the tickers without forecasts is checked in-process by the first test here.)"""
    url = f"sqlite:///{tmp_path / 'daemon.db'}"
    migrate.upgrade(url)
    universe = tmp_path / "csv"
    write_universe(universe, ("AAPL", "MSFT"))
    engine = make_engine(url)
    factory = make_session_factory(engine)

    config = write_config(
        tmp_path / "daemon.toml",
        url,
        {
            "data": {"provider": "csv", "csv_dir": str(universe)},
            "tickers": {"symbols": ["AAPL", "MSFT"]},
            "model": SLOW_MODEL,  # a fit long enough to kill the daemon in
            "schedule": {"cron": "0 3 * * *", "timezone": "UTC"},
        },
    )

    daemon = candlecast(config, "scheduler", "--run-now")
    wait_for(lambda: fitting(factory), "the global fit", daemon)
    daemon.send_signal(signal.SIGKILL)
    daemon.wait()
    assert stored(factory) == NOTHING  # killed before the fit ended
    assert [r[1:3] for r in all_runs(factory)] == [("schedule", "running")]

    daemon = candlecast(config, "scheduler")  # no --run-now: the resume alone
    wait_for(
        lambda: len(all_runs(factory)) == 2 and all_runs(factory)[1][2] != "running",
        "the resume",
        daemon,
    )
    daemon.send_signal(signal.SIGTERM)
    _, err = daemon.communicate(timeout=TIMEOUT_S)
    assert daemon.returncode == 0, err
    assert (
        "resuming abandoned run 1 as of 2023-12-29: 2 ticker(s) without forecasts: AAPL, MSFT"
        in err
    )
    assert [r[1:] for r in all_runs(factory)] == [
        ("schedule", "abandoned", "abandoned: the process running it stopped before finishing"),
        ("schedule", "succeeded", "2 tickers: all succeeded (resumes run 1)"),
    ]
    assert forecast_sets(factory) == {"AAPL": 4, "MSFT": 4}
    assert stored(factory)["global_models"] == 1  # one fit: the resume's
    engine.dispose()
