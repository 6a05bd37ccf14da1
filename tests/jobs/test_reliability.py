"""Reliability with real processes and real databases: kill -9, concurrent runs, the daemon."""

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
from db.models import Forecast, ForecastRun, ForecastRunTicker
from db.session import make_engine, make_session_factory
from jobs.cli_support import EXIT_LOCKED, EXIT_OK
from tests.jobs.conftest import TINY_MODEL, write_config, write_universe

pytestmark = pytest.mark.slow  # real daemons, training or installs: seconds each

# A ticker step slow enough to signal in the middle of: the per-ticker network trains inside it
# (~10 s in graph mode); a global night's ticker step takes ~0.1 s, too short to catch.
SLOW_MODEL = {"scope": "per_ticker", "epochs": 4, "units": 8, "patience": 4, "batch_size": 32}
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


def ticker_status(factory, ticker: str) -> str | None:
    with factory() as s:
        return s.scalar(
            select(ForecastRunTicker.status)
            .where(ForecastRunTicker.ticker == ticker)
            .order_by(ForecastRunTicker.run_id.desc())
            .limit(1)
        )


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
    make_config_file, factory = setup
    proc = candlecast(make_config_file("slow", SLOW_MODEL), "run-once")
    wait_for(lambda: ticker_status(factory, "MSFT") == "running", "MSFT training", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ticker_status(factory, "AAPL") == "succeeded"
    assert forecast_sets(factory) == {"AAPL": 4}  # MSFT: nothing, not a partial set
    assert run_statuses(factory) == [("manual", "running")]

    rerun = candlecast(make_config_file("tiny", TINY_MODEL), "run-once")
    out, err = rerun.communicate(timeout=TIMEOUT_S)
    assert rerun.returncode == EXIT_OK, err
    assert run_statuses(factory) == [("manual", "abandoned"), ("manual", "succeeded")]
    assert forecast_sets(factory) == {"AAPL": 4, "MSFT": 4}


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
    """SIGHUP is treated like SIGTERM (its default action killed the daemon, rc 129, and left
    the run `running`)."""
    make_config_file, factory = sqlite_setup
    config = make_config_file("0 3 * * *", SLOW_MODEL, symbols=("AAPL", "MSFT", "GOOGL"))
    daemon = candlecast(config, "scheduler", "--run-now")
    wait_for(lambda: ticker_status(factory, "MSFT") == "running", "MSFT training", daemon)
    daemon.send_signal(signum)
    _, err = daemon.communicate(timeout=TIMEOUT_S)
    assert daemon.returncode == 0, err
    assert run_statuses(factory) == [("schedule", "interrupted")]
    assert forecast_sets(factory) == {"AAPL": 4, "MSFT": 4}
    assert ticker_status(factory, "GOOGL") is None
