"""/readyz (degraded on a failed/partial or stale run) and /metrics (prometheus_client exposition
whose values are what the database holds), over real HTTP against a real (werkzeug) server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from db import health
from db.models import ForecastRun, ForecastRunTicker
from db.session import make_engine, make_session_factory
from tests.web.conftest import Site, serving, state_of, web_config
from web import create_app

NOW = datetime.now(UTC)


def get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of GET `url`, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics: (sample name, sorted labels) -> value."""
    status, content_type, body = get(f"{base}/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def sample(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def runs_app(migrated_url: str, tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """`make(runs, **schedule)`: insert runs (dicts of ForecastRun fields, oldest first) into this
    test's database and build an app on it with [schedule] overrides; the ids go to app.run_ids."""
    apps: list[Flask] = []

    def make(runs: list[dict[str, Any]], **schedule: Any) -> Flask:
        writer = make_engine(migrated_url)
        try:
            with make_session_factory(writer).begin() as session:
                rows = [ForecastRun(trigger="schedule", **fields) for fields in runs]
                session.add_all(rows)
                session.flush()
                ids = [row.id for row in rows]
        finally:
            writer.dispose()
        app = create_app(web_config(migrated_url, tmp_path, schedule=schedule))
        app.config["run_ids"] = ids
        apps.append(app)
        return app

    yield make
    for app in apps:
        state_of(app).engine.dispose()


def finished(status: str, ago: timedelta, message: str | None = None) -> dict[str, Any]:
    return {
        "status": status,
        "started_at": NOW - ago - timedelta(minutes=5),
        "finished_at": NOW - ago,
        "as_of_date": (NOW - ago).date(),
        "message": message,
    }


@pytest.mark.parametrize("status", ["failed", "partial"])
def test_readyz_is_degraded_naming_the_failed_run(runs_app: Callable[..., Flask], status: str):
    app = runs_app(
        [
            finished("succeeded", timedelta(hours=2)),
            finished(status, timedelta(hours=1), message="2 of 2 tickers failed"),
        ]
    )
    bad_id = app.config["run_ids"][-1]
    with serving(app) as base:
        code, content_type, body = get(f"{base}/readyz")
        assert get(f"{base}/healthz")[0] == 200  # liveness is unaffected
    assert code == 503 and content_type == "application/json"
    verdict = json.loads(body)
    assert verdict["status"] == "degraded"
    assert len(verdict["reasons"]) == 1
    reason = verdict["reasons"][0]
    assert f"run {bad_id} (schedule" in reason and status in reason
    assert "2 of 2 tickers failed" in reason
    assert verdict["latest_run"]["id"] == bad_id


def test_readyz_is_ok_after_a_recent_success(runs_app: Callable[..., Flask]) -> None:
    app = runs_app(
        [
            finished("failed", timedelta(hours=3)),
            finished("succeeded", timedelta(minutes=10)),
        ]
    )
    with serving(app) as base:
        code, _, body = get(f"{base}/readyz")
    verdict = json.loads(body)
    assert code == 200 and verdict["status"] == "ok" and "reasons" not in verdict
    assert verdict["latest_run"]["id"] == app.config["run_ids"][-1]
    assert verdict["last_success"]["status"] == "succeeded"


def test_readyz_is_degraded_when_no_run_succeeded_since_one_was_due(
    runs_app: Callable[..., Flask],
) -> None:
    old = [finished("succeeded", timedelta(days=10))]  # weekdays at 18:30 New York: 8 runs missed
    with serving(runs_app(old)) as base:
        code, _, body = get(f"{base}/readyz")
    verdict = json.loads(body)
    assert code == 503 and verdict["status"] == "degraded"
    (reason,) = verdict["reasons"]
    assert reason.startswith("no run succeeded within 12 h of the run due at")
    due = datetime.fromisoformat(verdict["due_at"])
    assert NOW - timedelta(days=5) < due <= NOW - timedelta(hours=12)
    with serving(runs_app([], stale_after_hours=24 * 12)) as base:  # 12 days of grace
        code, _, body = get(f"{base}/readyz")
    assert code == 200 and json.loads(body)["status"] == "ok"


def test_readyz_without_any_run_is_degraded(runs_app: Callable[..., Flask]) -> None:
    with serving(runs_app([], cron="*/10 * * * *", stale_after_hours=0.5)) as base:
        code, _, body = get(f"{base}/readyz")
    assert code == 503 and "(last success: never)" in json.loads(body)["reasons"][0]


def _database_facts(url: str) -> dict[str, Any]:
    """What the seeded database holds, read with plain SQL (independently of db.health)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            run_id, status = conn.execute(
                text(
                    "SELECT id, status FROM forecast_runs WHERE status <> 'running' "
                    "ORDER BY finished_at DESC, id DESC LIMIT 1"
                )
            ).one()
            tickers = dict(
                conn.execute(
                    text(
                        "SELECT status, COUNT(*) FROM forecast_run_tickers WHERE run_id = :id "
                        "GROUP BY status"
                    ),
                    {"id": run_id},
                ).all()
            )
            scored = conn.execute(
                text(
                    "SELECT ticker, horizon, target_date, abs_error, naive_abs_error, in_interval "
                    "FROM forecast_accuracy WHERE actual_close IS NOT NULL"
                )
            ).all()
        with make_session_factory(engine)() as session:
            run = session.get(ForecastRun, run_id)
            assert run is not None
            times = (run.started_at.timestamp(), run.finished_at.timestamp())  # type: ignore[union-attr]
    finally:
        engine.dispose()
    return {
        "run_id": run_id,
        "status": status,
        "tickers": tickers,
        "scored": scored,
        "times": times,
    }


def _accuracy(scored: list[Any], sessions: int) -> dict[tuple[str, str], tuple[float, float, int]]:
    """(ticker, horizon) -> (MAE ratio, 80% coverage, n) over its last `sessions` scored rows."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for row in sorted(scored, key=lambda r: r.target_date, reverse=True):
        group = groups.setdefault((row.ticker, str(row.horizon)), [])
        if len(group) < sessions:
            group.append(row)
    return {
        key: (
            sum(r.abs_error for r in rows) / sum(r.naive_abs_error for r in rows),
            sum(r.in_interval for r in rows) / len(rows),
            len(rows),
        )
        for key, rows in groups.items()
    }


def test_metrics_hold_what_the_database_holds(site: Site) -> None:
    facts = _database_facts(site.url)
    with serving(site.app) as base:
        before = scrape(base)
        for _ in range(3):
            assert get(f"{base}/healthz")[0] == 200
        assert get(f"{base}/api/forecasts/AAPL")[0] == 200
        assert get(f"{base}/api/forecasts/MSFT")[0] == 200
        assert get(f"{base}/no/such/page")[0] == 404
        after = scrape(base)

    # The latest finished run (the seed's partial one) and its tickers.
    assert facts["status"] == "partial"
    for status in ("succeeded", "partial", "failed", "interrupted", "abandoned"):
        expected = 1.0 if status == facts["status"] else 0.0
        assert sample(after, "candlecast_last_run_status", status=status) == expected
    assert sample(after, "candlecast_last_run_id") == facts["run_id"]
    assert sample(after, "candlecast_last_run_tickers", status="failed") == facts["tickers"].get(
        "failed", 0
    )
    assert sample(after, "candlecast_last_run_tickers", status="succeeded") == facts["tickers"].get(
        "succeeded", 0
    )
    assert facts["tickers"] == {"failed": 1, "succeeded": 1}
    started, ended = facts["times"]
    assert sample(after, "candlecast_last_run_start_timestamp_seconds") == pytest.approx(started)
    assert sample(after, "candlecast_last_run_finish_timestamp_seconds") == pytest.approx(ended)
    assert sample(after, "candlecast_last_run_duration_seconds") == pytest.approx(ended - started)
    assert sample(after, "candlecast_database_up") == 1.0

    # Rolling accuracy per ticker and horizon, from the forecast_accuracy view.
    expected = _accuracy(facts["scored"], health.ACCURACY_SESSIONS)
    assert expected  # the seed has scored AAPL forecasts
    for (ticker, horizon), (ratio, coverage, n) in expected.items():
        labels = {"ticker": ticker, "horizon": horizon}
        assert sample(after, "candlecast_accuracy_close_mae_ratio", **labels) == pytest.approx(
            ratio
        )
        assert sample(after, "candlecast_accuracy_coverage_80", **labels) == pytest.approx(coverage)
        assert sample(after, "candlecast_accuracy_sessions", **labels) == n

    # Forecast ages: AAPL and MSFT have stored forecasts (written by the seed), GOOGL none.
    for ticker in ("AAPL", "MSFT"):
        age = sample(after, "candlecast_forecast_age_seconds", ticker=ticker)
        assert age is not None and 0 <= age < 24 * 3600
    assert sample(after, "candlecast_forecast_age_seconds", ticker="GOOGL") is None

    # Requests by URL rule (never the raw path), method and status.
    def delta(name: str, endpoint: str, status: str) -> float:
        labels = {"endpoint": endpoint, "method": "GET", "status": status}
        return (sample(after, name, **labels) or 0) - (sample(before, name, **labels) or 0)

    assert delta("candlecast_http_requests_total", "/healthz", "200") == 3
    assert delta("candlecast_http_request_duration_seconds_count", "/healthz", "200") == 3
    assert delta("candlecast_http_requests_total", "/api/forecasts/<ticker>", "200") == 2
    assert delta("candlecast_http_requests_total", "unmatched", "404") == 1
    assert delta("candlecast_http_requests_total", "/metrics", "200") == 1
    assert not any("/api/forecasts/AAPL" in str(key) for key in after)


def test_rolling_accuracy_keeps_the_last_sessions(site: Site) -> None:
    facts = _database_facts(site.url)
    engine = make_engine(site.url)
    try:
        with make_session_factory(engine)() as session:
            rows = health.rolling_accuracy(session, tickers=("AAPL", "MSFT"), sessions=5)
    finally:
        engine.dispose()
    got = {
        (r["ticker"], str(r["horizon"])): (
            r["model_mae"] / r["naive_mae"],
            r["coverage_80"],
            r["n"],
        )
        for r in rows
    }
    expected = _accuracy(facts["scored"], 5)
    assert got.keys() == expected.keys()
    for key, (ratio, coverage, n) in expected.items():
        assert got[key] == (pytest.approx(ratio), pytest.approx(coverage), n)


def test_database_metrics_are_cached(migrated_url: str, tmp_path: Path) -> None:
    """The collector reads the database at most every few seconds, however often it is scraped."""
    from web.metrics import DatabaseCollector

    engine = make_engine(migrated_url)
    clock = [0.0]
    try:
        factory = make_session_factory(engine)
        collector = DatabaseCollector(
            lambda: factory, ("AAPL",), cache_seconds=5, clock=lambda: clock[0]
        )

        def last_status() -> dict[str, float]:
            family = next(m for m in collector.collect() if m.name == "candlecast_last_run_status")
            return {s.labels["status"]: s.value for s in family.samples}

        assert set(last_status().values()) == {0}
        with factory.begin() as session:
            run = ForecastRun(**finished("failed", timedelta(hours=1)), trigger="manual")
            session.add(run)
            session.flush()
            session.add(ForecastRunTicker(run_id=run.id, ticker="AAPL", status="failed"))
        clock[0] = 4.9
        assert last_status()["failed"] == 0  # cached
        clock[0] = 5.0
        assert last_status()["failed"] == 1
    finally:
        engine.dispose()
