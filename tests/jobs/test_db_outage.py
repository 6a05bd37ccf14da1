"""A transient database outage mid-run: retried with backoff, then the ticker fails; the run is
always finished. PostgreSQL only (a TCP proxy in the test cuts the connections; the shared
server is never stopped): SQLite has no connection to lose.

A night fits its global network once, before the per-ticker fan-out (jobs.global_fit); "without
retraining" means that fit is not done again when a later commit is retried."""

from __future__ import annotations

import importlib
import logging
import sqlite3
from collections.abc import Callable

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

import forecasting.global_net
from db.models import Forecast, ForecastRun, ForecastRunTicker, GlobalModel, ModelVersion
from jobs import db_retry
from jobs.pipeline import Pipeline
from tests.conftest import POSTGRES_URL
from tests.jobs.tcp_proxy import TcpProxy


def postgres_only(test: Callable) -> Callable:
    """Run `test` on the PostgreSQL database only (skipped without CANDLECAST_TEST_POSTGRES_URL)."""
    test = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)(test)
    return pytest.mark.skipif(not POSTGRES_URL, reason="needs CANDLECAST_TEST_POSTGRES_URL")(test)


class OnLog(logging.Handler):
    """Calls `action` (once) on the first record of `logger` whose message contains `text`."""

    def __init__(self, logger: str, text: str, action: Callable[[], None]) -> None:
        super().__init__()
        self.text, self.action, self.messages = text, action, []
        self.logger = logging.getLogger(logger)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if self.text in message and self.action is not None:
            self.action, action = None, self.action
            action()

    def __enter__(self) -> OnLog:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)


