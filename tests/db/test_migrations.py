"""Alembic migrations: up/down/up on every backend; models and migrated schema agree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, inspect, text

from db import migrate
from db.models import Base
from db.session import make_engine

REPO_ROOT = Path(__file__).resolve().parents[2]
TABLES = {
    "candles",
    "model_versions",
    "forecast_runs",
    "forecast_run_tickers",
    "forecasts",
    "run_locks",
    "apscheduler_jobs",
}


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
    assert migrate.current(db_url) == migrate.head() == "0002"
    tables, views = _schema(db_url)
    assert tables == TABLES | {"alembic_version"}
    assert views == {"forecast_accuracy"}

    migrate.downgrade(db_url)
    assert migrate.current(db_url) is None
    assert _schema(db_url) == ({"alembic_version"}, set())

    migrate.upgrade(db_url)
    assert migrate.current(db_url) == "0002"
    assert _schema(db_url) == (TABLES | {"alembic_version"}, {"forecast_accuracy"})


def test_upgrade_is_idempotent(migrated_url: str) -> None:
    migrate.upgrade(migrated_url)
    assert migrate.current(migrated_url) == "0002"


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
    assert migrate.current(url) == "0002"


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
    assert migrate.current(db_url) == "0002"
    result = _alembic_cli("downgrade", "base", env_url=db_url)
    assert result.returncode == 0, result.stderr
    assert migrate.current(db_url) is None


def test_alembic_cli_x_url_wins(db_url: str, tmp_path: Path) -> None:
    decoy = f"sqlite:///{tmp_path / 'decoy' / 'decoy.db'}"
    result = _alembic_cli("-x", f"url={db_url}", "upgrade", "head", env_url=decoy)
    assert result.returncode == 0, result.stderr
    assert migrate.current(db_url) == "0002"
    assert migrate.current(decoy) is None


def test_view_is_not_a_table_of_the_models(migrated_url: str) -> None:
    assert "forecast_accuracy" not in Base.metadata.tables
    engine = make_engine(migrated_url)
    try:
        with engine.connect() as conn:
            count = conn.execute(text("SELECT COUNT(*) FROM forecast_accuracy")).scalar_one()
    finally:
        engine.dispose()
    assert count == 0


def test_downgrade_one_step_keeps_the_initial_schema(migrated_url: str) -> None:
    migrate.downgrade(migrated_url, "0001")
    assert migrate.current(migrated_url) == "0001"
    tables, views = _schema(migrated_url)
    assert tables == TABLES - {"run_locks", "apscheduler_jobs"} | {"alembic_version"}
    assert views == {"forecast_accuracy"}
