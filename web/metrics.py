"""Prometheus metrics of the web app, served at /metrics (prometheus_client text exposition).

Each app has its own CollectorRegistry (never the process-global one), so several apps in one
process (tests) do not clash. Two kinds of metrics:

* requests: counts and latency histograms by endpoint (the URL rule, e.g. `/api/forecasts/<ticker>`,
  never the raw path, so cardinality stays bounded), method and status;
* the database's state (DatabaseCollector): the latest finished run, its tickers, the age of each
  ticker's newest forecast and rolling accuracy, read at most every CACHE_SECONDS.

Under gunicorn each worker process has its own registry: request metrics count the requests of the
worker that answered the scrape; the database metrics are the same from every worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db import health
from db.models import RUN_STATUSES, TICKER_STATUSES
from db.session import DatabaseFileError, DatabaseFileMissing

CACHE_SECONDS = 5.0
REGISTRY_KEY = "candlecast.metrics"
RECORD_KEY = "candlecast.metrics.record"  # app.extensions: record(rule, method, status, seconds)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

log = logging.getLogger("candlecast.web")


class DatabaseCollector(Collector):
    """Metrics read from the database at scrape time, cached for `cache_seconds`."""

    def __init__(
        self,
        sessions: Callable[[], sessionmaker[Session]],
        tickers: Sequence[str],
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions  # a callable: the app's factory may be replaced
        self._tickers = tuple(tickers)
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._cached_at: float | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # no query at registration time

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = self._clock()
            if self._cached_at is None or now - self._cached_at >= self._cache_seconds:
                self._cached = self._read()
                self._cached_at = now
            return list(self._cached)

    def _read(self) -> list[Metric]:
        up = GaugeMetricFamily(
            "candlecast_database_up", "1 when the last metrics read of the database succeeded"
        )
        try:
            with self._sessions()() as session:
                metrics = self._metrics(session, datetime.now(UTC))
        except (SQLAlchemyError, DatabaseFileError, DatabaseFileMissing) as exc:
            log.warning("metrics: database unavailable: %s", exc.__class__.__name__)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *metrics]

    def _metrics(self, session: Session, now: datetime) -> list[Metric]:
        out: list[Metric] = []
        run = health.latest_finished_run(session)
        status = GaugeMetricFamily(
            "candlecast_last_run_status",
            "1 for the final status of the latest finished run, 0 for the others",
            labels=["status"],
        )
        for name in RUN_STATUSES:
            if name != "running":
                status.add_metric([name], 1 if run is not None and run.status == name else 0)
        out.append(status)
        if run is not None:
            out.append(_gauge("candlecast_last_run_id", "Id of the latest finished run", run.id))
            out.append(
                _gauge(
                    "candlecast_last_run_start_timestamp_seconds",
                    "When the latest finished run started (Unix time)",
                    run.started_at.timestamp(),
                )
            )
            if run.finished_at is not None:
                out.append(
                    _gauge(
                        "candlecast_last_run_finish_timestamp_seconds",
                        "When the latest finished run finished (Unix time)",
                        run.finished_at.timestamp(),
                    )
                )
                out.append(
                    _gauge(
                        "candlecast_last_run_duration_seconds",
                        "How long the latest finished run took",
                        (run.finished_at - run.started_at).total_seconds(),
                    )
                )
            counts = health.run_ticker_counts(session, run_id=run.id)
            tickers = GaugeMetricFamily(
                "candlecast_last_run_tickers",
                "Tickers of the latest finished run by their outcome",
                labels=["status"],
            )
            for name in TICKER_STATUSES:
                tickers.add_metric([name], counts.get(name, 0))
            out.append(tickers)
        success = health.last_success(session)
        if success is not None and success.finished_at is not None:
            out.append(
                _gauge(
                    "candlecast_last_success_timestamp_seconds",
                    "When the latest succeeded run finished (Unix time)",
                    success.finished_at.timestamp(),
                )
            )
        age = GaugeMetricFamily(
            "candlecast_forecast_age_seconds",
            "Seconds since the newest stored forecast of each configured ticker was written",
            labels=["ticker"],
        )
        newest = health.newest_forecast_times(session, tickers=self._tickers)
        for ticker, created in sorted(newest.items()):
            age.add_metric([ticker], (now - created).total_seconds())
        out.append(age)
        out.extend(self._accuracy(session))
        return out

    def _accuracy(self, session: Session) -> list[Metric]:
        window = health.ACCURACY_SESSIONS
        labels = ["ticker", "horizon"]
        ratio = GaugeMetricFamily(
            "candlecast_accuracy_close_mae_ratio",
            f"Close MAE of the forecasts / naive close MAE, last {window} scored sessions",
            labels=labels,
        )
        coverage = GaugeMetricFamily(
            "candlecast_accuracy_coverage_80",
            f"Share of actual closes inside the 80% interval, last {window} scored sessions",
            labels=labels,
        )
        scored = GaugeMetricFamily(
            "candlecast_accuracy_sessions",
            f"Scored forecasts behind the accuracy metrics (at most {window})",
            labels=labels,
        )
        for row in health.rolling_accuracy(session, tickers=self._tickers):
            key = [row["ticker"], str(row["horizon"])]
            scored.add_metric(key, row["n"])
            if row["model_mae"] is not None and row["naive_mae"]:
                ratio.add_metric(key, row["model_mae"] / row["naive_mae"])
            if row["coverage_80"] is not None:
                coverage.add_metric(key, row["coverage_80"])
        return [ratio, coverage, scored]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def install_metrics(
    app: Flask,
    sessions: Callable[[], sessionmaker[Session]],
    tickers: Sequence[str],
    *,
    cache_seconds: float = CACHE_SECONDS,
) -> CollectorRegistry:
    """Give `app` its own registry, request metrics, the database collector and GET /metrics."""
    registry = CollectorRegistry(auto_describe=False)
    requests = Counter(
        "candlecast_http_requests",
        "HTTP requests answered, by endpoint (URL rule), method and status",
        ["endpoint", "method", "status"],
        registry=registry,
    )
    latency = Histogram(
        "candlecast_http_request_duration_seconds",
        "Time to answer an HTTP request, by endpoint (URL rule), method and status",
        ["endpoint", "method", "status"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    registry.register(DatabaseCollector(sessions, tickers, cache_seconds=cache_seconds))
    app.extensions[REGISTRY_KEY] = registry

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    # (endpoint, method, status) -> its counter and histogram children: labels() validates and
    # locks on every call, a dict lookup is all the hot path needs (the label sets are bounded).
    children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def record(rule: str, method: str, status: int, seconds: float | None) -> None:
        """Count one answered request (and its latency, when known). The client chooses the
        method: any other than the standard ones is counted as `other`, so a client cannot grow
        the label set (the endpoint is the URL rule, the status is ours)."""
        method = method if method in HTTP_METHODS else "other"
        key = (rule, method, status)
        pair = children.get(key)
        if pair is None:
            labels = (rule, method, str(status))
            pair = children.setdefault(key, (requests.labels(*labels), latency.labels(*labels)))
        pair[0].inc()
        if seconds is not None:
            pair[1].observe(seconds)

    app.extensions[RECORD_KEY] = record  # also used by web.fast_predict, which bypasses Flask

    @app.after_request
    def _count_request(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        started = g.get("metrics_started")
        seconds = time.perf_counter() - started if started is not None else None
        record(rule, request.method, response.status_code, seconds)
        return response

    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
    return registry


__all__ = ["RECORD_KEY", "DatabaseCollector", "install_metrics"]
