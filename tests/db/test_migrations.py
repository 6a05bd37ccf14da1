"""Alembic migrations: up/down/up on every backend; models and migrated schema agree."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, inspect, text

from db import migrate
from db.models import QUANTILE_COLUMNS, Base
from db.repository import upsert_candles
from db.session import make_engine, make_session_factory
from db.views import baseline_accuracy, forecast_accuracy
from forecasting.providers import BundledProvider
from forecasting.quantiles import QUANTILE_NAMES

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED = REPO_ROOT / "forecasting" / "bundled"
TABLES = {
    "candles",
    "model_versions",
    "forecast_runs",
    "forecast_run_tickers",
    "forecasts",
    "run_locks",
    "apscheduler_jobs",
    "baseline_forecasts",
    "data_changes",
    "global_models",
}
VIEWS = {"forecast_accuracy", "baseline_accuracy"}
HEAD = "0007"


def _schema(url: str) -> tuple[set[str], set[str]]:
    engine = make_engine(url)
    try:
        inspector = inspect(engine)
        return set(inspector.get_table_names()), set(inspector.get_view_names())
    finally:
        engine.dispose()


def _diffs(url: str, metadata: MetaData) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    assert migrate.current(db_url) is None
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == migrate.head() == HEAD
    tables, views = _schema(db_url)
    assert tables == TABLES | {"alembic_version"}
    assert views == VIEWS

    migrate.downgrade(db_url)
    assert migrate.current(db_url) is None
    assert _schema(db_url) == ({"alembic_version"}, set())

    migrate.upgrade(db_url)
    assert migrate.current(db_url) == HEAD
    assert _schema(db_url) == (TABLES | {"alembic_version"}, VIEWS)


def test_upgrade_is_idempotent(migrated_url: str) -> None:
    migrate.upgrade(migrated_url)
    assert migrate.current(migrated_url) == HEAD


def test_models_match_migrated_schema(migrated_url: str) -> None:
    assert _diffs(migrated_url, Base.metadata) == []


def test_compare_metadata_detects_a_difference(migrated_url: str) -> None:
    """Guards the test above: a model the migration lacks must show up as a diff."""
    metadata = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(metadata)
    metadata.tables["candles"].append_column(Column("extra", Integer))
    diffs = _diffs(migrated_url, metadata)
    assert [(d[0], d[3].name) for d in diffs] == [("add_column", "extra")]  # type: ignore[index]


def test_current_does_not_create_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'absent.db'}"
    assert migrate.current(url) is None
    assert not (tmp_path / "nested").exists()


def test_upgrade_creates_sqlite_parent_directory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'var' / 'sub' / 'candlecast.db'}"
    migrate.upgrade(url)
    assert migrate.current(url) == HEAD


def _alembic_cli(*args: str, env_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CANDLECAST_CONFIG"}
    env["CANDLECAST_DATABASE_URL"] = env_url
    alembic = Path(sys.executable).with_name("alembic")
    return subprocess.run(
        [str(alembic), *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
    )


@pytest.mark.slow  # the alembic CLI in a subprocess: ~2 s
def test_alembic_cli_uses_project_config(db_url: str) -> None:
    """`alembic upgrade head` from the repo root finds the URL through jobs.config.load_config."""
    result = _alembic_cli("upgrade", "head", env_url=db_url)
    assert result.returncode == 0, result.stderr
    assert migrate.current(db_url) == HEAD
    result = _alembic_cli("downgrade", "base", env_url=db_url)
    assert result.returncode == 0, result.stderr
    assert migrate.current(db_url) is None


def test_alembic_cli_x_url_wins(db_url: str, tmp_path: Path) -> None:
    decoy = f"sqlite:///{tmp_path / 'decoy' / 'decoy.db'}"
    result = _alembic_cli("-x", f"url={db_url}", "upgrade", "head", env_url=decoy)
    assert result.returncode == 0, result.stderr
    assert migrate.current(db_url) == HEAD
    assert migrate.current(decoy) is None


def test_views_are_not_tables_of_the_models(migrated_url: str) -> None:
    assert not VIEWS & set(Base.metadata.tables)
    engine = make_engine(migrated_url)
    try:
        with engine.connect() as conn:
            counts = [conn.execute(text(f"SELECT COUNT(*) FROM {v}")).scalar_one() for v in VIEWS]
    finally:
        engine.dispose()
    assert counts == [0, 0]


def test_view_tables_match_the_migrated_views(migrated_url: str) -> None:
    """db.views describes exactly the columns (and order) the migration's views have."""
    engine = make_engine(migrated_url)
    try:
        with engine.connect() as conn:
            for view in (forecast_accuracy, baseline_accuracy):
                result = conn.execute(text(f"SELECT * FROM {view.name} WHERE 1 = 0"))
                assert list(result.keys()) == [c.name for c in view.columns]
    finally:
        engine.dispose()


