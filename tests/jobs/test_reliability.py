"""Reliability with real processes and real databases: kill -9, concurrent runs, the daemon.

A night fits its one global network before the per-ticker fan-out (jobs.global_fit), then
forecasts and stores each ticker from it in ~0.1 s. The fit is the night's long step, so the
tests that signal a run mid-way do it during the fit: they see it start in the database (the
run has its as-of date, set right before the fit, and no global model is stored yet)."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db import migrate
from db.models import Forecast, ForecastRun, ForecastRunTicker, GlobalModel, ModelVersion
from db.session import make_engine, make_session_factory
from jobs.cli_support import EXIT_LOCKED, EXIT_OK
from tests.jobs.conftest import TINY_MODEL, write_config, write_universe

pytestmark = pytest.mark.slow  # real daemons, training or installs: seconds each

# A global fit slow enough to signal in the middle of: ~3 s to import Keras and build the graph,
# then ~3 s for these 4 epochs on 2-3 tickers of the test universe (this 2-core machine).
SLOW_MODEL = {"epochs": 4, "units": 8, "patience": 4, "batch_size": 32}
TIMEOUT_S = 120


def wait_for(condition: Callable[[], bool], what: str, proc=None) -> None:
    """Poll `condition` until true; fail with `what` on timeout or when `proc` exits first."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process exited {proc.returncode} before {what}:\n{out}\n{err}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def fitting(factory) -> bool:
    """The latest run is in its global fit: it is running, has its as-of date (set once the
    tickers synced, right before the fit) and no global model is stored yet."""
    with factory() as s:
        run = s.scalars(select(ForecastRun).order_by(ForecastRun.id.desc()).limit(1)).first()
        fitted = s.scalar(select(func.count()).select_from(GlobalModel))
    return run is not None and run.status == "running" and run.as_of_date is not None and not fitted


def stored(factory) -> dict[str, int]:
    """Rows of what a night writes: its global model, model versions, ticker rows, forecasts."""
    with factory() as s:
        return {
            table.__tablename__: s.scalar(select(func.count()).select_from(table))
            for table in (GlobalModel, ModelVersion, ForecastRunTicker, Forecast)
        }


NOTHING = {"global_models": 0, "model_versions": 0, "forecast_run_tickers": 0, "forecasts": 0}


def forecast_sets(factory) -> dict[str, int]:
    with factory() as s:
        rows = s.execute(
            select(Forecast.ticker, func.count()).group_by(Forecast.ticker, Forecast.as_of_date)
        ).all()
    return dict(rows)


def run_statuses(factory) -> list[tuple[str, str]]:
    with factory() as s:
        return list(s.execute(select(ForecastRun.trigger, ForecastRun.status).order_by("id")))


@pytest.fixture
def setup(tmp_path: Path, migrated_url: str):
    """(make_config_file, session_factory) for this test's migrated database."""
    universe = tmp_path / "csv"
    write_universe(universe, ("AAPL", "MSFT", "GOOGL"))
    engine = make_engine(migrated_url)

    def make_config_file(name: str, model: dict, symbols=("AAPL", "MSFT"), **extra) -> Path:
        sections = {
            "data": {"provider": "csv", "csv_dir": str(universe)},
            "tickers": {"symbols": list(symbols)},
            "model": model,
            **extra,
        }
        return write_config(tmp_path / f"{name}.toml", migrated_url, sections)

    yield make_config_file, make_session_factory(engine)
    engine.dispose()


def test_kill_9_mid_training_leaves_no_partial_forecasts(setup, candlecast):
    """kill -9 during the night's global fit leaves nothing of the night but its `running` run
    row: no global model, no model version, no ticker row, no forecast. The next run marks that
    run abandoned (its run lock is no obstacle) and forecasts every ticker, four rows each.

    (With per-ticker networks the kill came mid-way through the second ticker's training, with
    the first ticker's set kept; a global night trains before any ticker, and a ticker's own
    step, one transaction, is too short to kill in.)"""
    make_config_file, factory = setup
    proc = candlecast(make_config_file("slow", SLOW_MODEL), "run-once")
    wait_for(lambda: fitting(factory), "the global fit", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert stored(factory) == NOTHING  # killed before the fit ended: nothing partial stored
    assert run_statuses(factory) == [("manual", "running")]

    rerun = candlecast(make_config_file("tiny", TINY_MODEL), "run-once")
    out, err = rerun.communicate(timeout=TIMEOUT_S)
    assert rerun.returncode == EXIT_OK, err
    assert run_statuses(factory) == [("manual", "abandoned"), ("manual", "succeeded")]
    assert forecast_sets(factory) == {"AAPL": 4, "MSFT": 4}
    assert stored(factory) == {
        "global_models": 1,
        "model_versions": 2,
        "forecast_run_tickers": 2,
        "forecasts": 8,
    }


def test_two_concurrent_runs_one_runs_the_other_exits_locked(setup, candlecast):
    make_config_file, factory = setup
    config = make_config_file("tiny", TINY_MODEL)  # the winner holds the lock for seconds
    first, second = candlecast(config, "run-once"), candlecast(config, "run-once")
    results = sorted((p.wait(timeout=TIMEOUT_S), p.communicate()[1]) for p in (first, second))
    assert [code for code, _ in results] == [EXIT_OK, EXIT_LOCKED]
    # the loser may arrive while the winner holds the lease but has not yet written its run row
    assert re.search(r"another candlecast run is (in progress|starting)", results[1][1])
    assert run_statuses(factory) == [("manual", "succeeded")]
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Forecast)) == 8


