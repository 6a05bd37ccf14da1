"""Riding out a transient database outage: retry a unit of work on a lost connection.

`retrying(what, work)` calls `work()` (one `with factory.begin()` transaction, or one read) and,
when it fails because the connection to the database was lost or could not be made, retries it
after RETRY_DELAYS_S (1, 2, 4, 8, 16 s: at most 31 s of waiting, six attempts), logging a warning
per retry. Then it raises DatabaseUnavailableError with a one-line message. Nothing else is ever
retried: constraint violations, SQL errors, and SQLite's "database is locked" (busy_timeout
already waits for that) propagate at once. Only the database work is repeated, never training.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db.run_lock import RunLockHandle

log = logging.getLogger("candlecast.db_retry")

T = TypeVar("T")

# Waits between attempts; their sum (31 s) bounds how long one unit of work waits for the database.
RETRY_DELAYS_S: tuple[float, ...] = (1, 2, 4, 8, 16)

# PostgreSQL SQLSTATEs of a lost or refused connection: class 08 (connection exception), and the
# server shutting down or starting up (57P01 admin_shutdown, 57P02 crash_shutdown, 57P03
# cannot_connect_now). Client-side failures (refused, closed, reset) carry no SQLSTATE at all.
_DISCONNECT_STATES = ("57P01", "57P02", "57P03")


class DatabaseUnavailableError(RuntimeError):
    """The database stayed unreachable for the whole retry budget (the message is one line)."""


def is_connection_error(exc: BaseException) -> bool:
    """Whether `exc` means the database connection was lost or could not be opened.

    True for errors SQLAlchemy flagged as disconnects, and for psycopg OperationalError /
    InterfaceError without a SQLSTATE or with a connection SQLSTATE. False for everything
    else, notably SQLite errors (a locked database is not an outage) and lock or statement
    timeouts, deadlocks and constraint violations.
    """
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    orig = exc.orig
    if not isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    state = getattr(orig, "sqlstate", None)
    return state is None or state.startswith("08") or state in _DISCONNECT_STATES


def retrying(what: str, work: Callable[[], T]) -> T:
    """`work()`, retried after each of RETRY_DELAYS_S (31 s in all) while the database is away.

    `work` must be a whole unit of work (it is called again from the start). `what` names it in
    the log, e.g. "AAPL: storing the forecasts".
    """
    delays = tuple(RETRY_DELAYS_S)  # read at call time: tests shorten it
    for attempt in range(len(delays) + 1):
        try:
            return work()
        except (OperationalError, InterfaceError) as exc:
            if not is_connection_error(exc):
                raise
            reason = _first_line(exc)
            if attempt == len(delays):
                waited = sum(delays)
                raise DatabaseUnavailableError(
                    f"database unavailable ({what}; gave up after {attempt + 1} attempts over "
                    f"{waited:g} s): {reason}"
                ) from exc
            log.warning(
                "%s: database connection failed (%s); retry %d of %d in %g s",
                what,
                reason,
                attempt + 1,
                len(delays),
                delays[attempt],
            )
            time.sleep(delays[attempt])
    raise AssertionError("unreachable")  # pragma: no cover


def in_transaction(factory: sessionmaker[Session], what: str, work: Callable[[Session], T]) -> T:
    """`work(session)` in one transaction (`factory.begin()`), retried as a whole by `retrying`."""

    def attempt() -> T:
        with factory.begin() as session:
            return work(session)

    return retrying(what, attempt)


class OutageTolerantLock(RunLockHandle):
    """The run lock, whose release survives the loss of its PostgreSQL connection.

    An outage closes the advisory lock's connection, which frees the lock on the server; releasing
    it afterwards must not fail the (already finished) run.
    """

    def release(self) -> None:
        try:
            super().release()
        except (OperationalError, InterfaceError) as exc:
            if not is_connection_error(exc):
                raise
            log.warning(
                "run lock: its database connection was lost during the run (the server released "
                "the lock with it): %s",
                _first_line(exc),
            )
            connection, self._connection = self._connection, None
            if connection is not None:
                connection.invalidate()
                connection.close()


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip() or orig.__class__.__name__
    return text.splitlines()[0].strip()