def test_quantile_columns_follow_the_shared_levels() -> None:
    assert QUANTILE_COLUMNS == tuple(f"close_{name}" for name in QUANTILE_NAMES)
    for table in ("forecasts", "baseline_forecasts"):
        assert set(QUANTILE_COLUMNS) <= set(Base.metadata.tables[table].c.keys())


def _forecasts_table(url: str) -> dict[str, object]:
    """What a downgrade must restore of the forecasts table: columns, keys, checks, indexes."""
    engine = make_engine(url)
    try:
        inspector = inspect(engine)

        def by_name(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return sorted(items, key=lambda item: str(item["name"]))

        columns = [
            (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns("forecasts")
        ]
        return {
            "columns": columns,
            "pk": inspector.get_pk_constraint("forecasts"),
            "fks": by_name(inspector.get_foreign_keys("forecasts")),
            "unique": by_name(inspector.get_unique_constraints("forecasts")),
            "checks": by_name(inspector.get_check_constraints("forecasts")),
            "indexes": by_name(inspector.get_indexes("forecasts")),
        }
    finally:
        engine.dispose()


def test_downgrade_to_0002_restores_the_forecasts_table(db_url: str) -> None:
    """On SQLite the downgrade rebuilds forecasts (batch mode): nothing else may be lost."""
    migrate.upgrade(db_url, "0002")
    before = _forecasts_table(db_url)
    assert "close_q50" not in [c[0] for c in before["columns"]]  # type: ignore[union-attr]
    migrate.upgrade(db_url)
    assert _forecasts_table(db_url) != before
    migrate.downgrade(db_url, "0002")
    assert migrate.current(db_url) == "0002"
    assert _forecasts_table(db_url) == before
    assert _schema(db_url) == (
        TABLES - {"baseline_forecasts", "data_changes", "global_models"} | {"alembic_version"},
        {"forecast_accuracy"},
    )


def test_downgrade_one_step_keeps_the_initial_schema(migrated_url: str) -> None:
    migrate.downgrade(migrated_url, "0001")
    assert migrate.current(migrated_url) == "0001"
    tables, views = _schema(migrated_url)
    assert tables == TABLES - {
        "global_models",
        "run_locks",
        "apscheduler_jobs",
        "baseline_forecasts",
        "data_changes",
    } | {"alembic_version"}
    assert views == {"forecast_accuracy"}


# Rows as revision 0003 stored them: float32 noise in prices, volume as a float, a baseline
# bound NaN (PostgreSQL; SQLite turns NaN into NULL itself), JSON holding NaN (SQLite only:
# PostgreSQL's json type refuses it).
OLD_CANDLES = [
    (
        "AAPL",
        "2023-12-29",
        193.89999389648438,
        194.39999389648438,
        191.72999572753906,
        192.52999877929688,
        42628800.0,
    ),
    ("X", "2023-12-29", 12.3456789, 13.0, 12.0, 12.5, 1234.6),
]
INSERTS = {
    "candles": "INSERT INTO candles VALUES (:t, :d, :o, :h, :l, :c, :v, 'csv', CURRENT_TIMESTAMP)",
    "forecast_runs": "INSERT INTO forecast_runs (started_at, trigger, status, host, pid) "
    "VALUES (CURRENT_TIMESTAMP, 'manual', 'succeeded', 'h', 1)",
    "model_versions": "INSERT INTO model_versions (ticker, created_at, train_start, train_end, "
    "hyperparameters, normalization, metrics, val_loss, artifact_sha256, keras_version, "
    "tensorflow_version) VALUES ('AAPL', CURRENT_TIMESTAMP, '2023-01-03', '2023-12-29', "
    "'{}', '{}', :metrics, :val_loss, 'x', '3', '2')",
    "forecasts": "INSERT INTO forecasts (run_id, ticker, as_of_date, horizon, target_date, open, "
    "high, low, close, close_lo, close_hi, close_q50, created_at) VALUES (1, 'AAPL', "
    "'2023-12-29', 1, '2024-01-02', :p, :p, :p, :p, :p, :p, :p, CURRENT_TIMESTAMP)",
    "baseline_forecasts": "INSERT INTO baseline_forecasts (run_id, ticker, as_of_date, horizon, "
    "target_date, model, close, close_lo, close_hi, created_at) VALUES (1, 'AAPL', '2023-12-29', "
    "1, '2024-01-02', 'naive', :p, :nan, :nan, CURRENT_TIMESTAMP)",
}


def _rows(url: str, sql: str) -> list[Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)))
    finally:
        engine.dispose()


