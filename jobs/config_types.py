"""candlecast's settings as frozen dataclasses, with the constants and the one error type.

jobs.config loads a TOML file into them (and re-exports every name here); jobs.config_checks
validates them. This module imports neither, so the three form no cycle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forecasting.params import ModelParams

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config.toml"  # in a checkout; see default_config_path()
CONFIG_ENV = "CANDLECAST_CONFIG"
DATABASE_URL_ENV = "CANDLECAST_DATABASE_URL"
# Any key from the environment: CANDLECAST_<SECTION>__<KEY>=value (see load_config).
ENV_OVERRIDE_PREFIX = "CANDLECAST_"
ENV_OVERRIDE_SEPARATOR = "__"

# Yahoo-style symbols: AAPL, BRK-B, SHEL.L, ^GSPC, EURUSD=X. Upper case only, no path separators.
TICKER_PATTERN = re.compile(r"^\^?[A-Z0-9][A-Z0-9.\-=]{0,14}$")
PROVIDERS = ("bundled", "csv", "yfinance")
ON_INVALID = ("drop", "fail")
EXECUTORS = ("local", "dask")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # [logging] level, any case
LOG_FORMATS = ("text", "json")
ALERT_EVENTS = ("failed", "partial", "stale")  # [alerts] on: run statuses, and the health check's
# SQLAlchemy drivers candlecast supports (a plain postgresql:// URL uses psycopg 3, see db.session).
DATABASE_DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg")


class ConfigError(ValueError):
    """Raised for any invalid configuration; the message names the key."""


def validate_ticker(symbol: object) -> str:
    """Return `symbol` if it is a well-formed ticker, else raise ValueError."""
    if not isinstance(symbol, str) or not TICKER_PATTERN.fullmatch(symbol):
        raise ValueError(
            f"invalid ticker {symbol!r}: expected upper-case letters, digits and . - = ^ "
            "(at most 15 characters), e.g. AAPL, BRK-B, SHEL.L"
        )
    return symbol


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///var/candlecast.db"


@dataclass(frozen=True)
class DataConfig:
    provider: str = "bundled"
    csv_dir: Path | None = None
    history_years: int = 5
    on_invalid: str = "drop"
    sync_overlap_sessions: int = 5
    yfinance_auto_adjust: bool = True
    yfinance_retries: int = 3


@dataclass(frozen=True)
class TickersConfig:
    symbols: tuple[str, ...] = ("AAPL", "GOOGL", "AMZN", "MSFT", "TSLA")
    exchange: str = "XNYS"
    exchanges: dict[str, str] = field(default_factory=dict)

    def exchange_for(self, ticker: str) -> str:
        """The exchange calendar code used for `ticker` (per-ticker override or default)."""
        return self.exchanges.get(ticker, self.exchange)


@dataclass(frozen=True)
class ScheduleConfig:
    cron: str = "30 18 * * mon-fri"
    timezone: str = "America/New_York"
    misfire_grace_time_s: int = 6 * 3600
    stale_after_hours: float = 12.0  # a due run that has not succeeded this long after: degraded
    # candles older than this many sessions of their exchange: degraded, and the index warns
    # (0: never)
    data_stale_after_sessions: int = 5
    metrics_port: int = 0  # the daemon's Prometheus metrics port (0: not served)


@dataclass(frozen=True)
class ModelConfig(ModelParams):
    """The [model] section: the model hyperparameters plus settings not stored with a model."""

    keep_versions: int = 5  # per ticker, model versions whose .keras artifact is kept (>= 1)

    def to_dict(self) -> dict[str, Any]:
        """The hyperparameters only (what a model version records)."""
        return {name: getattr(self, name) for name in ModelParams.__dataclass_fields__}


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    threads: int = 16  # gthread threads per worker: requests one worker serves at once
    timeout_s: int = 120  # a worker whose main loop is silent this long is restarted
    keepalive_s: int = 5  # an idle kept-alive connection is closed after this
    read_timeout_s: int = 10  # a client stalled this long mid-request (or mid-response) is cut
    access_log: bool = False  # one timestamped stderr line per request (gunicorn access log)
    change_check_ms: int = 50  # rendered answers may lag a database commit by this long
    cache_mb: int = 32  # each worker's cache of rendered answers keeps within this many MiB


@dataclass(frozen=True)
class ExecutorConfig:
    kind: str = "local"
    workers: int = 1
    address: str = ""


@dataclass(frozen=True)
class AlertsConfig:
    webhook_url: str = ""  # Slack/Mattermost-compatible incoming webhook; empty: no alerts
    on: tuple[str, ...] = ALERT_EVENTS
    runs_url: str = ""  # link to the web app's /runs page put in each alert (optional)


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"  # candlecast's own loggers (other libraries: WARNING); --verbose: DEBUG
    format: str = "text"  # "text" lines or "json" (one object per line); see jobs.logs


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tickers: TickersConfig = field(default_factory=TickersConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    web: WebConfig = field(default_factory=WebConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    source: Path | None = None


_SECTIONS: dict[str, type] = {
    "database": DatabaseConfig,
    "data": DataConfig,
    "tickers": TickersConfig,
    "schedule": ScheduleConfig,
    "model": ModelConfig,
    "web": WebConfig,
    "executor": ExecutorConfig,
    "logging": LoggingConfig,
    "alerts": AlertsConfig,
}
