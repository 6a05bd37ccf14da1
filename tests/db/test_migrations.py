"""Alembic migrations: up/down/up on every backend; models and migrated schema agree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, inspect, text

from db import migrate
from db.models import QUANTILE_COLUMNS, Base
from db.session import make_engine
from db.views import baseline_accuracy, forecast_accuracy
from forecasting.quantiles import QUANTILE_NAMES

REPO_ROOT = Path(__file__).resolve().parents[2]
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
}
VIEWS = {"forecast_accuracy", "baseline_accuracy"}
HEAD = "0004"


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
        TABLES - {"baseline_forecasts", "data_changes"} | {"alembic_version"},
        {"forecast_accuracy"},
    )


def test_downgrade_one_step_keeps_the_initial_schema(migrated_url: str) -> None:
    migrate.downgrade(migrated_url, "0001")
    assert migrate.current(migrated_url) == "0001"
    tables, views = _schema(migrated_url)
    assert tables == TABLES - {
        "run_locks",
        "apscheduler_jobs",
        "baseline_forecasts",
        "data_changes",
    } | {"alembic_version"}
    assert views == {"forecast_accuracy"}


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


def test_downgrade_to_0003_drops_the_change_marker_and_its_triggers(migrated_url: str) -> None:
    assert len(_triggers(migrated_url)) in (6, 18)  # one per shown table (SQLite: per event)
    migrate.downgrade(migrated_url, "0003")
    assert migrate.current(migrated_url) == "0003"
    assert _triggers(migrated_url) == set()
    assert _schema(migrated_url)[0] == TABLES - {"data_changes"} | {"alembic_version"}
    migrate.upgrade(migrated_url)
    assert len(_triggers(migrated_url)) in (6, 18)