def _triggers(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                sql = (
                    "SELECT tgname || ' ON ' || tgrelid::regclass::text FROM pg_trigger "
                    "WHERE NOT tgisinternal AND tgrelid::regclass::text NOT LIKE '%.%'"
                )
            else:
                sql = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
            return set(conn.execute(text(sql)).scalars())
    finally:
        engine.dispose()


def test_0004_cleans_numbers_and_keeps_every_row(db_url: str, db_backend: str) -> None:
    migrate.upgrade(db_url, "0003")
    noisy = 193.52124607119129
    metrics = '{"val_loss": 1.5, "scores": [NaN, 1.0, Infinity]}'
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            for t, d, o, h, lo, c, v in OLD_CANDLES:
                conn.execute(text(INSERTS["candles"]), dict(t=t, d=d, o=o, h=h, l=lo, c=c, v=v))
            conn.execute(text(INSERTS["forecast_runs"]))
            conn.execute(
                text(INSERTS["model_versions"]),
                {"metrics": metrics if db_backend == "sqlite" else "{}", "val_loss": math.nan},
            )
            conn.execute(text(INSERTS["forecasts"]), {"p": noisy})
            conn.execute(text(INSERTS["baseline_forecasts"]), {"p": noisy, "nan": math.nan})
    finally:
        engine.dispose()

    migrate.upgrade(db_url)
    candles = _rows(db_url, "SELECT * FROM candles ORDER BY ticker")
    assert [(r[0], str(r[1]), *r[2:7]) for r in candles] == [
        ("AAPL", "2023-12-29", 193.9, 194.4, 191.73, 192.53, 42628800),
        ("X", "2023-12-29", 12.3456789, 13.0, 12.0, 12.5, 1235),
    ]
    assert {type(r.volume) for r in candles} == {int}
    (forecast,) = _rows(db_url, "SELECT open, close, close_lo, close_hi, close_q50 FROM forecasts")
    assert tuple(forecast) == (193.521,) * 5
    (baseline,) = _rows(db_url, "SELECT close, close_lo, close_hi FROM baseline_forecasts")
    assert tuple(baseline) == (193.521, None, None)
    (version,) = _rows(db_url, "SELECT metrics, val_loss FROM model_versions")
    stored = version.metrics if isinstance(version.metrics, dict) else json.loads(version.metrics)
    if db_backend == "sqlite":
        assert stored == {"val_loss": 1.5, "scores": [None, 1.0, None]}
        assert "NaN" not in version.metrics and "Infinity" not in version.metrics
    assert version.val_loss is None

    migrate.downgrade(db_url, "0003")
    assert migrate.current(db_url) == "0003"
    again = _rows(db_url, "SELECT * FROM candles ORDER BY ticker")
    assert [tuple(r[:7]) for r in again] == [tuple(r[:7]) for r in candles]
    assert {type(r.volume) for r in again} == {float}
    assert _schema(db_url)[1] == VIEWS
    migrate.upgrade(db_url)
    assert _diffs(db_url, Base.metadata) == []


def test_0004_cleans_stored_candles_exactly_as_a_sync_now_writes_them(db_url: str) -> None:
    """Candles stored before 0004 (bundled data with its float32 noise) equal what the providers
    give now, so the first sync after the upgrade finds every overlapping row unchanged."""
    migrate.upgrade(db_url, "0003")
    raw = pd.read_csv(BUNDLED / "AAPL.csv.gz").tail(300)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(INSERTS["candles"]),
                [
                    dict(t="AAPL", d=r.Date, o=r.Open, h=r.High, l=r.Low, c=r.Close, v=r.Volume)
                    for r in raw.itertuples()
                ],
            )
        migrate.upgrade(db_url)
        frame = BundledProvider().fetch("AAPL", start=date.fromisoformat(raw["Date"].iloc[0]))
        with make_session_factory(engine).begin() as session:
            counts = upsert_candles(session, ticker="AAPL", frame=frame, source="csv")
    finally:
        engine.dispose()
    assert (counts.added, counts.updated, counts.unchanged) == (0, 0, 300)


