"""Stored numbers are the same on SQLite and PostgreSQL (issue 17 items 5-7).

One nightly run (tiny model, every baseline) over AAPL and FLAT, a ticker whose price never
moves, is made once per database and shared by the tests: no NaN or infinity in any float or
JSON column, NULL where a baseline has no interval, no float32 noise in candles, forecasts to six
significant digits, and the same stored values on both databases.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import JSON, Float, create_engine, inspect, text

from db.migrate import upgrade
from forecasting.backtest import PRICE_KEYS, QUANTILE_COLUMNS
from jobs.cli import main
from jobs.cli_support import EXIT_OK
from jobs.config import config_from_dict
from jobs.pipeline import Pipeline
from jobs.sync import provider_for, sync_tickers
from tests.conftest import DB_BACKENDS, POSTGRES_URL, empty_database
from tests.jobs.conftest import TINY_MODEL, write_config, write_universe

pytestmark = pytest.mark.slow  # the module's tests share one trained night

TICKERS = ("AAPL", "FLAT")
FLAT_PRICE = 10.0
NO_INTERVAL = ("naive", "range20")  # baselines that forecast the close without an interval
# The forecast tables, each with an ORDER BY that lists its rows in a fixed order.
FORECAST_TABLES = {
    "forecasts": "ticker, as_of_date, horizon",
    "baseline_forecasts": "model, ticker, as_of_date, horizon",
}


def night_config(url: str, tmp: Path) -> Any:
    """AAPL and FLAT (AAPL's sessions at a constant price) from CSV files, tiny model."""
    folder = tmp / "csv"
    write_universe(folder, ("AAPL",))
    flat = pd.read_csv(folder / "AAPL.csv")
    flat[["Open", "High", "Low", "Close"]] = FLAT_PRICE
    flat.to_csv(folder / "FLAT.csv", index=False)
    raw = {
        "database": {"url": url},
        "data": {"provider": "csv", "csv_dir": str(folder)},
        "tickers": {"symbols": list(TICKERS)},
        "model": dict(TINY_MODEL),
    }
    return config_from_dict(raw, base_dir=tmp)


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], tuple[str, Any]]]:
    """night(backend) -> (database URL, run result): the same nightly run, made on first use."""
    done: dict[str, tuple[str, Any]] = {}
    with ExitStack() as stack:

        def get(backend: str) -> tuple[str, Any]:
            if backend not in done:
                tmp = tmp_path_factory.mktemp(f"night-{backend}")
                url = stack.enter_context(empty_database(backend, tmp / "night.db", "w"))
                upgrade(url)
                done[backend] = (url, Pipeline(night_config(url, tmp)).run_nightly())
            return done[backend]

        yield get


def query(url: str, sql: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)))
    finally:
        engine.dispose()


def columns_of(url: str, kind: type) -> list[tuple[str, str]]:
    """(table, column) of every column of the database (its real schema) of type `kind`."""
    engine = create_engine(url)
    try:
        inspector = inspect(engine)
        return [
            (table, column["name"])
            for table in sorted(inspector.get_table_names())
            for column in inspector.get_columns(table)
            if isinstance(column["type"], kind)
        ]
    finally:
        engine.dispose()


def significant_digits(value: float) -> int:
    """Significant digits of the shortest decimal that reads back as `value`."""
    digits = repr(abs(value)).split("e")[0].replace(".", "").strip("0")
    return len(digits)


@pytest.mark.parametrize("backend", DB_BACKENDS)
def test_a_constant_price_ticker_is_forecast_like_any_other(night, backend: str) -> None:
    url, result = night(backend)
    assert [(o.ticker, o.status, o.error) for o in result.outcomes] == [
        ("AAPL", "succeeded", None),
        ("FLAT", "succeeded", None),
    ]
    assert result.status == "succeeded"
    rows = query(url, "SELECT close FROM forecasts WHERE ticker = 'FLAT' ORDER BY horizon")
    assert [r.close for r in rows] == [FLAT_PRICE] * 4
    versions = query(url, "SELECT COUNT(*) FROM model_versions WHERE ticker = 'FLAT'")
    assert versions[0][0] == 1


