"""Engine and session factories. There is no module-level engine: each process builds its own.

`make_engine(url)` applies the per-connection settings candlecast relies on (SQLite: foreign keys,
WAL, busy timeout; PostgreSQL: pre-ping) and can open the database read-only for the web app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.request import pathname2url

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def sqlite_file_path(url: str | URL) -> Path | None:
    """The database file of a SQLite URL, or None for in-memory databases and other backends."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or parsed.query.get("uri") in ("true", "1"):
        return None
    return Path(database)


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """Create an Engine for `url` (SQLite or PostgreSQL).

    SQLite: the parent directory of a file database is created unless `read_only`; every connection
    gets foreign_keys=ON, journal_mode=WAL and busy_timeout; `read_only` opens the file with the
    `mode=ro` URI so any write fails. PostgreSQL: `read_only` makes every transaction of every
    connection READ ONLY; connections are pre-pinged on checkout; a plain `postgresql://` URL
    uses the psycopg (3) driver.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, read_only=read_only)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":  # plain postgresql:// means psycopg 3 here
            parsed = parsed.set(drivername="postgresql+psycopg")
        return _postgresql_engine(parsed, read_only=read_only)
    raise ValueError(f"unsupported database backend {backend!r}: use sqlite or postgresql")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A sessionmaker bound to `engine`; objects stay usable after commit (no expiry)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def _sqlite_engine(url: URL, *, read_only: bool) -> Engine:
    path = sqlite_file_path(url)
    if read_only and path is not None:
        # file:<path>?mode=ro as a URI filename; pathname2url percent-encodes ?, # and %.
        url = url.set(
            database=f"file:{pathname2url(str(path.resolve()))}",
            query={**url.query, "mode": "ro", "uri": "true"},
        )
    elif read_only and url.query.get("uri") in ("true", "1"):
        url = url.update_query_dict({"mode": "ro"})
    elif path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_on_connect)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # On a read-only connection this is a no-op returning the current mode: the database was
        # switched to WAL (a persistent setting) by the first read-write connection.
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def _postgresql_engine(url: URL, *, read_only: bool) -> Engine:
    engine = create_engine(url, pool_pre_ping=True)
    if read_only:
        event.listen(engine, "connect", _postgresql_read_only)
    return engine


def _postgresql_read_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    finally:
        cursor.close()
    dbapi_connection.commit()
