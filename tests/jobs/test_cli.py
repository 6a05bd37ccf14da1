"""The candlecast CLI end to end on a real database: migrate, sync, tickers, errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text

from db.migrate import head
from db.session import make_engine
from jobs.cli import main
from jobs.cli_support import EXIT_FAILURE, EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE

BUNDLED = Path(__file__).resolve().parents[2] / "forecasting" / "bundled"


def write_csv(folder: Path, ticker: str, rows: int, *, offset: float = 0.0) -> None:
    frame = pd.read_csv(BUNDLED / f"{ticker}.csv.gz").head(rows)
    frame[["Open", "High", "Low", "Close"]] += offset
    frame.to_csv(folder / f"{ticker}.csv", index=False)


@pytest.fixture
def csv_setup(tmp_path, db_url, monkeypatch):
    """A csv-provider config file for this test's database (URL given through the environment)."""
    folder = tmp_path / "csv"
    folder.mkdir()
    config = tmp_path / "candlecast.toml"
    config.write_text(
        '[data]\nprovider = "csv"\ncsv_dir = "csv"\nhistory_years = 50\n'
        '[tickers]\nsymbols = ["AAPL", "MSFT"]\n'
    )
    monkeypatch.setenv("CANDLECAST_DATABASE_URL", db_url)
    return config, folder


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def candle_counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("select ticker, count(*) from candles group by ticker")).all()
    engine.dispose()
    return dict(rows)


def test_sync_is_incremental_and_idempotent(csv_setup, db_url, capsys):
    config, folder = csv_setup
    write_csv(folder, "AAPL", 100)
    write_csv(folder, "MSFT", 80)
    assert run(config, "db", "upgrade") == EXIT_OK
    assert run(config, "sync") == EXIT_OK
    assert candle_counts(db_url) == {"AAPL": 100, "MSFT": 80}
    capsys.readouterr()

    assert run(config, "sync") == EXIT_OK
    out = capsys.readouterr().out
    assert "AAPL   │ 0     │ 0" in out
    assert candle_counts(db_url) == {"AAPL": 100, "MSFT": 80}

    write_csv(folder, "AAPL", 110)  # ten new sessions
    assert run(config, "sync", "--tickers", "aapl") == EXIT_OK
    out = capsys.readouterr().out
    assert "AAPL   │ 10    │ 0" in out
    assert "MSFT" not in out
    assert candle_counts(db_url) == {"AAPL": 110, "MSFT": 80}


def test_sync_picks_up_corrections_within_the_overlap(csv_setup, db_url, capsys):
    config, folder = csv_setup
    write_csv(folder, "AAPL", 50)
    write_csv(folder, "MSFT", 50)
    run(config, "db", "upgrade")
    run(config, "sync")
    frame = pd.read_csv(folder / "AAPL.csv")
    frame.loc[48, ["Open", "High", "Low", "Close"]] += 1.0  # corrected second-to-last session
    frame.loc[10, ["Open", "High", "Low", "Close"]] += 1.0  # far older than the overlap: ignored
    frame.to_csv(folder / "AAPL.csv", index=False)
    capsys.readouterr()
    assert run(config, "sync", "--tickers", "AAPL") == EXIT_OK
    assert "AAPL   │ 0     │ 1" in capsys.readouterr().out


def test_sync_reports_a_failing_ticker_and_keeps_the_others(csv_setup, db_url, capsys):
    config, folder = csv_setup
    write_csv(folder, "AAPL", 30)  # no MSFT.csv
    run(config, "db", "upgrade")
    assert run(config, "sync") == EXIT_FAILURE
    captured = capsys.readouterr()
    assert "MSFT" in captured.out and "AAPL" in captured.out
    assert "candlecast: error: sync failed for MSFT" in captured.err
    assert candle_counts(db_url) == {"AAPL": 30}


def test_tickers_lists_stored_ranges(csv_setup, capsys):
    config, folder = csv_setup
    write_csv(folder, "AAPL", 20)
    write_csv(folder, "MSFT", 20)
    run(config, "db", "upgrade")
    run(config, "sync")
    capsys.readouterr()
    assert run(config, "tickers") == EXIT_OK
    out = capsys.readouterr().out
    assert "AAPL   │ XNYS     │ 2013-01-02 │ 2013-01-30 │ 20" in out