@pytest.mark.parametrize("backend", DB_BACKENDS)
def test_no_float_or_json_column_holds_nan_or_infinity(night, backend: str) -> None:
    url, _ = night(backend)
    floats, jsons = columns_of(url, Float), columns_of(url, JSON)
    assert ("baseline_forecasts", "close_lo") in floats and ("candles", "close") in floats
    assert ("model_versions", "metrics") in jsons and ("forecasts", "model_mix") in jsons
    found = {}
    for table, column in floats:
        as_text = f"LOWER(CAST({column} AS TEXT))"
        sql = f"SELECT COUNT(*) FROM {table} WHERE {as_text} IN ('nan', 'inf', '-inf', "
        found[table, column] = query(url, sql + "'infinity', '-infinity')")[0][0]
    for table, column in jsons:
        as_text = f"CAST({column} AS TEXT)"
        sql = f"SELECT COUNT(*) FROM {table} WHERE {as_text} LIKE '%NaN%' "
        found[table, column] = query(url, sql + f"OR {as_text} LIKE '%Infinity%'")[0][0]
    assert {key: n for key, n in found.items() if n} == {}


@pytest.mark.parametrize("backend", DB_BACKENDS)
def test_non_finite_metrics_are_stored_as_null(night, backend: str) -> None:
    """A model's metrics may hold NaN or infinity (a ratio to a score of 0): stored as null,
    in the night's real database, and rolled back."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from db.models import ModelVersion

    url, _ = night(backend)
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            version = session.scalars(
                select(ModelVersion).where(ModelVersion.ticker == "FLAT")
            ).one()
            version.metrics = {**version.metrics, "probe": [math.nan, math.inf, -math.inf, 1.5]}
            version.val_loss = math.nan
            session.flush()
            raw = session.execute(
                text("SELECT metrics, val_loss FROM model_versions WHERE id = :id"),
                {"id": version.id},
            ).one()
            session.rollback()
    finally:
        engine.dispose()
    metrics = raw[0] if isinstance(raw[0], dict) else json.loads(raw[0])
    assert metrics["probe"] == [None, None, None, 1.5] and raw[1] is None


@pytest.mark.parametrize("backend", DB_BACKENDS)
def test_baselines_without_an_interval_store_null_bounds(night, backend: str) -> None:
    url, _ = night(backend)
    rows = query(
        url,
        "SELECT model, close_lo, close_hi, close_q05, close_q95 FROM baseline_forecasts "
        "WHERE model IN ('naive', 'range20')",
    )
    assert len(rows) == len(TICKERS) * len(NO_INTERVAL) * 4
    assert {tuple(r[1:]) for r in rows} == {(None, None, None, None)}
    nulls = query(
        url,
        "SELECT COUNT(*) FROM baseline_forecasts WHERE model IN ('naive', 'range20') "
        "AND close_lo IS NULL AND close_hi IS NULL",
    )
    assert nulls[0][0] == len(rows)


@pytest.mark.parametrize("backend", DB_BACKENDS)
def test_stored_forecasts_have_six_significant_digits(night, backend: str) -> None:
    url, _ = night(backend)
    digits = {}
    for table in FORECAST_TABLES:
        for t, column in columns_of(url, Float):
            if t == table:
                values = [r[0] for r in query(url, f"SELECT {column} FROM {table}")]
                digits[table, column] = max(
                    (significant_digits(v) for v in values if v is not None), default=0
                )
    assert digits[("forecasts", "close_q95")] > 0
    assert {key: n for key, n in digits.items() if n > 6} == {}


def float32_noise(values: np.ndarray) -> np.ndarray:
    """Float32-exact values that are not the shortest decimal of their float32 value."""
    values = values.ravel()
    single = values.astype(np.float32)
    return (single.astype("float64") == values) & (
        np.array([float(str(v)) for v in single]) != values
    )


@pytest.mark.parametrize("backend", DB_BACKENDS)
def test_synced_candles_carry_no_float32_noise(night, backend: str) -> None:
    url, _ = night(backend)
    rows = query(url, "SELECT open, high, low, close, volume FROM candles")
    prices = np.array([r[:4] for r in rows], dtype="float64")
    assert len(rows) == 600 and not float32_noise(prices).any()
    assert {type(r.volume) for r in rows} == {int}


def stored_numbers(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every float column of forecasts and baseline_forecasts, rows in a fixed order."""
    out = {}
    for table, order in FORECAST_TABLES.items():
        columns = [c for t, c in columns_of(url, Float) if t == table]
        select = ", ".join(columns)
        out[table] = [
            tuple(zip(columns, r, strict=True))
            for r in query(url, f"SELECT {select} FROM {table} ORDER BY {order}")
        ]
    return out