@pytest.fixture
def sqlite_setup(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'daemon.db'}"
    migrate.upgrade(url)
    universe = tmp_path / "csv"
    write_universe(universe, ("AAPL", "MSFT", "GOOGL"))
    engine = make_engine(url)

    def make_config_file(cron: str, model: dict, symbols=("AAPL", "MSFT")) -> Path:
        return write_config(
            tmp_path / "daemon.toml",
            url,
            {
                "data": {"provider": "csv", "csv_dir": str(universe)},
                "tickers": {"symbols": list(symbols)},
                "model": model,
                "schedule": {"cron": cron, "timezone": "UTC", "misfire_grace_time_s": 3600},
            },
        )

    yield make_config_file, make_session_factory(engine)
    engine.dispose()


def test_scheduler_fires_once_and_stops_cleanly_on_sigterm(sqlite_setup, candlecast):
    make_config_file, factory = sqlite_setup
    fire = datetime.now(UTC) + timedelta(seconds=8)
    config = make_config_file(f"{fire.second} {fire.minute} {fire.hour} * * *", TINY_MODEL)
    daemon = candlecast(config, "scheduler")
    wait_for(lambda: run_statuses(factory) == [("schedule", "succeeded")], "the run", daemon)
    daemon.send_signal(signal.SIGTERM)
    out, err = daemon.communicate(timeout=TIMEOUT_S)
    assert daemon.returncode == 0, err
    assert "next run due at" in err
    assert run_statuses(factory) == [("schedule", "succeeded")]


def test_a_missed_run_within_the_grace_time_fires_once_at_startup(sqlite_setup, candlecast):
    from jobs.jobstore import JsonSQLAlchemyJobStore

    make_config_file, factory = sqlite_setup
    config = make_config_file("0 3 * * *", TINY_MODEL)
    daemon = candlecast(config, "scheduler")  # stores the job, due at the next 03:00 UTC
    store = JsonSQLAlchemyJobStore(engine=factory.kw["bind"])
    wait_for(lambda: store.get_next_run_time() is not None, "the stored job", daemon)
    daemon.send_signal(signal.SIGTERM)
    _, err = daemon.communicate(timeout=TIMEOUT_S)
    assert daemon.returncode == 0, err
    assert run_statuses(factory) == []

    # The daemon stayed down while the run fell due ten minutes ago.
    missed = datetime.now(UTC) - timedelta(minutes=10)
    with store.engine.begin() as conn:
        state = json.loads(conn.execute(select(store.jobs_t.c.job_state)).scalar_one())
        state["next_run_time"] = missed.isoformat()
        conn.execute(
            store.jobs_t.update().values(
                next_run_time=missed.timestamp(), job_state=json.dumps(state).encode()
            )
        )

    daemon = candlecast(config, "scheduler")
    wait_for(lambda: run_statuses(factory) == [("schedule", "succeeded")], "the missed run", daemon)
    daemon.send_signal(signal.SIGTERM)
    _, err = daemon.communicate(timeout=TIMEOUT_S)
    assert daemon.returncode == 0, err
    assert run_statuses(factory) == [("schedule", "succeeded")]
    assert store.get_next_run_time() > datetime.now(UTC)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_during_a_run_finishes_the_ticker_and_marks_it_interrupted(
    sqlite_setup, candlecast, signum
):
    """The step in progress finishes and no other starts: a signal during the night's global fit
    lets the fit finish (its global model is stored), starts no ticker, ends the run
    `interrupted` and the daemon with 0. (With per-ticker networks the step in progress was a
    ticker's training, whose set was stored, and the next ticker did not start.)

    SIGHUP is treated like SIGTERM (its default action killed the daemon, rc 129, and left
    the run `running`)."""
    make_config_file, factory = sqlite_setup
    config = make_config_file("0 3 * * *", SLOW_MODEL, symbols=("AAPL", "MSFT", "GOOGL"))
    daemon = candlecast(config, "scheduler", "--run-now")
    wait_for(lambda: fitting(factory), "the global fit", daemon)
    daemon.send_signal(signum)
    _, err = daemon.communicate(timeout=TIMEOUT_S)
    assert daemon.returncode == 0, err
    assert run_statuses(factory) == [("schedule", "interrupted")]
    with factory() as s:
        assert s.scalar(select(ForecastRun.message)) == "interrupted after 0 of 3 tickers"
    assert stored(factory) == NOTHING | {"global_models": 1}