def test_commands_refuse_an_unmigrated_database(csv_setup, capsys):
    config, _ = csv_setup
    assert run(config, "tickers") == EXIT_FAILURE
    assert "run `candlecast db upgrade` first" in capsys.readouterr().err


def test_db_downgrade_and_current(csv_setup, capsys):
    config, _ = csv_setup
    assert run(config, "db", "upgrade") == EXIT_OK
    capsys.readouterr()
    assert run(config, "db", "current") == EXIT_OK
    assert capsys.readouterr().out.strip() == head()  # tests/db/test_migrations.py pins it
    assert run(config, "db", "downgrade", "base") == EXIT_OK
    capsys.readouterr()
    run(config, "db", "current")
    assert "base" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sync", "--tickers", "AA PL"], "--tickers: invalid ticker 'AA PL'"),
        (["sync", "--tickers", ","], "--tickers: no ticker given"),
        # one rule for every command that stores: refuse tickers that are not configured, and an
        # empty --tickers is not "all of them"
        (["run-once", "--tickers", "zzz"], "--tickers: ZZZ is not a configured ticker"),
        (["run-once", "--tickers", "AAPL,TSLA,X"], "--tickers: TSLA, X are not a configured"),
        (["run-once", "--tickers", ""], "--tickers: no ticker given"),
        (["run-once", "--tickers", " , "], "--tickers: no ticker given"),
        (
            ["backfill", "--start", "2023-12-01", "--end", "2023-12-05", "--tickers", ""],
            "no ticker",
        ),
        (
            ["backfill", "--start", "2023-12-01", "--end", "2023-12-05", "--tickers", "ZZZ"],
            "ZZZ is",
        ),
        (["sync", "--tickers", "ZZZ"], "--tickers: ZZZ is not a configured ticker"),
        (["forecast", "--ticker", "AAPL,MSFT"], "--ticker: give one ticker"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(csv_setup, db_url, capsys, args, message):
    config, _ = csv_setup
    run(config, "db", "upgrade")
    capsys.readouterr()
    assert run(config, *args) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:  # refused before anything is stored
            assert conn.execute(text("select count(*) from forecast_runs")).scalar_one() == 0
            assert conn.execute(text("select count(*) from candles")).scalar_one() == 0
    finally:
        engine.dispose()


def test_invalid_config_is_one_line_on_stderr(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('[data]\nprovider = "bloomberg"\n')
    assert main(["--config", str(config), "tickers"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "candlecast: error: data.provider must be one of bundled, csv, yfinance, got 'bloomberg'"
    ]


def test_every_command_has_help(capsys):
    for args in (["--help"], ["db", "--help"], ["db", "upgrade", "--help"], ["sync", "--help"]):
        assert main(args) == EXIT_OK
    assert "incremental" in capsys.readouterr().out


def test_run_once_where_every_sync_fails_exits_4_and_prints_each_error_once(
    csv_setup, db_url, capsys, keep_signal_handlers
):
    config, folder = csv_setup
    (folder / "AAPL.csv").write_text("garbage,,x\n1,2,3\n")  # no MSFT.csv at all
    assert run(config, "db", "upgrade") == EXIT_OK
    capsys.readouterr()
    assert run(config, "run-once") == EXIT_RUN_FAILED
    captured = capsys.readouterr()
    engine = make_engine(db_url)
    with engine.connect() as conn:
        runs = conn.execute(text("select status, as_of_date from forecast_runs")).all()
        errors = dict(conn.execute(text("select ticker, error from forecast_run_tickers")).all())
    engine.dispose()
    assert [tuple(r) for r in runs] == [("failed", None)]
    assert set(errors) == {"AAPL", "MSFT"}
    assert "Traceback" not in captured.err
    for ticker, error in errors.items():
        assert error.startswith("sync failed: ")
        assert captured.err.count(error) == 1, captured.err
        assert f"{ticker} failed in " in captured.err
    assert "candlecast: error: run 1 failed: all 2 tickers failed" in captured.err
    assert "run 1: failed" in captured.out
