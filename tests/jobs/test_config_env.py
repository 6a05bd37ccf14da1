"""Environment overrides of config keys: CANDLECAST_<SECTION>__<KEY> (issue 11, deployment files).

An override replaces the file's value before validation, so it is checked with the same rules and
messages as the file, and the message names the variable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.config import DATABASE_URL_ENV, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No override (nor CANDLECAST_DATABASE_URL) from the caller's environment leaks in."""
    for var in list(os.environ):
        if var.startswith("CANDLECAST_") and ("__" in var or var == DATABASE_URL_ENV):
            monkeypatch.delenv(var)


def write(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "candlecast.toml"
    path.write_text(text)
    return path


def test_int_bool_float_and_string_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("CANDLECAST_MODEL__EPOCHS", "3")
    monkeypatch.setenv("CANDLECAST_MODEL__ATTENTION", "false")
    monkeypatch.setenv("CANDLECAST_MODEL__LEARNING_RATE", "0.01")
    monkeypatch.setenv("CANDLECAST_MODEL__VALIDATION_FRACTION", "0.2")
    monkeypatch.setenv("CANDLECAST_WEB__HOST", "0.0.0.0")
    monkeypatch.setenv("CANDLECAST_SCHEDULE__CRON", "0 22 * * mon-fri")
    monkeypatch.setenv("CANDLECAST_SCHEDULE__TIMEZONE", "UTC")
    config = load_config(write(tmp_path))
    assert config.model.epochs == 3
    assert config.model.attention is False
    assert config.model.learning_rate == 0.01
    assert config.model.validation_fraction == 0.2
    assert config.web.host == "0.0.0.0"
    assert config.schedule.cron == "0 22 * * mon-fri"
    assert config.schedule.timezone == "UTC"


def test_string_keys_take_the_text_as_is_even_when_it_looks_like_toml(tmp_path, monkeypatch):
    monkeypatch.setenv("CANDLECAST_TICKERS__EXCHANGE", "XNYS")
    monkeypatch.setenv("CANDLECAST_EXECUTOR__KIND", "dask")
    monkeypatch.setenv("CANDLECAST_EXECUTOR__ADDRESS", "tcp://10.0.0.5:8786")
    monkeypatch.setenv("CANDLECAST_WEB__HOST", "127")  # TOML would read an integer
    config = load_config(write(tmp_path, '[database]\nurl = "postgresql://u@h/db"\n'))
    assert config.executor.kind == "dask"
    assert config.executor.address == "tcp://10.0.0.5:8786"
    assert config.web.host == "127"


@pytest.mark.parametrize(
    "value",
    ["AAPL,MSFT", " AAPL , MSFT ,", '["AAPL", "MSFT"]', "['AAPL','MSFT']"],
)
def test_list_override_as_comma_separated_text_or_toml_array(tmp_path, monkeypatch, value):
    monkeypatch.setenv("CANDLECAST_TICKERS__SYMBOLS", value)
    config = load_config(write(tmp_path, '[tickers]\nsymbols = ["TSLA"]\n'))
    assert config.tickers.symbols == ("AAPL", "MSFT")


def test_single_ticker_and_table_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("CANDLECAST_TICKERS__SYMBOLS", "SHEL.L")
    monkeypatch.setenv("CANDLECAST_TICKERS__EXCHANGES", '{ "SHEL.L" = "XLON" }')
    config = load_config(write(tmp_path))
    assert config.tickers.symbols == ("SHEL.L",)
    assert config.tickers.exchange_for("SHEL.L") == "XLON"


def test_environment_wins_over_the_file_and_leaves_other_keys(tmp_path, monkeypatch):
    path = write(tmp_path, "[model]\nepochs = 7\nunits = 8\n[web]\nport = 9000\n")
    monkeypatch.setenv("CANDLECAST_MODEL__EPOCHS", "2")
    config = load_config(path)
    assert config.model.epochs == 2
    assert config.model.units == 8
    assert config.web.port == 9000


def test_relative_csv_dir_resolves_against_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "csvs").mkdir()
    monkeypatch.setenv("CANDLECAST_DATA__PROVIDER", "csv")
    monkeypatch.setenv("CANDLECAST_DATA__CSV_DIR", "csvs")
    config = load_config(write(tmp_path))
    assert config.data.provider == "csv"
    assert config.data.csv_dir == (tmp_path / "csvs").resolve()


def test_database_url_double_underscore_and_the_older_alias(tmp_path, monkeypatch):
    path = write(tmp_path, '[database]\nurl = "sqlite:///file.db"\n')
    monkeypatch.setenv("CANDLECAST_DATABASE__URL", "postgresql+psycopg://a@h/one")
    assert load_config(path).database.url == "postgresql+psycopg://a@h/one"
    monkeypatch.setenv(DATABASE_URL_ENV, "postgresql+psycopg://b@h/two")
    assert load_config(path).database.url == "postgresql+psycopg://b@h/two"  # the alias wins
    monkeypatch.delenv("CANDLECAST_DATABASE__URL")
    assert load_config(path).database.url == "postgresql+psycopg://b@h/two"


