"""The nightly fan-out on a local process pool and on a Dask LocalCluster, on real databases."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import date

import pytest
from sqlalchemy import func, select

from db.models import Forecast, ForecastRunTicker, ModelVersion
from jobs.config import ConfigError
from jobs.pipeline import Pipeline
from tests.conftest import one_backend
from tests.jobs.conftest import write_universe

pytestmark = pytest.mark.slow  # real daemons, training or installs: seconds each

FIVE = ["AAPL", "GOOGL", "AMZN", "MSFT", "TSLA"]


def table_counts(factory) -> dict[str, int]:
    with factory() as s:
        return {
            "forecasts": s.scalar(select(func.count()).select_from(Forecast)),
            "models": s.scalar(select(func.count()).select_from(ModelVersion)),
            "sets": len(
                s.execute(
                    select(Forecast.ticker)
                    .group_by(Forecast.ticker, Forecast.as_of_date)
                    .having(func.count() == 4)
                ).all()
            ),
        }


@pytest.fixture
def five(universe):
    write_universe(universe, tuple(FIVE))
    return FIVE


@one_backend
def test_dask_local_cluster_writes_what_the_local_executor_writes(
    pipeline_config, five, session_factory
):
    three = five[:3]  # enough for two workers to share the tickers (the fit runs here, once)
    dask = pipeline_config(tickers={"symbols": three}, executor={"kind": "dask", "workers": 2})
    result = Pipeline(dask).run_nightly()
    assert result.status == "succeeded", [o.error for o in result.outcomes]
    assert [o.ticker for o in result.outcomes] == three
    after_dask = table_counts(session_factory)
    assert after_dask == {"forecasts": 12, "models": 3, "sets": 3}

    local = pipeline_config(tickers={"symbols": three})
    assert Pipeline(local).run_nightly(as_of=date(2023, 12, 29)).status == "succeeded"
    after_local = table_counts(session_factory)
    assert after_local["forecasts"] == after_dask["forecasts"]  # replaced, not duplicated
    assert after_local["models"] == 2 * after_dask["models"]


@one_backend
def test_local_process_pool_runs_tickers_in_spawned_workers(pipeline_config, session_factory):
    config = pipeline_config(executor={"kind": "local", "workers": 2})
    result = Pipeline(config).run_nightly()
    assert result.status == "succeeded", [o.error for o in result.outcomes]
    assert table_counts(session_factory) == {"forecasts": 8, "models": 2, "sets": 2}


def busy_worker_pid() -> int | None:
    """The process id of a Dask worker with a task in flight, asked of the executor's client
    (this process's default one; its LocalCluster's workers are children of this process)."""
    from distributed import default_client

    client = default_client()
    busy = [address for address, keys in client.processing().items() if keys]
    return next(iter(client.run(os.getpid, workers=busy[:1]).values()), None) if busy else None


@one_backend
def test_a_killed_dask_worker_still_accounts_for_every_ticker(
    pipeline_config, five, session_factory
):
    """A worker killed -9 while it has a ticker's task: every ticker still has its outcome, no
    forecast set is partial and no ticker is left `running`. The night's global fit runs in
    this (the coordinating) process; a worker's first task loads TensorFlow and the night's
    network after marking its ticker `running`, seconds to kill it in. (With per-ticker
    networks the task trained one, ~10 s.)"""
    config = pipeline_config(tickers={"symbols": five[:3]}, executor={"kind": "dask", "workers": 2})
    results = []
    runner = threading.Thread(target=lambda: results.append(Pipeline(config).run_nightly()))
    runner.start()
    deadline = time.monotonic() + 180
    killed = None
    while killed is None and time.monotonic() < deadline and runner.is_alive():
        with session_factory() as s:
            running = s.scalar(
                select(func.count())
                .select_from(ForecastRunTicker)
                .where(ForecastRunTicker.status == "running")
            )
        if running:
            killed = busy_worker_pid()
            if killed is not None:
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    runner.join(timeout=300)
    assert killed is not None, "no worker was caught mid-task"
    (result,) = results
    assert {o.ticker for o in result.outcomes} == set(five[:3])
    assert all(o.status == "succeeded" or o.error for o in result.outcomes)
    with session_factory() as s:
        per_set = set(
            s.scalars(select(func.count()).select_from(Forecast).group_by(Forecast.ticker))
        )
        statuses = set(s.scalars(select(ForecastRunTicker.status)))
    assert per_set <= {4}
    assert "running" not in statuses


def test_sqlite_with_a_remote_dask_cluster_is_refused(make_config):
    with pytest.raises(ConfigError, match="cannot use the SQLite file database"):
        make_config(
            url="sqlite:///x.db",
            executor={"kind": "dask", "address": "tcp://10.1.2.3:8786"},
        )


def test_executor_settings_are_validated(make_config):
    with pytest.raises(ConfigError, match="executor.kind must be"):
        make_config(executor={"kind": "ray"})
    with pytest.raises(ConfigError, match="executor.address must look like"):
        make_config(executor={"kind": "dask", "address": "somewhere"})
