"""Engine factory: SQLite pragmas and directories, read-only engines on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from db.models import Candle
from db.session import DatabaseFileMissing, make_engine, make_session_factory, sqlite_file_path

INSERT_CANDLE = text(
    "INSERT INTO candles (ticker, session_date, open, high, low, close, volume, source, fetched_at)"
    " VALUES ('AAPL', '2024-01-02', 1, 2, 0.5, 1.5, 100, 'test', '2024-01-02 23:00:00+00:00')"
)


def test_sqlite_pragmas_and_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "candlecast.db"
    engine = make_engine(f"sqlite:///{path}")
    assert path.parent.is_dir()  # created by make_engine, before any connection
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        engine.dispose()


def test_read_only_sqlite_creates_nothing(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}", read_only=True)
    try:
        with pytest.raises(DatabaseFileMissing, match="database file missing: .*x.db"):
            engine.connect()
    finally:
        engine.dispose()
    assert not (tmp_path / "missing").exists()


def test_read_only_engine_rejects_insert(migrated_url: str) -> None:
    engine = make_engine(migrated_url, read_only=True)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(Candle)).all() == []  # reading works
        with pytest.raises(DBAPIError, match="read-only|readonly"), engine.begin() as conn:
            conn.execute(INSERT_CANDLE)
        # Every pooled connection is read-only, not only the first.
        with engine.connect() as first, engine.connect() as second:
            for conn in (first, second):
                with pytest.raises(DBAPIError, match="read-only|readonly"):
                    conn.execute(INSERT_CANDLE)
                conn.rollback()
    finally:
        engine.dispose()


def test_read_write_engine_accepts_the_same_insert(migrated_url: str) -> None:
    """Guards the test above: the INSERT itself is valid."""
    factory = make_session_factory(make_engine(migrated_url))
    try:
        with factory.begin() as session:
            session.execute(INSERT_CANDLE)
        with factory() as session:
            candle = session.scalars(select(Candle)).one()
        assert candle.close == 1.5  # readable after the session closed: no expiry on commit
        assert candle.fetched_at.utcoffset() is not None
    finally:
        factory.kw["bind"].dispose()


def test_read_only_sees_writes_of_other_connections(migrated_url: str) -> None:
    writer = make_engine(migrated_url)
    reader = make_engine(migrated_url, read_only=True)
    try:
        with writer.begin() as conn:
            conn.execute(INSERT_CANDLE)
        with reader.connect() as conn:
            assert conn.execute(select(Candle.ticker)).scalars().all() == ["AAPL"]
    finally:
        reader.dispose()
        writer.dispose()


def test_sqlite_file_path() -> None:
    assert sqlite_file_path("sqlite:////tmp/x/y.db") == Path("/tmp/x/y.db")
    assert sqlite_file_path("sqlite://") is None
    assert sqlite_file_path("sqlite:///:memory:") is None
    assert sqlite_file_path("postgresql+psycopg://u@h/db") is None


def test_unsupported_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported database backend"):
        make_engine("mysql://u@h/db")
