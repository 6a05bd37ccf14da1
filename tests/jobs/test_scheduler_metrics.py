"""The scheduler daemon's Prometheus metrics, served over real HTTP in-process (no daemon)."""

from __future__ import annotations

import socket
import urllib.request
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs import scheduler_metrics
from jobs.config import ConfigError
from jobs.scheduler_metrics import RUN_OUTCOMES, SchedulerMetrics
from jobs.tasks import TickerOutcome


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def test_scheduler_metrics_over_http(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = SchedulerMetrics()
    server = metrics.serve(0, addr="127.0.0.1")
    try:
        port = server.server_port
        samples = scrape(port)
        for outcome in RUN_OUTCOMES:  # exported at 0 before any run
            assert samples[("candlecast_scheduler_runs_total", (("outcome", outcome),))] == 0

        monkeypatch.setattr(scheduler_metrics, "ACTIVE", metrics)
        outcomes = [
            TickerOutcome("AAPL", "succeeded", duration_s=12.5),
            TickerOutcome("MSFT", "failed", duration_s=0.25, error="boom"),
        ]
        scheduler_metrics.record_run("partial", outcomes)  # what jobs.scheduler calls
        scheduler_metrics.record_run("skipped")
        scheduler_metrics.record_run("partial", outcomes[:1])
        when = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)
        metrics.set_next_run(when)

        samples = scrape(port)
        runs = {
            dict(labels)["outcome"]: value
            for (name, labels), value in samples.items()
            if name == "candlecast_scheduler_runs_total"
        }
        assert runs == {**dict.fromkeys(RUN_OUTCOMES, 0.0), "partial": 2.0, "skipped": 1.0}
        ticker = "candlecast_scheduler_ticker_seconds"
        assert samples[(ticker, (("ticker", "AAPL"),))] == 12.5
        assert samples[(ticker, (("ticker", "MSFT"),))] == 0.25
        assert samples[("candlecast_scheduler_next_run_timestamp_seconds", ())] == when.timestamp()
    finally:
        server.shutdown()
        server.server_close()


def test_record_run_without_a_metrics_server_is_a_no_op() -> None:
    assert scheduler_metrics.ACTIVE is None
    scheduler_metrics.record_run("succeeded", [TickerOutcome("AAPL", "succeeded", duration_s=1)])


def test_a_busy_metrics_port_is_a_config_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"schedule.metrics_port: cannot serve .* {port}"):
            SchedulerMetrics().serve(port, addr="127.0.0.1")


def test_the_daemon_serves_metrics_on_the_configured_port(
    make_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apscheduler.events import EVENT_JOB_ERROR, JobExecutionEvent

    from jobs import scheduler as daemon

    class Scheduler:  # the part of BlockingScheduler _serve_metrics uses
        listeners: list = []

        def add_listener(self, callback, mask) -> None:
            self.listeners.append((callback, mask))

    monkeypatch.setattr(scheduler_metrics, "ACTIVE", None)
    assert daemon._serve_metrics(Scheduler(), make_config()) is None  # metrics_port unset
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics = daemon._serve_metrics(Scheduler(), make_config(schedule={"metrics_port": port}))
    assert metrics is not None and scheduler_metrics.ACTIVE is metrics
    try:
        ((on_error, mask),) = Scheduler.listeners
        assert mask == EVENT_JOB_ERROR
        now = datetime.now(UTC)
        on_error(JobExecutionEvent(EVENT_JOB_ERROR, daemon.JOB_ID, "default", now, RuntimeError()))
        resume = f"{daemon.JOB_ID}-resume"
        on_error(JobExecutionEvent(EVENT_JOB_ERROR, resume, "memory", now, RuntimeError()))
        samples = scrape(port)
        assert samples[("candlecast_scheduler_runs_total", (("outcome", "error"),))] == 1
    finally:
        metrics.server.shutdown()
        metrics.server.server_close()
