"""Shared fixtures: databases (SQLite always, PostgreSQL when configured) and test configs.

`db_url` is parametrised over "sqlite" and, only when CANDLECAST_TEST_POSTGRES_URL is set,
"postgresql" (each PostgreSQL test gets a fresh schema, dropped afterwards). Tests that use it,
directly or through `migrated_url`, `session_factory` or `make_config`, run once per database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from jobs.config import DATABASE_URL_ENV, Config, config_from_dict

POSTGRES_URL_ENV = "CANDLECAST_TEST_POSTGRES_URL"
POSTGRES_URL = os.environ.get(POSTGRES_URL_ENV) or None
DB_BACKENDS = ["sqlite", "postgresql"] if POSTGRES_URL else ["sqlite"]
# For slow tests of behaviour that does not depend on the database (executors, per-ticker dates,
# output): one run, on PostgreSQL when it is there (the production database), else SQLite.
one_backend = pytest.mark.parametrize(
    "db_url", ["postgresql" if POSTGRES_URL else "sqlite"], indirect=True
)

# Small and fast model settings for tests; pass model={...} to make_config to override.
TEST_MODEL: dict[str, Any] = {"epochs": 1, "units": 4, "patience": 1}


@pytest.fixture(scope="session")
def postgres_admin_url() -> str | None:
    """The PostgreSQL server URL from CANDLECAST_TEST_POSTGRES_URL (None when unset)."""
    return POSTGRES_URL


@contextmanager
def empty_database(backend: str, sqlite_file: Path, schema_prefix: str = "t") -> Iterator[str]:
    """An empty database URL: the SQLite file `sqlite_file`, or a fresh PostgreSQL schema named
    `schema_prefix`_<random> (dropped afterwards)."""
    if backend == "sqlite":
        yield f"sqlite:///{sqlite_file}"
        return
    assert POSTGRES_URL is not None
    schema = f"{schema_prefix}_{uuid.uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            # Fail instead of hanging if a test leaked a connection that still holds locks.
            conn.exec_driver_sql("SET lock_timeout = '10s'")
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()


@pytest.fixture(params=DB_BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file in tmp_path, or a fresh PostgreSQL schema."""
    with empty_database(request.param, tmp_path / "candlecast.db") as url:
        yield url


@pytest.fixture
def db_backend(db_url: str) -> str:
    """'sqlite' or 'postgresql': the backend of this test's db_url."""
    return make_url(db_url).get_backend_name()


@pytest.fixture
def migrated_url(db_url: str) -> str:
    """db_url migrated to the latest Alembic revision."""
    upgrade(db_url)
    return db_url


@pytest.fixture
def session_factory(migrated_url: str) -> Iterator[sessionmaker[Session]]:
    """A session factory on the migrated database; its engine is disposed afterwards."""
    engine = make_engine(migrated_url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@pytest.fixture
def make_config(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Config]:
    """Factory of validated Configs for this test's database.

    `make_config(url=None, **sections)`: database.url is `url` (default: this test's db_url, which
    is also `migrated_url` when a test requests both); each keyword is a config section whose keys
    override the defaults, e.g. `make_config(model={"epochs": 2}, tickers={"symbols": ["AAPL"]})`.
    Relative paths resolve against tmp_path. The model section defaults to TEST_MODEL.
    CANDLECAST_DATABASE_URL is removed from the environment so it cannot redirect tests.
    """

    def factory(url: str | None = None, **sections: dict[str, Any]) -> Config:
        monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
        raw: dict[str, dict[str, Any]] = {
            "database": {"url": url or db_url},
            "model": dict(TEST_MODEL),
        }
        for name, values in sections.items():
            raw[name] = {**raw.get(name, {}), **values}
        return config_from_dict(raw, base_dir=tmp_path)

    return factory


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what a test needs: `browser` when it drives chromium, `postgres` when it runs on
    PostgreSQL (its backend parameter). `slow` is set by the tests themselves."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "postgresql" in callspec.params.values():
            item.add_marker(pytest.mark.postgres)
