"""`candlecast forecast` and `candlecast backtest` end to end with a tiny model on real data."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import undefer

from db.models import BaselineForecast, Forecast, ForecastRun, ModelVersion
from db.run_lock import RunLockHandle
from db.session import make_engine
from forecasting.artifact import sha256_hex
from forecasting.backtest import CSV_COLUMNS
from jobs.cli import main
from jobs.cli_support import EXIT_LOCKED, EXIT_OK, EXIT_USAGE
from tests.conftest import one_backend
from tests.jobs.conftest import TINY_MODEL, write_config


def config_file(tmp_path, universe, url):
    return write_config(
        tmp_path / "c.toml",
        url,
        {
            "data": {"provider": "csv", "csv_dir": str(universe)},
            "tickers": {"symbols": ["AAPL", "MSFT"]},
            "model": {**TINY_MODEL, "retrain_every": 5},
        },
    )


@one_backend
@pytest.mark.slow
def test_forecast_trains_once_then_reuses_the_stored_model(
    tmp_path, universe, migrated_url, session_factory, capsys
):
    config = str(config_file(tmp_path, universe, migrated_url))
    assert main(["--config", config, "forecast", "--ticker", "AAPL"]) == EXIT_OK
    out = capsys.readouterr().out
    for day in ("2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"):
        assert day in out
    assert "(trained now)" in out
    assert main(["--config", config, "forecast", "--ticker", "AAPL", "--as-of", "2023-12-30"]) == 0
    out = capsys.readouterr().out
    assert "as of 2023-12-29" in out and "trained on data up to 2023-12-29" in out
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(ModelVersion)) == 1
        assert s.scalar(select(func.count()).select_from(Forecast)) == 0


def _corrupt_newest_model(session_factory, how: str) -> int:
    """Break the newest AAPL model version's artifact in place; returns its id."""
    with session_factory.begin() as s:
        version = s.scalars(
            select(ModelVersion)
            .where(ModelVersion.ticker == "AAPL")
            .order_by(ModelVersion.id.desc())
            .options(undefer(ModelVersion.artifact))
        ).first()
        good = bytes(version.artifact)
        if how == "sha_mismatch":
            flipped = bytearray(good)
            flipped[len(good) // 2] ^= 0xFF
            version.artifact = bytes(flipped)  # the stored sha256 no longer matches
        elif how == "truncated":
            version.artifact = good[: len(good) // 2]
            version.artifact_sha256 = sha256_hex(version.artifact)  # a matching sha256
        else:  # calibrated by an older candlecast
            version.calibration = {"alpha_close": [0.0] * 4}
        return version.id


@pytest.mark.slow
@one_backend
def test_forecast_retrains_when_the_stored_model_is_unusable(
    tmp_path, universe, migrated_url, session_factory, capsys
):
    config = str(config_file(tmp_path, universe, migrated_url))
    args = ["--config", config, "forecast", "--ticker", "AAPL", "--as-of", "2023-12-30"]
    assert main(args) == EXIT_OK
    capsys.readouterr()
    expected = {
        "truncated": "not a valid .keras archive",
        "sha_mismatch": "sha256 mismatch",
        "old_calibration": "older candlecast",
    }
    if not migrated_url.startswith("sqlite"):
        # the artifact checks read bytes the same way from any database: one case on PostgreSQL
        # keeps the suite inside its time budget
        expected = dict(list(expected.items())[:1])
    for count, (how, message) in enumerate(expected.items(), start=2):
        broken = _corrupt_newest_model(session_factory, how)
        assert main(args) == EXIT_OK, how
        captured = capsys.readouterr()
        assert "(trained now)" in captured.out and "2024-01-02" in captured.out
        assert f"model version {broken} of AAPL is unusable" in captured.err
        assert message in captured.err and "Traceback" not in captured.err
        assert "File not found" not in captured.err
        with session_factory() as s:
            assert s.scalar(select(func.count()).select_from(ModelVersion)) == count
    # the version trained last is fine and is reused
    assert main(args) == EXIT_OK
    assert "trained on data up to 2023-12-29" in capsys.readouterr().out


def test_forecast_refuses_an_unconfigured_ticker(tmp_path, universe, migrated_url, capsys):
    config = str(config_file(tmp_path, universe, migrated_url))
    assert main(["--config", config, "forecast", "--ticker", "TSLA"]) == EXIT_USAGE
    assert "--ticker: TSLA is not a configured ticker" in capsys.readouterr().err


@pytest.mark.slow
def test_backtest_writes_the_csv_and_can_store_backfill_runs(
    tmp_path, universe, migrated_url, session_factory, capsys
):
    config = str(config_file(tmp_path, universe, migrated_url))
    output = tmp_path / "bt.csv"
    args = ["--config", config, "backtest", "--tickers", "AAPL", "--start", "2023-12-18"]
    args += ["--end", "2023-12-29", "--output", str(output), "--store"]
    assert main(args) == EXIT_OK
    rows = pd.read_csv(output)
    assert list(rows.columns) == CSV_COLUMNS
    # sessions 12-18 .. 12-22 have four later sessions in the data; 12-26 onwards do not
    assert sorted(rows["as_of_date"].unique()) == [f"2023-12-{d}" for d in (18, 19, 20, 21, 22)]
    assert len(rows) == 5 * 4
    captured = capsys.readouterr()
    out = captured.out
    assert "stored 5 forecast sets" in out
    # the compact summary: candlecast against each model, one line per horizon, <= 100 columns
    assert max(len(line) for line in out.splitlines() if str(tmp_path) not in line) <= 100
    lines = [line.split() for line in out.splitlines()]
    assert [ln[:2] for ln in lines if ln and ln[0] == "garch"] == [
        ["garch", h] for h in ("1", "2", "3", "4", "all")
    ]
    # identical forecasts read "same", and a model identical on every score gets no rows
    assert not [ln for ln in lines if len(ln) >= 6 and ln[2:6] == ["same"] * 4]
    assert "nan" not in out
    # the full tables go to files
    summary = pd.read_csv(output.with_suffix(".summary.csv"))
    assert {"model", "horizon", "close_ratio", "winkler_80", "coverage_80"} <= set(summary.columns)
    skill = pd.read_csv(output.with_suffix(".skill.csv"))
    assert {"model", "baseline", "metric", "ratio", "ratio_lo", "ratio_hi"} <= set(skill.columns)
    assert "backtest 5/5" in captured.err or "backtest 1/" in captured.err  # progress on stderr
    every = pd.read_csv(output.with_suffix(".models.csv"))
    default_models = {"candlecast", "lstm", "har_range", "naive", "ewma", "garch", "range20"}
    assert set(every["model"]) == default_models
    assert (every.groupby("model").size() == 20).all()
    served = every[every["model"] == "candlecast"].drop(columns="model").reset_index(drop=True)
    pd.testing.assert_frame_equal(served, rows, check_dtype=False)
    report = output.with_suffix(".html").read_text()
    assert "Reliability" in report and "<script src=" not in report
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Forecast)) == 20
        assert set(s.scalars(select(ForecastRun.trigger))) == {"backfill"}
        stored = s.execute(
            select(BaselineForecast.model, func.count()).group_by(BaselineForecast.model)
        ).all()
    assert dict(stored) == {m: 20 for m in default_models - {"candlecast"}}


