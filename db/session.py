"""Engine and session factories. There is no module-level engine: each process builds its own.

`make_engine(url)` applies the per-connection settings candlecast relies on (SQLite: foreign keys,
WAL, busy timeout; PostgreSQL: pre-ping) and can open the database read-only for the web app.

A read-only SQLite file engine follows the file that is at the path *now*: every connection
remembers the file it opened (device, inode, size, mtime) and is replaced at checkout when the path
names another file (deleted and copied again, `mv`-ed over) or the file changed under it; while no
file is there, checkouts raise DatabaseFileMissing (a mode=ro open never creates one).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.request import pathname2url

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
FILE_KEY = "candlecast_file"  # connection-record info key: the signature of the file it opened

FileSignature = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns


class DatabaseFileMissing(RuntimeError):
    """The SQLite file of a read-only engine is not there (deleted, or not copied in yet)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"database file missing: {path}")
        self.path = path


class DatabaseFileError(RuntimeError):
    """A SQLite database path that cannot hold a database (its directory cannot be created, ...)."""


def _prepare_file_path(path: Path) -> None:
    """Create the directory of a SQLite file; a one-line DatabaseFileError when that cannot be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:  # a file where a directory should be
            reason = f"{blocker} is not a directory"
        raise DatabaseFileError(
            f"cannot create the directory of the SQLite database {path}: {reason}"
        ) from exc
    if path.is_dir():
        raise DatabaseFileError(f"the SQLite database path {path} is a directory")


def file_signature(path: Path) -> FileSignature | None:
    """Which file `path` names now and its size and mtime, or None when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


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
        _prepare_file_path(path)
    engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_on_connect)
    if read_only and path is not None:
        _follow_file(engine, path.resolve())
    return engine


class _FileFollower:
    """What a read-only SQLite file engine knows of its file, and who to tell when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the last connection
        self._gone = False  # the file was missing since the last connection

    def refuse_missing(self, *_args: Any) -> None:
        """do_connect: never let SQLite try (and fail obscurely) to open a missing file."""
        if file_signature(self.path) is None:
            with self._lock:
                self._gone = True
            raise DatabaseFileMissing(self.path)

    def remember(self, _dbapi_connection: Any, record: Any) -> None:
        """connect: note the file this connection opened; tell the callbacks if it is new."""
        signature = file_signature(self.path)
        record.info[FILE_KEY] = signature
        if signature is None:
            return
        with self._lock:
            changed = self._gone or self._identity not in (None, signature[:2])
            self._identity, self._gone = signature[:2], False
        if changed:
            for callback in list(self.callbacks):
                callback()

    def check(self, _dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        """checkout: a connection to another (or no) file than the path's now is replaced."""
        if file_signature(self.path) != record.info.get(FILE_KEY):
            # Close every pooled connection to the old file; the pool then opens a new one (or
            # refuse_missing raises DatabaseFileMissing when there is no file).
            raise InvalidatePoolError(f"{self.path} changed or is missing")


_FOLLOWERS: weakref.WeakKeyDictionary[Engine, _FileFollower] = weakref.WeakKeyDictionary()


def _follow_file(engine: Engine, path: Path) -> None:
    """Reconnect when `path` names another file than a pooled connection opened; see the module."""
    follower = _FileFollower(path)
    event.listen(engine, "do_connect", follower.refuse_missing)
    event.listen(engine, "connect", follower.remember)
    event.listen(engine, "checkout", follower.check)
    _FOLLOWERS[engine] = follower


def on_file_change(engine: Engine, callback: Callable[[], None]) -> None:
    """Call `callback()` when a read-only SQLite file engine opens a connection to another file
    than before (or after it was missing): caches keyed by row ids are then stale. A no-op for
    other engines."""
    follower = _FOLLOWERS.get(engine)
    if follower is not None:
        follower.callbacks.append(callback)


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
