"""Validation of a parsed candlecast Config, and the cron trigger of its schedule.

Used by jobs.config.config_from_dict; it reads the dataclasses of jobs.config_types (which
jobs.config re-exports), so jobs.config -> jobs.config_checks -> jobs.config_types is no cycle.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from db.urls import safe_url
from forecasting.forecast_set import HORIZON
from jobs.config_types import (
    ALERT_EVENTS,
    DATABASE_URL_ENV,
    EXECUTORS,
    LOG_FORMATS,
    LOG_LEVELS,
    ON_INVALID,
    PROVIDERS,
    AlertsConfig,
    Config,
    ConfigError,
    ExecutorConfig,
    LoggingConfig,
    TickersConfig,
    WebConfig,
    validate_ticker,
)

MAX_CACHE_MB = 65_536  # [web] cache_mb: 64 GiB per worker is surely a typo beyond


def _validated(config: Config, base_dir: Path) -> Config:
    """Check every section; return the config with database.url and data.csv_dir resolved."""
    db_url = os.environ.get(DATABASE_URL_ENV) or config.database.url
    db_url = _resolve_sqlite_url(db_url, base_dir)
    data = config.data
    if data.provider not in PROVIDERS:
        raise ConfigError(
            f"data.provider must be one of {', '.join(PROVIDERS)}, got {data.provider!r}"
        )
    if data.on_invalid not in ON_INVALID:
        raise ConfigError(f"data.on_invalid must be 'drop' or 'fail', got {data.on_invalid!r}")
    csv_dir = data.csv_dir
    if csv_dir is not None and not csv_dir.is_absolute():
        csv_dir = (base_dir / csv_dir).resolve()
    if data.provider == "csv":
        if csv_dir is None:
            raise ConfigError("data.csv_dir is required when data.provider = 'csv'")
        if not csv_dir.is_dir():
            raise ConfigError(f"data.csv_dir: directory not found: {csv_dir}")
    _positive("data.history_years", data.history_years)
    _positive("data.yfinance_retries", data.yfinance_retries)
    if data.sync_overlap_sessions < 0:
        raise ConfigError("data.sync_overlap_sessions must be >= 0")

    tickers = config.tickers
    if not tickers.symbols:
        raise ConfigError("tickers.symbols must list at least one ticker")
    for symbol in tickers.symbols:
        try:
            validate_ticker(symbol)
        except ValueError as exc:
            raise ConfigError(f"tickers.symbols: {exc}") from None
    if len(set(tickers.symbols)) != len(tickers.symbols):
        raise ConfigError("tickers.symbols lists a ticker twice")
    for symbol in tickers.exchanges:
        if symbol not in tickers.symbols:
            raise ConfigError(f"tickers.exchanges: {symbol!r} is not in tickers.symbols")
    _check_exchanges(tickers)

    schedule = config.schedule
    _check_timezone(schedule.timezone)
    _check_cron(schedule.cron, schedule.timezone)
    _positive("schedule.misfire_grace_time_s", schedule.misfire_grace_time_s)
    if not 0 <= schedule.data_stale_after_sessions <= 10_000:
        raise ConfigError(
            "schedule.data_stale_after_sessions must be between 0 (off) and 10000, "
            f"got {schedule.data_stale_after_sessions}"
        )
    if not 0 < schedule.stale_after_hours <= 24 * 366:
        raise ConfigError(
            f"schedule.stale_after_hours must be > 0 and at most a year, "
            f"got {schedule.stale_after_hours:g}"
        )
    if not 0 <= schedule.metrics_port <= 65535:
        raise ConfigError(
            f"schedule.metrics_port must be between 1 and 65535 (0: no metrics server), "
            f"got {schedule.metrics_port}"
        )

    model = config.model
    for name in ("window", "horizon", "epochs", "batch_size", "units", "patience", "retrain_every"):
        _positive(f"model.{name}", getattr(model, name))
    if model.horizon != HORIZON:
        raise ConfigError(
            f"model.horizon must be {HORIZON} (the product forecasts {HORIZON} candles)"
        )
    if not 0.05 <= model.validation_fraction <= 0.5:
        raise ConfigError("model.validation_fraction must be between 0.05 and 0.5")
    if not 0.05 <= model.calibration_fraction <= 0.5:
        raise ConfigError("model.calibration_fraction must be between 0.05 and 0.5")
    if not 0 < model.learning_rate < 1:
        raise ConfigError("model.learning_rate must be between 0 and 1")
    _positive("model.keep_versions", model.keep_versions)
    for name in ("warm_epochs", "full_refit_every", "max_windows"):
        _positive(f"model.{name}", getattr(model, name))

    _check_executor(config.executor, db_url)

    web = config.web
    if not 1 <= web.port <= 65535:
        raise ConfigError(f"web.port must be between 1 and 65535, got {web.port}")
    _positive("web.workers", web.workers)
    if not 1 <= web.cache_mb <= MAX_CACHE_MB:
        raise ConfigError(f"web.cache_mb must be between 1 and {MAX_CACHE_MB}, got {web.cache_mb}")
    _check_web_timeouts(web)
    _check_logging(config.logging)
    _check_alerts(config.alerts)

    return replace(
        config,
        database=replace(config.database, url=db_url),
        data=replace(data, csv_dir=csv_dir),
    )


def _check_web_timeouts(web: WebConfig) -> None:
    if not 1 <= web.threads <= 256:
        raise ConfigError(f"web.threads must be between 1 and 256, got {web.threads}")
    _positive("web.timeout_s", web.timeout_s)
    if web.keepalive_s < 0:
        raise ConfigError(
            f"web.keepalive_s must be >= 0 (0 disables keep-alive), got {web.keepalive_s}"
        )
    _positive("web.read_timeout_s", web.read_timeout_s)
    if not 0 <= web.change_check_ms <= 60_000:
        raise ConfigError(
            f"web.change_check_ms must be between 0 and 60000, got {web.change_check_ms}"
        )
    if web.read_timeout_s > web.timeout_s:
        raise ConfigError(
            f"web.read_timeout_s ({web.read_timeout_s}) must not exceed "
            f"web.timeout_s ({web.timeout_s})"
        )


def _check_alerts(alerts: AlertsConfig) -> None:
    for key in ("webhook_url", "runs_url"):
        url = getattr(alerts, key)
        if url and not re.match(r"^https?://[^/\s?#]+(?:[/?#]\S*)?$", url, re.IGNORECASE):
            # Never echo the value: a webhook URL carries its token (Slack: in the path).
            scheme = url.split("://", 1)[0] if "://" in url else ""
            got = f"scheme {scheme!r}" if scheme and len(scheme) < 12 else "no scheme://host"
            raise ConfigError(f"alerts.{key} must be an http:// or https:// URL ({got})")
    unknown = [event for event in alerts.on if event not in ALERT_EVENTS]
    if unknown:
        raise ConfigError(
            f"alerts.on: unknown event {unknown[0]!r} (known: {', '.join(ALERT_EVENTS)})"
        )
    if len(set(alerts.on)) != len(alerts.on):
        raise ConfigError("alerts.on lists an event twice")


def _check_logging(settings: LoggingConfig) -> None:
    if settings.level.upper() not in LOG_LEVELS:
        raise ConfigError(
            f"logging.level must be one of {', '.join(LOG_LEVELS)}, got {settings.level!r}"
        )
    if settings.format not in LOG_FORMATS:
        raise ConfigError(f"logging.format must be 'text' or 'json', got {settings.format!r}")


def _check_executor(executor: ExecutorConfig, db_url: str) -> None:
    if executor.kind not in EXECUTORS:
        raise ConfigError(f"executor.kind must be 'local' or 'dask', got {executor.kind!r}")
    _positive("executor.workers", executor.workers)
    if executor.address and executor.kind != "dask":
        raise ConfigError("executor.address is only used with executor.kind = 'dask'")
    if executor.address and not re.match(r"^(tcp|tls|inproc|ucx)://\S+$", executor.address):
        raise ConfigError(
            f"executor.address must look like tcp://host:8786, got {executor.address!r}"
        )
    if executor.kind == "dask" and executor.address and db_url.startswith("sqlite"):
        raise ConfigError(
            "executor.address: a remote Dask cluster cannot use the SQLite file database "
            f"({safe_url(db_url)}); its workers must reach the same database: use PostgreSQL"
        )


def _positive(key: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{key} must be positive, got {value}")


def _resolve_sqlite_url(url: str, base_dir: Path) -> str:
    """Make a relative SQLite file path absolute against the config file's directory."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"database.url must be a SQLAlchemy URL, got {safe_url(str(url))!r}")
    prefix = "sqlite:///"
    if url.startswith(prefix):
        rest = url[len(prefix) :]
        if rest and not rest.startswith("/") and not rest.startswith(":memory:"):
            return prefix + str((base_dir / rest).resolve())
    return url


