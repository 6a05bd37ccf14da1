"""The SQL of the scheduler daemon's job store (jobs.jobstore keeps APScheduler's side).

The table is APScheduler's SQLAlchemyJobStore layout (db.models.apscheduler_jobs): id,
next_run_time (a UTC timestamp) and job_state (JSON written by jobs.jobstore, never a pickle).
Each function takes a connection inside the caller's transaction and the store's Table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table, and_, select
from sqlalchemy.exc import IntegrityError


def insert_job(
    conn: Connection, table: Table, *, job_id: str, next_run_time: float | None, state: bytes
) -> bool:
    """Store a new job; False when a job with that id exists already."""
    try:
        conn.execute(table.insert().values(id=job_id, next_run_time=next_run_time, job_state=state))
    except IntegrityError:
        return False
    return True


def update_job(
    conn: Connection, table: Table, *, job_id: str, next_run_time: float | None, state: bytes
) -> bool:
    """Replace a job's next run time and state; False when there is no such job."""
    stmt = (
        table.update()
        .values(next_run_time=next_run_time, job_state=state)
        .where(table.c.id == job_id)
    )
    return conn.execute(stmt).rowcount > 0


def job_state(conn: Connection, table: Table, job_id: str) -> bytes | None:
    """The stored state of job `job_id`, or None."""
    return conn.execute(select(table.c.job_state).where(table.c.id == job_id)).scalar()


def job_rows(conn: Connection, table: Table, *conditions: Any) -> Sequence[Any]:
    """(id, job_state) of the jobs matching `conditions`, soonest next run first."""
    stmt = select(table.c.id, table.c.job_state).order_by(table.c.next_run_time)
    if conditions:
        stmt = stmt.where(and_(*conditions))
    return conn.execute(stmt).all()


def delete_job(conn: Connection, table: Table, job_id: str) -> None:
    """Remove job `job_id` (nothing when there is none)."""
    conn.execute(table.delete().where(table.c.id == job_id))


__all__ = ["delete_job", "insert_job", "job_rows", "job_state", "update_job"]