@pytest.fixture
def proxied(migrated_url: str):
    """(proxy, url): this test's migrated PostgreSQL database, reached through a TcpProxy."""
    url = make_url(migrated_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    proxy.close()


def stored(factory) -> tuple[list[tuple[str, str, str | None]], dict[str, str], set[int]]:
    """(runs as (status, trigger, message), {ticker: status} of the last run, rows per set)."""
    with factory() as s:
        run_rows = s.execute(
            select(ForecastRun.status, ForecastRun.trigger, ForecastRun.message).order_by("id")
        ).all()
        tickers = dict(s.execute(select(ForecastRunTicker.ticker, ForecastRunTicker.status)).all())
        sets = set(
            s.scalars(
                select(func.count())
                .select_from(Forecast)
                .group_by(Forecast.ticker, Forecast.as_of_date)
            )
        )
    return [tuple(r) for r in run_rows], tickers, sets


def cut_at(monkeypatch, proxy: TcpProxy, target: str, *, after: bool = False) -> None:
    """Make the first call of `target` (a module attribute) cut the proxy before (or after)
    doing its work; later calls (e.g. a refit) just do it."""
    module, name = target.rsplit(".", 1)
    original = getattr(importlib.import_module(module), name)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if not after and len(calls) == 1:
            proxy.cut()
        result = original(*args, **kwargs)
        if after and len(calls) == 1:
            proxy.cut()
        return result

    monkeypatch.setattr(target, wrapper)


def fits_counted(monkeypatch) -> list:
    """The night's global fits (forecasting.global_net.fit_global calls), as they happen."""
    fits: list = []
    monkeypatch.setattr(
        "forecasting.global_net.fit_global", counted(fits, forecasting.global_net.fit_global)
    )
    return fits


def models_stored(factory) -> tuple[int, int]:
    """(global models, model versions) stored."""
    with factory() as s:
        return (
            s.scalar(select(func.count()).select_from(GlobalModel)),
            s.scalar(select(func.count()).select_from(ModelVersion)),
        )


# The night's commits after its fit: its global model (the outage starts as the fit returns),
# then each ticker's model version, forecasts and outcome in one transaction (the outage starts
# after the forecast: the baselines come right before the commit).
COMMITS = {
    "global-model": ("forecasting.global_net.fit_global", True, "storing the night's global model"),
    "ticker": ("jobs.tasks._baseline_sets", False, "AAPL: storing the forecasts"),
}


@postgres_only
@pytest.mark.slow
@pytest.mark.parametrize("commit", list(COMMITS))
def test_an_outage_at_the_commit_is_retried_without_retraining_and_the_run_succeeds(
    pipeline_config, proxied, session_factory, monkeypatch, commit
):
    """An outage at either commit of the night lasts until its second retry: the commit is
    retried (stored once), the global model is not fitted again and the run succeeds."""
    proxy, url = proxied
    monkeypatch.setattr(db_retry, "RETRY_DELAYS_S", (0.3,) * 5)
    fits = fits_counted(monkeypatch)
    target, after, what = COMMITS[commit]
    cut_at(monkeypatch, proxy, target, after=after)
    pipeline = Pipeline(pipeline_config(database={"url": url}, tickers={"symbols": ["AAPL"]}))
    with OnLog("candlecast.db_retry", "retry 2 of 5", proxy.restore) as retries:
        result = pipeline.run_nightly()
    assert [m for m in retries.messages if m.startswith(what)]
    assert result.status == "succeeded", result.outcomes
    assert len(fits) == 1
    pipeline.engine.dispose()
    runs, tickers, sets = stored(session_factory)
    assert runs == [("succeeded", "manual", "1 ticker: all succeeded")]
    assert tickers == {"AAPL": "succeeded"}
    assert sets == {4}
    assert models_stored(session_factory) == (1, 1)


def no_fit(factory, config, tickers, as_of) -> dict[str, str]:
    """The night's global fit, skipped: each ticker's reason for having no model."""
    return {ticker: "no model: the test skipped the night's fit" for ticker in tickers}


@postgres_only
def test_an_outage_beyond_the_retry_budget_fails_the_ticker_and_still_finishes_the_run(
    pipeline_config, proxied, session_factory, monkeypatch
):
    """The outage starts as the night's global fit returns, right before the ticker starts, and
    outlasts the ticker's retries: the ticker fails on it (stored once the database is back)
    and the run is finished `failed`. The fit is skipped (a few seconds saved): the ticker
    fails at its start, before it would use a model; the fit's own commit is the test above's."""
    proxy, url = proxied
    monkeypatch.setattr(db_retry, "RETRY_DELAYS_S", (0.2, 0.2))
    monkeypatch.setattr("jobs.global_fit.global_records", no_fit)
    # The outage starts right before the ticker does.
    cut_at(monkeypatch, proxy, "jobs.global_fit.global_records", after=True)
    pipeline = Pipeline(pipeline_config(database={"url": url}, tickers={"symbols": ["AAPL"]}))
    # The database comes back while AAPL's failure is being recorded (after its own retries).
    with OnLog("candlecast.db_retry", "recording its failure", proxy.restore):
        result = pipeline.run_nightly()
    assert result.status == "failed"
    [aapl] = result.outcomes
    assert aapl.status == "failed"
    assert aapl.error.startswith(
        "database unavailable (AAPL: starting; gave up after 3 attempts over 0.4 s): "
    )
    assert "\n" not in aapl.error
    pipeline.engine.dispose()
    runs, tickers, sets = stored(session_factory)
    assert runs == [("failed", "manual", "all 1 ticker failed")]
    assert tickers == {"AAPL": "failed"}
    assert sets == set()
    with session_factory() as s:
        assert s.get(ForecastRunTicker, (result.run_id, "AAPL")).error == aapl.error


def counted(calls: list, function: Callable) -> Callable:
    def wrapper(*args, **kwargs):
        calls.append(args)
        return function(*args, **kwargs)

    return wrapper


def wrapped(orig: Exception, cls=OperationalError) -> Exception:
    return cls("SELECT 1", {}, orig)


def test_only_connection_errors_are_retried(monkeypatch):
    monkeypatch.setattr(db_retry, "RETRY_DELAYS_S", (0, 0))
    lost = psycopg.OperationalError("server closed the connection unexpectedly\n\tmore text")
    assert db_retry.is_connection_error(wrapped(lost))
    assert not db_retry.is_connection_error(wrapped(sqlite3.OperationalError("database is locked")))
    assert not db_retry.is_connection_error(wrapped(psycopg.errors.LockNotAvailable("lock")))
    assert not db_retry.is_connection_error(wrapped(psycopg.IntegrityError("dup"), IntegrityError))

    calls = []

    def failing(error: Exception) -> Callable[[], None]:
        def work() -> None:
            calls.append(error)
            raise error

        return work

    for error in (wrapped(sqlite3.OperationalError("database is locked")), ValueError("no")):
        calls.clear()
        with pytest.raises(type(error)):
            db_retry.retrying("work", failing(error))
        assert len(calls) == 1  # never retried
    calls.clear()
    with pytest.raises(db_retry.DatabaseUnavailableError) as info:
        db_retry.retrying("work", failing(wrapped(lost)))
    assert len(calls) == 3
    assert str(info.value) == (
        "database unavailable (work; gave up after 3 attempts over 0 s): "
        "server closed the connection unexpectedly"
    )