def test_backtest_store_takes_the_run_lock_and_stores_nothing_while_another_run_holds_it(
    tmp_path, universe, migrated_url, session_factory, capsys
):
    config = str(config_file(tmp_path, universe, migrated_url))
    output = tmp_path / "bt.csv"
    args = ["--config", config, "backtest", "--tickers", "AAPL", "--start", "2023-12-18"]
    args += ["--end", "2023-12-29", "--output", str(output), "--models", "naive,ewma", "--store"]
    engine = make_engine(migrated_url)
    try:
        with RunLockHandle(engine):  # another run (the nightly job, a backfill) is in progress
            assert main(args) == EXIT_LOCKED
            err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines
            assert err.startswith("candlecast: error: another candlecast run is in progress")
            assert err.endswith("; nothing stored (the CSV and the report are written)")
            assert "\n" not in err and "Traceback" not in err
            with session_factory() as s:
                for table in (Forecast, BaselineForecast, ForecastRun):
                    assert s.scalar(select(func.count()).select_from(table)) == 0
        assert len(pd.read_csv(output)) == 5 * 4  # the evaluation itself is still written
        # once the lock is free the same command stores, and releases the lock afterwards
        assert main(args) == EXIT_OK
        with RunLockHandle(engine):
            pass
    finally:
        engine.dispose()
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Forecast)) == 20
        assert s.scalar(select(func.count()).select_from(BaselineForecast)) == 20


def test_backtest_refuses_an_unknown_model(tmp_path, universe, migrated_url, capsys):
    config = str(config_file(tmp_path, universe, migrated_url))
    args = ["--config", config, "backtest", "--tickers", "AAPL", "--start", "2023-12-18"]
    args += ["--end", "2023-12-29", "--output", str(tmp_path / "x.csv"), "--models", "naive,arima"]
    assert main(args) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "unknown model(s) arima" in err and "garch" in err
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize(
    ("output", "report", "make_dir", "message"),
    [
        ("missing/dir/x.csv", None, None, "--output: cannot write {tmp}/missing/dir/x.csv: "
         "no directory {tmp}/missing/dir"),
        ("a_file/x.csv", None, None, "--output: cannot write {tmp}/a_file/x.csv: "
         "{tmp}/a_file is not a directory"),
        ("bt.csv", None, "bt.models.csv", "--output: cannot write every model's rows to "
         "{tmp}/bt.models.csv: it is a directory"),
        ("bt.csv", None, "bt.html", "--report: cannot write {tmp}/bt.html: it is a directory"),
        ("bt.csv", "missing/r.html", None, "--report: cannot write {tmp}/missing/r.html: "
         "no directory {tmp}/missing"),
        ("bt.csv", "bt.csv", None, "--report: {tmp}/bt.csv is also the --output file"),
        ("bt.csv", "bt.models.csv", None,
         "--report: {tmp}/bt.models.csv is also the file of every model's rows"),
    ],
)  # fmt: skip
def test_backtest_checks_every_output_path_before_any_work(
    tmp_path, universe, migrated_url, capsys, monkeypatch, output, report, make_dir, message
):
    """A path that cannot be written is one usage-error line before any candle is fetched."""
    import forecasting.providers

    def no_work(*args, **kwargs):
        raise AssertionError("the backtest started before its output paths were checked")

    monkeypatch.setattr(forecasting.providers, "fetch_candles", no_work)
    (tmp_path / "a_file").write_text("")
    if make_dir:
        (tmp_path / make_dir).mkdir()
    config = str(config_file(tmp_path, universe, migrated_url))
    args = ["--config", config, "backtest", "--tickers", "AAPL", "--start", "2023-12-18"]
    args += ["--end", "2023-12-29", "--output", str(tmp_path / output)]
    if report:
        args += ["--report", str(tmp_path / report)]
    before = sorted(tmp_path.rglob("*"))
    assert main(args) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == f"candlecast: error: {message.format(tmp=tmp_path)}\n"
    assert sorted(tmp_path.rglob("*")) == before  # nothing written