def _check_timezone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"schedule.timezone: unknown time zone {name!r}") from None


def cron_trigger(expr: str, timezone: str):
    """The APScheduler trigger of a five-field crontab (minute hour day month day_of_week), or of
    six fields whose first is the second (handy for tests and sub-minute schedules)."""
    from apscheduler.triggers.cron import CronTrigger

    parts = expr.split()
    if len(parts) == 6:
        second, minute, hour, day, month, day_of_week = parts
        return CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=day_of_week,
            timezone=timezone,
        )
    return CronTrigger.from_crontab(expr, timezone=timezone)


def _check_cron(expr: str, timezone: str) -> None:
    try:
        cron_trigger(expr, timezone)
    except ValueError as exc:
        raise ConfigError(
            f"schedule.cron: invalid cron expression {expr!r} ({exc}); expected five fields "
            "'minute hour day month day_of_week' (or six with a leading second)"
        ) from None


def _check_exchanges(tickers: TickersConfig) -> None:
    from exchange_calendars import get_calendar_names

    names = set(get_calendar_names(include_aliases=True))
    if tickers.exchange not in names:
        raise ConfigError(f"tickers.exchange: unknown exchange calendar {tickers.exchange!r}")
    for symbol, code in tickers.exchanges.items():
        if code not in names:
            raise ConfigError(f"tickers.exchanges.{symbol}: unknown exchange calendar {code!r}")