def test_downgrade_to_0004_drops_the_change_marker_and_its_triggers(migrated_url: str) -> None:
    assert len(_triggers(migrated_url)) in (6, 18)  # one per shown table (SQLite: per event)
    migrate.downgrade(migrated_url, "0004")
    assert migrate.current(migrated_url) == "0004"
    assert _triggers(migrated_url) == set()
    assert _schema(migrated_url)[0] == TABLES - {"data_changes", "global_models"} | {
        "alembic_version"
    }
    migrate.upgrade(migrated_url)
    assert len(_triggers(migrated_url)) in (6, 18)


def test_0006_adds_global_models_and_a_downgrade_keeps_every_model_version(
    migrated_url: str,
) -> None:
    """At head a version may point to its global fit (and only to one that exists); back at
    0005 the versions and their data-change triggers stay, and upgrading again works."""
    engine = sa.create_engine(migrated_url)
    version_row = (
        "INSERT INTO model_versions (ticker, created_at, train_start, train_end, "
        "hyperparameters, normalization, metrics, artifact_sha256, keras_version, "
        "tensorflow_version{extra}) VALUES ('AAPL', '2023-12-29 00:00:00+00:00', '2019-01-02', "
        "'2023-12-29', '{{}}', '{{}}', '{{}}', 'x', '3', '2'{value})"
    )
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO global_models (id, created_at, train_start, train_end, kind, "
                    "reason, tickers, hyperparameters, gate, metrics, artifact_sha256) VALUES "
                    "(1, '2023-12-29 00:00:00+00:00', '2019-01-02', '2023-12-29', 'full', "
                    "'first fit', '[\"AAPL\"]', '{}', '{}', '{}', 'x')"
                )
            )
            conn.execute(sa.text(version_row.format(extra=", global_model_id", value=", 1")))
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                conn.execute(sa.text("PRAGMA foreign_keys = ON"))
                with pytest.raises(sa.exc.IntegrityError):
                    conn.execute(
                        sa.text(version_row.format(extra=", global_model_id", value=", 99"))
                    )
        else:
            with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
                conn.execute(sa.text(version_row.format(extra=", global_model_id", value=", 99")))
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO global_models (created_at, train_start, train_end, kind, reason, "
                    "tickers, hyperparameters, gate, metrics, artifact_sha256) VALUES "
                    "('2023-12-29 00:00:00+00:00', '2019-01-02', '2023-12-29', 'partial', 'x', "
                    "'[]', '{}', '{}', '{}', 'x')"
                )
            )
    finally:
        engine.dispose()
    migrate.downgrade(migrated_url, "0005")
    engine = sa.create_engine(migrated_url)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM model_versions")).scalar() == 1
            before = conn.execute(sa.text("SELECT version FROM data_changes")).scalar()
            conn.execute(sa.text("UPDATE model_versions SET artifact_path = 'x'"))
            assert conn.execute(sa.text("SELECT version FROM data_changes")).scalar() != before
        assert "global_models" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    migrate.upgrade(migrated_url)
    assert migrate.current(migrated_url) == HEAD


