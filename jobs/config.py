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

from db.urls import safe_url
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


def resolve_config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Pick the config file: explicit path, then $CANDLECAST_CONFIG, then default_config_path()."""
    if path:
        return Path(path)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else default_config_path()


def packaged_config_path() -> Path:
    """The default config.toml installed with candlecast (the repository's, in a checkout)."""
    from db.packaged import files_dir  # light: importlib only

    home = files_dir("config.toml")
    return home / "config.toml" if home is not None else DEFAULT_CONFIG_PATH


def in_checkout() -> bool:
    """True when running from a source checkout (editable install), not an installed wheel."""
    return packaged_config_path().parent == PROJECT_ROOT


def default_config_path() -> Path:
    """The config file used without --config or $CANDLECAST_CONFIG.

    In a checkout: the repository's config.toml. Installed: ./config.toml of the current directory
    if there is one, else the packaged default (whose relative paths then resolve against the
    current directory, see config_base_dir: nothing is ever written into site-packages).
    """
    if in_checkout():
        return DEFAULT_CONFIG_PATH
    local = Path.cwd() / "config.toml"
    return local if local.is_file() else packaged_config_path()


def config_base_dir(config_path: Path | None = None) -> Path:
    """The directory relative paths of `config_path` (None: a dict, no file) resolve against.

    A config file's own directory, except for the packaged default of an installed candlecast
    (and for no file at all), whose relative paths resolve against the current directory.
    """
    if in_checkout():
        return config_path.resolve().parent if config_path is not None else PROJECT_ROOT
    if config_path is None or config_path.resolve() == packaged_config_path().resolve():
        return Path.cwd()
    return config_path.resolve().parent


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read, validate and return the configuration. Raises ConfigError with a clear message.

    Each CANDLECAST_<SECTION>__<KEY> environment variable replaces that key's value from the file
    before validation, so it is checked the same way; an error about it names the variable.
    """
    config_path = resolve_config_path(path)
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {config_path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {config_path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{config_path} is not a UTF-8 TOML file (undecodable byte at offset {exc.start})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: not valid TOML: {exc}") from None
    overridden = _apply_env_overrides(raw, dict(os.environ))
    try:
        return config_from_dict(raw, base_dir=config_base_dir(config_path), source=config_path)
    except ConfigError as exc:
        named = [var for key, var in overridden.items() if _mentions(str(exc), key)]
        if not named:
            raise
        raise ConfigError(f"{', '.join(named)}: {exc}") from None


def _apply_env_overrides(raw: dict[str, Any], environ: dict[str, str]) -> dict[str, str]:
    """Set raw[section][key] from each CANDLECAST_<SECTION>__<KEY>; return {"section.key": var}.

    The value is parsed as a TOML value (3, true, 0.5, ["A", "B"], "text") when it is one, else
    taken as text; string keys always take the text, list keys also take "A,B" (comma-separated).
    Unknown sections and keys are left for config_from_dict to reject like the file's.
    """
    applied: dict[str, str] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_OVERRIDE_PREFIX) or ENV_OVERRIDE_SEPARATOR not in var:
            continue  # CANDLECAST_CONFIG, CANDLECAST_DATABASE_URL, ...: not a key override
        name = var[len(ENV_OVERRIDE_PREFIX) :].lower()
        section, _, key = name.partition(ENV_OVERRIDE_SEPARATOR)
        if not section or not key:
            raise ConfigError(
                f"{var}: expected {ENV_OVERRIDE_PREFIX}<SECTION>{ENV_OVERRIDE_SEPARATOR}<KEY>, "
                "e.g. CANDLECAST_MODEL__EPOCHS"
            )
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            continue  # the file's own error ("[section] must be a table") is reported
        cls = _SECTIONS.get(section)
        known = {f.name for f in fields(cls)} if cls is not None else set()
        default = getattr(cls(), key) if key in known else None
        table[key] = _env_value(environ[var], default, string=f"{section}.{key}" == "data.csv_dir")
        applied[f"{section}.{key}"] = var
    return applied


def _env_value(text: str, default: Any, *, string: bool = False) -> Any:
    """An environment variable's text as a config value of the type of `default` where it can."""
    if isinstance(default, str) or string:
        return text  # host names, URLs, cron lines, paths: never reinterpreted
    value: Any = text
    if "\n" not in text and "\r" not in text:
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            pass  # a bare word: the text itself (validation says if it does not fit)
    if isinstance(default, tuple) and isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    return value


def _mentions(message: str, key: str) -> bool:
    """Whether an error message is about `key` ("section.key", or "[section]" if unknown)."""
    section = key.partition(".")[0]
    if section not in _SECTIONS and f"[{section}]" in message:
        return True
    return re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", message) is not None


def config_from_dict(
    raw: dict[str, Any], base_dir: Path | None = None, source: Path | None = None
) -> Config:
    """Build a validated Config from a parsed TOML mapping (relative paths resolve to base_dir)."""
    from jobs.config_checks import _validated  # lazy: config_checks imports this module

    base_dir = base_dir or config_base_dir()
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section [{unknown[0]}] (known: {', '.join(_SECTIONS)})")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table")
        sections[name] = _build_section(name, cls, table)
    config = _validated(Config(**sections, source=source), base_dir)
    check_database_url(config.database.url)
    return config


def check_database_url(url: str) -> None:
    """Raise ConfigError unless `url` is a well-formed SQLite or PostgreSQL (psycopg) URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    key = "database.url"
    if os.environ.get(DATABASE_URL_ENV):
        key = f"${DATABASE_URL_ENV}"
    supported = "sqlite:///path/to/file.db or postgresql://user:password@host:5432/dbname"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(f"{key}: malformed URL {safe_url(url)!r}; expected {supported}") from None
    if parsed.drivername not in DATABASE_DRIVERS:
        raise ConfigError(
            f"{key}: unsupported database {parsed.drivername!r}; candlecast supports "
            f"SQLite and PostgreSQL: {supported}"
        )


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