def test_variables_without_a_double_underscore_are_not_overrides(tmp_path, monkeypatch):
    path = write(tmp_path, "[model]\nepochs = 7\n")
    monkeypatch.setenv("CANDLECAST_CONFIG", str(tmp_path / "elsewhere.toml"))
    monkeypatch.setenv("CANDLECAST_TEST_POSTGRES_URL", "postgresql://u@h/db")
    monkeypatch.setenv("CANDLECAST_MODEL_EPOCHS", "1")  # one underscore: not an override
    config = load_config(path)
    assert config.model.epochs == 7
    assert config.source == path


@pytest.mark.parametrize(
    ("var", "value", "file_text", "message"),
    [
        (
            "CANDLECAST_MODEL__EPOCHS",
            "0",
            "[model]\nepochs = 0\n",
            "model.epochs must be positive, got 0",
        ),
        (
            "CANDLECAST_MODEL__EPOCHS",
            "ten",
            '[model]\nepochs = "ten"\n',
            "model.epochs must be an integer, got 'ten'",
        ),
        (
            "CANDLECAST_MODEL__ATTENTION",
            "yes",
            '[model]\nattention = "yes"\n',
            "model.attention must be true or false, got 'yes'",
        ),
        (
            "CANDLECAST_TICKERS__SYMBOLS",
            "AAPL,aapl",
            '[tickers]\nsymbols = ["AAPL", "aapl"]\n',
            "tickers.symbols: invalid ticker 'aapl'",
        ),
        (
            "CANDLECAST_TICKERS__SYMBOLS",
            "",
            "[tickers]\nsymbols = []\n",
            "tickers.symbols must list at least one ticker",
        ),
        (
            "CANDLECAST_WEB__PORT",
            "70000",
            "[web]\nport = 70000\n",
            "web.port must be between 1 and 65535, got 70000",
        ),
        (
            "CANDLECAST_SCHEDULE__TIMEZONE",
            "Mars/Olympus",
            '[schedule]\ntimezone = "Mars/Olympus"\n',
            "schedule.timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            "CANDLECAST_DATABASE__URL",
            "mysql://u@h/db",
            '[database]\nurl = "mysql://u@h/db"\n',
            "database.url: unsupported database 'mysql'",
        ),
        (
            "CANDLECAST_DATA__COLOUR",
            "1",
            "[data]\ncolour = 1\n",
            "unknown key data.colour",
        ),
        (
            "CANDLECAST_EXTRAS__X",
            "1",
            "[extras]\nx = 1\n",
            "unknown config section [extras]",
        ),
    ],
)
def test_invalid_override_gives_the_file_message_naming_the_variable(
    tmp_path, monkeypatch, var, value, file_text, message
):
    with pytest.raises(ConfigError) as from_file:
        load_config(write(tmp_path, file_text))
    assert message in str(from_file.value)
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as from_env:
        load_config(write(tmp_path))
    assert str(from_env.value) == f"{var}: {from_file.value}"


def test_error_names_only_the_variables_it_is_about(tmp_path, monkeypatch):
    monkeypatch.setenv("CANDLECAST_MODEL__EPOCHS", "3")  # valid, not named
    monkeypatch.setenv("CANDLECAST_WEB__TIMEOUT_S", "5")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "[web]\nread_timeout_s = 10\n"))
    assert str(err.value) == (
        "CANDLECAST_WEB__TIMEOUT_S: web.read_timeout_s (10) must not exceed web.timeout_s (5)"
    )
    monkeypatch.setenv("CANDLECAST_WEB__READ_TIMEOUT_S", "10")
    with pytest.raises(ConfigError) as both:
        load_config(write(tmp_path))
    assert str(both.value).startswith("CANDLECAST_WEB__READ_TIMEOUT_S, CANDLECAST_WEB__TIMEOUT_S: ")


def test_error_in_the_file_is_not_blamed_on_an_unrelated_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("CANDLECAST_MODEL__UNITS", "8")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "[model]\nepochs = 0\n"))
    assert str(err.value) == "model.epochs must be positive, got 0"


@pytest.mark.parametrize("var", ["CANDLECAST___EPOCHS", "CANDLECAST_MODEL__"])
def test_malformed_variable_name_is_an_error(tmp_path, monkeypatch, var):
    monkeypatch.setenv(var, "1")
    with pytest.raises(ConfigError, match=f"^{var}: expected CANDLECAST_<SECTION>__<KEY>"):
        load_config(write(tmp_path))


@pytest.mark.slow  # the candlecast CLI in a subprocess: ~2 s
def test_the_cli_honours_an_override(tmp_path, migrated_url):
    """The real `candlecast tickers` in a subprocess lists the tickers of the environment."""
    path = write(tmp_path, f'[database]\nurl = "{migrated_url}"\n[tickers]\nsymbols = ["TSLA"]\n')
    env = {k: v for k, v in os.environ.items() if k != DATABASE_URL_ENV and "__" not in k}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["CANDLECAST_TICKERS__SYMBOLS"] = "AAPL,MSFT"
    cmd = [sys.executable, "-m", "jobs.cli", "--config", str(path), "tickers"]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "AAPL" in result.stdout and "MSFT" in result.stdout, result.stdout
    assert "TSLA" not in result.stdout, result.stdout

    env["CANDLECAST_MODEL__EPOCHS"] = "0"
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "candlecast: error: CANDLECAST_MODEL__EPOCHS: model.epochs must be positive, got 0"
    )
