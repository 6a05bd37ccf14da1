"""Configuration loading: defaults, overrides and one clear message per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.config import DEFAULT_CONFIG_PATH, ConfigError, config_from_dict, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "candlecast.toml"
    path.write_text(text)
    return path


def test_default_config_file_loads_with_documented_defaults(monkeypatch):
    monkeypatch.delenv("CANDLECAST_DATABASE_URL", raising=False)
    monkeypatch.delenv("CANDLECAST_CONFIG", raising=False)
    config = load_config()
    assert config.source == DEFAULT_CONFIG_PATH
    assert config.data.provider == "bundled"
    assert config.data.history_years == 5
    assert config.tickers.symbols == ("AAPL", "GOOGL", "AMZN", "MSFT", "TSLA")
    assert config.model.window == 20 and config.model.horizon == 4
    assert config.model.full_refit_every == 63
    expected_db = DEFAULT_CONFIG_PATH.parent / "var" / "candlecast.db"
    assert config.database.url == f"sqlite:///{expected_db}"


def test_relative_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    monkeypatch.delenv("CANDLECAST_DATABASE_URL", raising=False)
    (tmp_path / "csvs").mkdir()
    path = write(
        tmp_path,
        '[database]\nurl = "sqlite:///db/x.db"\n[data]\nprovider = "csv"\ncsv_dir = "csvs"\n',
    )
    config = load_config(path)
    assert config.database.url == f"sqlite:///{tmp_path.resolve()}/db/x.db"
    assert config.data.csv_dir == (tmp_path / "csvs").resolve()


def test_environment_selects_config_and_overrides_database_url(tmp_path, monkeypatch):
    path = write(tmp_path, '[tickers]\nsymbols = ["AAPL"]\n')
    monkeypatch.setenv("CANDLECAST_CONFIG", str(path))
    monkeypatch.setenv("CANDLECAST_DATABASE_URL", "postgresql+psycopg://u@h/db")
    config = load_config()
    assert config.tickers.symbols == ("AAPL",)
    assert config.database.url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[data]\nprovider = "bloomberg"\n', "data.provider must be one of"),
        ('[tickers]\nsymbols = ["AAPL", "aapl"]\n', "tickers.symbols: invalid ticker 'aapl'"),
        ('[tickers]\nsymbols = ["../etc"]\n', "tickers.symbols: invalid ticker"),
        ("[tickers]\nsymbols = []\n", "tickers.symbols must list at least one ticker"),
        ('[schedule]\ncron = "61 25 * * *"\n', "schedule.cron: invalid cron expression"),
        ('[schedule]\ntimezone = "Mars/Olympus"\n', "schedule.timezone: unknown time zone"),
        ('[data]\nprovider = "csv"\n', "data.csv_dir is required"),
        ('[data]\nprovider = "csv"\ncsv_dir = "nowhere"\n', "data.csv_dir: directory not found"),
        ("[data]\ncolour = 1\n", "unknown key data.colour"),
        ("[extras]\nx = 1\n", "unknown config section [extras]"),
        ('[model]\nepochs = "ten"\n', "model.epochs must be an integer"),
        ("[model]\nepochs = 0\n", "model.epochs must be positive"),
        ("[model]\nhorizon = 5\n", "model.horizon must be 4"),
        ('[model]\nscope = "per_ticker"\n', "model.scope was removed"),
        ('[model]\nscope = "global"\n', "delete the line"),
        ("[web]\nport = 70000\n", "web.port must be between 1 and 65535"),
        ("[web]\nthreads = 0\n", "web.threads must be between 1 and 256, got 0"),
        ('[web]\nthreads = "8"\n', "web.threads must be an integer"),
        ("[web]\ntimeout_s = 0\n", "web.timeout_s must be positive"),
        ("[web]\nkeepalive_s = -1\n", "web.keepalive_s must be >= 0"),
        ("[web]\nread_timeout_s = 0\n", "web.read_timeout_s must be positive"),
        ("[web]\ntimeout_s = 5\nread_timeout_s = 10\n", "must not exceed web.timeout_s (5)"),
        ("[web]\nchange_check_ms = -1\n", "web.change_check_ms must be between 0 and 60000"),
        ('[web]\nchange_check_ms = "50"\n', "web.change_check_ms must be an integer"),
        ("[web]\ncache_mb = 0\n", "web.cache_mb must be between 1 and 65536, got 0"),
        ("[web]\ncache_mb = -5\n", "web.cache_mb must be between 1 and 65536, got -5"),
        ("[web]\ncache_mb = 0.5\n", "web.cache_mb must be an integer, got 0.5"),
        ("[web]\ncache_mb = 100000\n", "web.cache_mb must be between 1 and 65536"),
        ('[tickers]\nexchange = "XXXX"\n', "tickers.exchange: unknown exchange calendar"),
        ('[tickers]\nexchanges = { "IBM" = "XNYS" }\n', "tickers.exchanges: 'IBM' is not in"),
        ("[data\n", "not valid TOML"),
    ],
)
def test_invalid_config_names_the_key(tmp_path, monkeypatch, text, message):
    monkeypatch.delenv("CANDLECAST_DATABASE_URL", raising=False)
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path, text))
    assert message in str(excinfo.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.toml")


def test_per_ticker_exchange_override():
    config = config_from_dict(
        {"tickers": {"symbols": ["AAPL", "SHEL.L"], "exchanges": {"SHEL.L": "XLON"}}}
    )
    assert config.tickers.exchange_for("SHEL.L") == "XLON"
    assert config.tickers.exchange_for("AAPL") == "XNYS"


@pytest.mark.parametrize("symbol", ["AAPL\n", "AAPL ", "aapl", "", "A/B", "../X", "A" * 16])
def test_validate_ticker_rejects_anything_but_a_plain_symbol(symbol):
    from jobs.config import validate_ticker

    with pytest.raises(ValueError, match="invalid ticker"):
        validate_ticker(symbol)


def test_web_cache_budget_default_file_and_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("CANDLECAST_DATABASE_URL", raising=False)
    assert load_config(DEFAULT_CONFIG_PATH).web.cache_mb == 32  # documented in config.toml
    assert load_config(write(tmp_path, "[web]\ncache_mb = 8\n")).web.cache_mb == 8
    monkeypatch.setenv("CANDLECAST_WEB__CACHE_MB", "64")
    assert load_config(write(tmp_path, "[web]\ncache_mb = 8\n")).web.cache_mb == 64
    monkeypatch.setenv("CANDLECAST_WEB__CACHE_MB", "0")
    with pytest.raises(ConfigError, match="CANDLECAST_WEB__CACHE_MB: web.cache_mb must be"):
        load_config(write(tmp_path, ""))