# Normalizations as revision 0006 stored them: the calibration under the key "calibration" (a
# per-ticker and a global network's), a JSON null there, none at all.
NORMALIZATIONS_0006: dict[str, dict[str, Any]] = {
    "per_ticker": {
        "columns": ["r1", "r5"],
        "mean": [0.1234567890123456, -0.25],
        "std": [1.5, 1e-05],
        "calibration": {
            "version": 2,
            "alpha_close": [0.5, 0.25, 0.0, -1.0],
            "range_from": ["lstm", "har_range", "har_range", "lstm"],
            "har_range": {"beta": [[0.1, 0.2], [0.3, 0.4]], "z": 1.2815515655446004},
        },
    },
    "global": {
        "columns": ["r1"],
        "mean": [0.0],
        "std": [1.0],
        "calibration": {"version": 3, "kind": "global", "universe": ["AAPL", "MSFT"]},
    },
    "null": {"mean": [0.5], "calibration": None},
    "none": {"mean": [0.5], "std": [2.0]},
    "empty": {},
}
MODEL_VERSIONS = sa.table(
    "model_versions",
    sa.column("id", sa.Integer()),
    sa.column("normalization", sa.JSON()),
    sa.column("calibration", sa.JSON()),
)


def _normalizations_at_0006(url: str) -> dict[int, dict[str, Any]]:
    """Each version's normalization: id -> JSON value."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.select(MODEL_VERSIONS.c.id, MODEL_VERSIONS.c.normalization)
            return {row.id: row.normalization for row in conn.execute(query)}
    finally:
        engine.dispose()


def _columns_at_head(url: str) -> dict[int, tuple[dict[str, Any], Any, bool]]:
    """Each version's (normalization, calibration, calibration IS NULL): id -> the three."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            c = MODEL_VERSIONS.c
            query = sa.select(c.id, c.normalization, c.calibration, c.calibration.is_(None))
            return {row[0]: (row[1], row[2], bool(row[3])) for row in conn.execute(query)}
    finally:
        engine.dispose()


def test_0007_moves_each_calibration_into_its_own_column_and_back(db_url: str) -> None:
    """Upgrade moves normalization["calibration"] into model_versions.calibration (NULL when
    there is none, JSON null kept), downgrade puts it back exactly, upgrading again moves it again;
    model_versions keeps its data-change triggers throughout."""
    migrate.upgrade(db_url, "0006")
    insert = sa.text(
        "INSERT INTO model_versions (ticker, created_at, train_start, train_end, hyperparameters, "
        "normalization, metrics, artifact_sha256, keras_version, tensorflow_version) VALUES "
        "('AAPL', '2023-12-29 00:00:00+00:00', '2019-01-02', '2023-12-29', '{}', :normalization, "
        "'{}', 'x', '3', '2')"
    ).bindparams(sa.bindparam("normalization", type_=sa.JSON()))
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            for normalization in NORMALIZATIONS_0006.values():
                conn.execute(insert, {"normalization": normalization})
    finally:
        engine.dispose()
    at_0006 = _normalizations_at_0006(db_url)
    assert sorted(at_0006.values(), key=json.dumps) == sorted(
        NORMALIZATIONS_0006.values(), key=json.dumps
    )
    expected = {}
    for version_id, normalization in at_0006.items():
        rest = {key: value for key, value in normalization.items() if key != "calibration"}
        moved = "calibration" in normalization
        expected[version_id] = (rest, normalization.get("calibration"), not moved)
    triggers = _triggers(db_url)
    assert len(triggers) in (6, 18)

    for _ in range(2):  # upgrade, downgrade, then the same once more
        migrate.upgrade(db_url)
        assert migrate.current(db_url) == HEAD
        assert _columns_at_head(db_url) == expected
        assert _triggers(db_url) == triggers
        assert _diffs(db_url, Base.metadata) == []

        migrate.downgrade(db_url, "0006")
        assert migrate.current(db_url) == "0006"
        assert _normalizations_at_0006(db_url) == at_0006
        engine = make_engine(db_url)
        try:
            columns = {c["name"] for c in inspect(engine).get_columns("model_versions")}
        finally:
            engine.dispose()
        assert "calibration" not in columns and "global_model_id" in columns
        assert _triggers(db_url) == triggers
