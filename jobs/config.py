"""Load and validate candlecast's TOML configuration into frozen dataclasses.

`load_config(path)` is the only entry point; it never touches the filesystem beyond reading the file
and raises `ConfigError` with one message naming the offending key.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from forecasting.params import ModelParams

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config.toml"
CONFIG_ENV = "CANDLECAST_CONFIG"
DATABASE_URL_ENV = "CANDLECAST_DATABASE_URL"

# Yahoo-style symbols: AAPL, BRK-B, SHEL.L, ^GSPC, EURUSD=X. Upper case only, no path separators.
TICKER_PATTERN = re.compile(r"^\^?[A-Z0-9][A-Z0-9.\-=]{0,14}$")
PROVIDERS = ("bundled", "csv", "yfinance")
ON_INVALID = ("drop", "fail")
EXECUTORS = ("local", "dask")


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


ModelConfig = ModelParams  # the [model] section is exactly the model hyperparameters


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2


@dataclass(frozen=True)
class ExecutorConfig:
    kind: str = "local"
    workers: int = 1
    address: str = ""


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tickers: TickersConfig = field(default_factory=TickersConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    web: WebConfig = field(default_factory=WebConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    source: Path | None = None


_SECTIONS: dict[str, type] = {
    "database": DatabaseConfig,
    "data": DataConfig,
    "tickers": TickersConfig,
    "schedule": ScheduleConfig,
    "model": ModelConfig,
    "web": WebConfig,
    "executor": ExecutorConfig,
}


def resolve_config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Pick the config file: explicit path, then $CANDLECAST_CONFIG, then the repo's config.toml."""
    if path:
        return Path(path)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read, validate and return the configuration. Raises ConfigError with a clear message."""
    config_path = resolve_config_path(path)
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {config_path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {config_path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: not valid TOML: {exc}") from None
    return config_from_dict(raw, base_dir=config_path.resolve().parent, source=config_path)


def config_from_dict(
    raw: dict[str, Any], base_dir: Path | None = None, source: Path | None = None
) -> Config:
    """Build a validated Config from a parsed TOML mapping (relative paths resolve to base_dir)."""
    base_dir = base_dir or PROJECT_ROOT
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section [{unknown[0]}] (known: {', '.join(_SECTIONS)})")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table")
        sections[name] = _build_section(name, cls, table)
    config = Config(**sections, source=source)
    return _validated(config, base_dir)


def _build_section(name: str, cls: type, table: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    for key in table:
        if key not in known:
            raise ConfigError(f"unknown key {name}.{key} (known: {', '.join(known)})")
    values: dict[str, Any] = {}
    defaults = cls()
    for key, value in table.items():
        default = getattr(defaults, key)
        values[key] = _coerce(f"{name}.{key}", value, default)
    return cls(**values)


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check a value against the type of its default; lists become tuples, paths become Paths."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} must be a list of strings, got {value!r}")
        return tuple(value)
    if isinstance(default, dict):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{key} must be a table of strings, got {value!r}")
        return dict(value)
    if key == "data.csv_dir":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key} must be a non-empty path string, got {value!r}")
        return Path(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def _validated(config: Config, base_dir: Path) -> Config:
    from dataclasses import replace

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

    model = config.model
    for name in ("window", "horizon", "epochs", "batch_size", "units", "patience", "retrain_every"):
        _positive(f"model.{name}", getattr(model, name))
    if model.horizon != 4:
        raise ConfigError("model.horizon must be 4 (the product forecasts four candles)")
    if not 0.05 <= model.validation_fraction <= 0.5:
        raise ConfigError("model.validation_fraction must be between 0.05 and 0.5")
    if not 0 < model.learning_rate < 1:
        raise ConfigError("model.learning_rate must be between 0 and 1")

    _check_executor(config.executor, db_url)

    web = config.web
    if not 1 <= web.port <= 65535:
        raise ConfigError(f"web.port must be between 1 and 65535, got {web.port}")
    _positive("web.workers", web.workers)

    return replace(
        config,
        database=replace(config.database, url=db_url),
        data=replace(data, csv_dir=csv_dir),
    )


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
            f"({db_url}); its workers must reach the same database: use PostgreSQL"
        )


def _positive(key: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{key} must be positive, got {value}")


def _resolve_sqlite_url(url: str, base_dir: Path) -> str:
    """Make a relative SQLite file path absolute against the config file's directory."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"database.url must be a SQLAlchemy URL, got {url!r}")
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


def cron_trigger(expr: str, timezone: str):  # noqa: ANN201 - apscheduler CronTrigger
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
