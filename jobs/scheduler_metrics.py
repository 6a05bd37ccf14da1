"""Prometheus metrics of the scheduler daemon, served on `[schedule] metrics_port` when set.

The daemon records into SchedulerMetrics (its own CollectorRegistry, not the process-global one):
the next fire time of the nightly job, runs by outcome and each ticker's last run duration.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from jobs.config import ConfigError

# Outcomes of a scheduled job: a run's final status, or skipped (lock held) / error (it raised).
RUN_OUTCOMES = ("succeeded", "partial", "failed", "interrupted", "skipped", "error")

log = logging.getLogger("candlecast.scheduler")


class SchedulerMetrics:
    """The daemon's metrics in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.server: Any = None  # the HTTP server once serve() ran
        self.next_run = Gauge(
            "candlecast_scheduler_next_run_timestamp_seconds",
            "When the nightly job fires next (Unix time)",
            registry=self.registry,
        )
        self.runs = Counter(
            "candlecast_scheduler_runs",
            "Scheduled runs by outcome (a run's status, skipped: lock held, error: it raised)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in RUN_OUTCOMES:
            self.runs.labels(outcome)  # every outcome is exported from the start, at 0
        self.ticker_seconds = Gauge(
            "candlecast_scheduler_ticker_seconds",
            "How long each ticker took in its latest run of this daemon (train, forecast, store)",
            ["ticker"],
            registry=self.registry,
        )

    def record_run(self, status: str, outcomes: Iterable[Any] = ()) -> None:
        """Count a run's outcome; set the seconds of its tickers (objects with .ticker and
        .duration_s, e.g. jobs.tasks.TickerOutcome)."""
        self.runs.labels(status).inc()
        for outcome in outcomes:
            if outcome.duration_s is not None:
                self.ticker_seconds.labels(outcome.ticker).set(outcome.duration_s)

    def set_next_run(self, when: datetime | None) -> None:
        self.next_run.set(when.timestamp() if when is not None else float("nan"))

    def serve(self, port: int, addr: str = "0.0.0.0") -> Any:
        """Serve the metrics over HTTP on `port` in a daemon thread; returns the server."""
        try:
            server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"schedule.metrics_port: cannot serve metrics on port {port}: {exc.strerror}"
            ) from None
        log.info("metrics on http://%s:%s/metrics", addr, server.server_port)
        self.server = server
        return server


# The daemon process's metrics (set by jobs.scheduler.run_daemon when metrics_port is set).
ACTIVE: SchedulerMetrics | None = None


def record_run(status: str, outcomes: Iterable[Any] = ()) -> None:
    """Record a run in the daemon's metrics, if the daemon serves metrics."""
    if ACTIVE is not None:
        ACTIVE.record_run(status, outcomes)
