"""Load and validate candlecast's TOML configuration into frozen dataclasses.

`load_config(path)` is the only entry point; it never touches the filesystem beyond reading the file
and raises `ConfigError` with one message naming the offending key.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from db.urls import safe_url
from jobs.config_checks import _validated
from jobs.config_types import (
    _SECTIONS,
    ALERT_EVENTS,
    CONFIG_ENV,
    DATABASE_DRIVERS,
    DATABASE_URL_ENV,
    DEFAULT_CONFIG_PATH,
    ENV_OVERRIDE_PREFIX,
    ENV_OVERRIDE_SEPARATOR,
    EXECUTORS,
    LOG_FORMATS,
    LOG_LEVELS,
    ON_INVALID,
    PROJECT_ROOT,
    PROVIDERS,
    TICKER_PATTERN,
    AlertsConfig,
    Config,
    ConfigError,
    DatabaseConfig,
    DataConfig,
    ExecutorConfig,
    LoggingConfig,
    ModelConfig,
    ScheduleConfig,
    TickersConfig,
    WebConfig,
    validate_ticker,
)


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
    if parsed.host is not None and "@" in parsed.host:
        # `user:p@ss@host`: the password's tail would be the host, named by the driver's errors
        raise ConfigError(
            f"{key}: the password in {safe_url(url)!r} holds an unencoded '@': "
            "percent-encode it (@ as %40)"
        )


def _build_section(name: str, cls: type, table: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    for key in table:
        if (name, key) == ("model", "scope"):
            raise ConfigError(
                "model.scope was removed: one global network now serves every ticker (the "
                "per-ticker networks were gated out everywhere); delete the line"
            )
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


__all__ = [
    "PROJECT_ROOT",
    "DEFAULT_CONFIG_PATH",
    "CONFIG_ENV",
    "DATABASE_URL_ENV",
    "ENV_OVERRIDE_PREFIX",
    "ENV_OVERRIDE_SEPARATOR",
    "TICKER_PATTERN",
    "PROVIDERS",
    "ON_INVALID",
    "EXECUTORS",
    "LOG_LEVELS",
    "LOG_FORMATS",
    "ALERT_EVENTS",
    "DATABASE_DRIVERS",
    "ConfigError",
    "validate_ticker",
    "DatabaseConfig",
    "DataConfig",
    "TickersConfig",
    "ScheduleConfig",
    "ModelConfig",
    "WebConfig",
    "ExecutorConfig",
    "AlertsConfig",
    "LoggingConfig",
    "Config",
    "check_database_url",
    "config_base_dir",
    "config_from_dict",
    "default_config_path",
    "in_checkout",
    "load_config",
    "packaged_config_path",
    "resolve_config_path",
]