@pytest.mark.skipif(POSTGRES_URL is None, reason="needs CANDLECAST_TEST_POSTGRES_URL")
def test_the_same_night_stores_the_same_numbers_on_sqlite_and_postgresql(night) -> None:
    on_sqlite = stored_numbers(night("sqlite")[0])
    on_postgres = stored_numbers(night("postgresql")[0])
    assert {t: len(rows) for t, rows in on_postgres.items()} == {
        "forecasts": 8,
        "baseline_forecasts": 64,
    }
    for table, rows in on_sqlite.items():
        assert len(rows) == len(on_postgres[table]), table
        for mine, theirs in zip(rows, on_postgres[table], strict=True):
            for (column, a), (_, b) in zip(mine, theirs, strict=True):
                # NULL is NULL on both (never NaN on one); training may differ in the last bits
                assert (a is None) == (b is None), (table, column, a, b)
                if a is not None:
                    assert math.isclose(a, b, rel_tol=1e-4), (table, column, a, b)


def test_synced_bundled_close_is_exactly_the_quoted_price_in_sql(
    make_config, session_factory
) -> None:
    config = make_config(data={"provider": "bundled"}, tickers={"symbols": ["AAPL"]})
    (result,) = sync_tickers(config, session_factory, provider_for(config), ["AAPL"])
    assert result.ok
    with session_factory() as session:
        row = session.execute(
            text(
                "SELECT close, volume FROM candles "
                "WHERE ticker = 'AAPL' AND session_date = '2023-12-29'"
            )
        ).one()
    assert row.close == 192.53 and repr(row.close) == "192.53"
    assert row.volume == 42628800 and type(row.volume) is int


def test_backtest_csvs_have_the_precision_of_stored_numbers(tmp_path: Path, migrated_url) -> None:
    """Forecast prices to six significant digits, actual prices without float32 noise."""
    folder = tmp_path / "csv"
    write_universe(folder, ("AAPL",))
    config = write_config(
        tmp_path / "c.toml",
        migrated_url,
        {"data": {"provider": "csv", "csv_dir": str(folder)}, "tickers": {"symbols": ["AAPL"]}},
    )
    output = tmp_path / "bt.csv"
    args = ["--config", str(config), "backtest", "--tickers", "AAPL", "--start", "2023-12-18"]
    args += ["--end", "2023-12-22", "--models", "har_range,naive,rw20", "--output", str(output)]
    assert main(args) == EXIT_OK
    for path in (output, output.with_suffix(".models.csv")):
        rows = pd.read_csv(path)
        assert len(rows) >= 20, path
        forecast = [*PRICE_KEYS, *QUANTILE_COLUMNS]
        digits = rows[forecast].stack().map(significant_digits)
        assert digits.max() <= 6, path
        assert digits.max() == 6  # har_range's prices had more, not fewer
        actual = rows[["actual_open", "actual_high", "actual_low", "actual_close", "naive_close"]]
        assert not float32_noise(actual.to_numpy(dtype="float64")).any(), path
        assert rows.loc[rows["actual_close"].idxmax(), "actual_close"] == 196.94
