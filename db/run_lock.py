"""One nightly run at a time per database.

PostgreSQL: a session-level advisory lock held on a dedicated connection; it disappears with the
connection, so a killed process never leaves it behind. SQLite: a lease row in `run_locks`,
taken with a compare-and-swap on its token and kept fresh by a heartbeat thread; a lease whose
process is gone (same host) or whose heartbeat is older than `lease_seconds` can be taken over.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
import zlib
from datetime import timedelta

from sqlalchemy import Connection, Engine, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from db.models import RunLock, utcnow

LOCK_NAME = "nightly"


class RunLockedError(RuntimeError):
    """Another process holds the run lock; the message says who."""


class RunLockHandle:
    """Exclusive right to run; use as a context manager or call release()."""

    def __init__(
        self, engine: Engine, *, lease_seconds: float = 120, heartbeat_seconds: float = 10
    ) -> None:
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.token = str(uuid.uuid4())
        self._connection: Connection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunLockHandle:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        if self.engine.dialect.name == "postgresql":
            self._acquire_advisory()
        else:
            self._acquire_lease()
            self._thread = threading.Thread(target=self._heartbeat, daemon=True)
            self._thread.start()

    def release(self) -> None:
        if self._connection is not None:
            self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
            self._connection.commit()
            self._connection.close()
            self._connection = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            with self.engine.begin() as conn:
                conn.execute(
                    delete(RunLock).where(RunLock.name == LOCK_NAME, RunLock.token == self.token)
                )

    # PostgreSQL ---------------------------------------------------------------------------
    def _acquire_advisory(self) -> None:
        connection = self.engine.connect()
        schema = connection.execute(text("SELECT current_schema()")).scalar_one()
        self._key = zlib.crc32(f"candlecast:{schema}:{LOCK_NAME}".encode())
        got = connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
        ).scalar_one()
        connection.commit()
        if not got:
            holder = connection.execute(
                text(
                    "SELECT a.pid, a.client_addr FROM pg_locks l JOIN pg_stat_activity a "
                    "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.objid = :objid "
                    "AND l.granted LIMIT 1"
                ),
                {"objid": self._key & 0xFFFFFFFF},
            ).first()
            connection.close()
            who = f" (PostgreSQL backend pid {holder.pid})" if holder else ""
            raise RunLockedError(f"another candlecast run is in progress{who}")
        self._connection = connection

    # SQLite lease -----------------------------------------------------------------------------
    def _acquire_lease(self) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            current = conn.execute(select(RunLock).where(RunLock.name == LOCK_NAME)).first()
            if current is None:
                try:
                    conn.execute(
                        insert(RunLock).values(
                            name=LOCK_NAME,
                            token=self.token,
                            host=self.host,
                            pid=self.pid,
                            acquired_at=now,
                            heartbeat_at=now,
                        )
                    )
                    return
                except IntegrityError:
                    raise RunLockedError("another candlecast run is starting") from None
            if self._holder_alive(current.host, current.pid, current.heartbeat_at):
                raise RunLockedError(
                    f"another candlecast run is in progress (host {current.host}, pid "
                    f"{current.pid}, last heartbeat {current.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC)"
                )
            taken = conn.execute(
                update(RunLock)
                .where(RunLock.name == LOCK_NAME, RunLock.token == current.token)
                .values(
                    token=self.token,
                    host=self.host,
                    pid=self.pid,
                    acquired_at=now,
                    heartbeat_at=now,
                    run_id=None,
                )
            ).rowcount
            if taken != 1:
                raise RunLockedError("another candlecast run took the lock first")

    def _holder_alive(self, host: str, pid: int, heartbeat_at) -> bool:
        if utcnow() - heartbeat_at > timedelta(seconds=self.lease_seconds):
            return False
        if host == self.host:
            return _pid_alive(pid)
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            with self.engine.begin() as conn:
                conn.execute(
                    update(RunLock)
                    .where(RunLock.name == LOCK_NAME, RunLock.token == self.token)
                    .values(heartbeat_at=utcnow())
                )


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (zombies count as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True
