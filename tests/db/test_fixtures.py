"""The shared fixtures of tests/conftest.py behave as other test modules expect."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from db import migrate
from jobs.config import Config, ConfigError


def test_make_config_points_at_the_test_database(
    make_config, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANDLECAST_DATABASE_URL", "sqlite:////nowhere/else.db")
    config = make_config()
    assert isinstance(config, Config)
    assert config.database.url == db_url
    assert config.model.epochs == 1  # small test model by default
    other = make_config(
        url="sqlite:///other.db", model={"epochs": 3}, tickers={"symbols": ["AAPL"]}
    )
    assert other.database.url == f"sqlite:///{tmp_path / 'other.db'}"
    assert (other.model.epochs, other.model.units) == (3, 4)
    assert other.tickers.symbols == ("AAPL",)
    with pytest.raises(ConfigError):
        make_config(data={"provider": "carrier-pigeon"})


def test_migrated_url_and_session_factory(
    migrated_url: str, session_factory: sessionmaker[Session], db_backend: str
) -> None:
    assert migrate.current(migrated_url) == migrate.head()
    assert db_backend in ("sqlite", "postgresql")
    assert make_url(migrated_url).get_backend_name() == db_backend
    with session_factory() as session:
        assert session.execute(text("SELECT COUNT(*) FROM candles")).scalar_one() == 0


def test_postgresql_tests_get_their_own_schema(db_url: str, db_backend: str) -> None:
    if db_backend == "postgresql":
        assert "search_path" in make_url(db_url).query["options"]
    else:
        assert make_url(db_url).database.endswith("candlecast.db")
