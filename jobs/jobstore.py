"""APScheduler's SQLAlchemy job store with JSON instead of pickle.

The stock SQLAlchemyJobStore pickles each job's state into the database, so anyone able to write
that table could run code in the daemon. This store keeps the same table layout but writes a small
JSON document and only understands cron-triggered jobs whose function is a "module:name" reference.

Only allowed functions load (by default the nightly job's own, `jobs.scheduler:nightly_job`): a row
naming any other function is refused before its module is imported, logged as one line, and
deleted from the table, like a row that cannot be decoded. Deleting it (instead of skipping it)
keeps a stale refused row from pinning the scheduler's next wake-up time in the past.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.triggers.cron import CronTrigger
from apscheduler.util import datetime_to_utc_timestamp

from db import scheduler_jobs

FORMAT_VERSION = 1
# The only function a stored job may name unless the store is given another list. Kept as a
# string (not imported) so that loading this module never imports the scheduler.
NIGHTLY_JOB_FUNC = "jobs.scheduler:nightly_job"
log = logging.getLogger("candlecast.jobstore")


class RefusedJobError(ValueError):
    """A stored job names a function this store does not allow."""


def job_to_json(job: Job) -> bytes:
    """Serialise a cron job's state as JSON (refuses anything that would need pickle)."""
    state = job.__getstate__()
    trigger = state["trigger"]
    if not isinstance(trigger, CronTrigger):
        raise TypeError(f"job {job.id!r}: only cron triggers can be stored, got {trigger!r}")
    document = {
        "format": FORMAT_VERSION,
        "id": state["id"],
        "func": state["func"],
        "executor": state["executor"],
        "args": list(state["args"]),
        "kwargs": state["kwargs"],
        "name": state["name"],
        "misfire_grace_time": state["misfire_grace_time"],
        "coalesce": state["coalesce"],
        "max_instances": state["max_instances"],
        "next_run_time": _iso(state["next_run_time"]),
        "trigger": {
            "fields": {f.name: str(f) for f in trigger.fields if not f.is_default},
            "timezone": str(trigger.timezone),
            "start_date": _iso(trigger.start_date),
            "end_date": _iso(trigger.end_date),
            "jitter": trigger.jitter,
        },
    }
    return json.dumps(document).encode("utf-8")


def job_state_from_json(data: bytes) -> dict[str, Any]:
    """Rebuild the state dict `Job.__setstate__` expects from `job_to_json` output."""
    document = json.loads(data.decode("utf-8"))
    if document.get("format") != FORMAT_VERSION:
        raise ValueError(f"unsupported job document format {document.get('format')!r}")
    spec = document["trigger"]
    trigger = CronTrigger(
        **spec["fields"],
        timezone=spec["timezone"],
        start_date=spec["start_date"],
        end_date=spec["end_date"],
        jitter=spec["jitter"],
    )
    return {
        "version": 1,
        "id": document["id"],
        "func": document["func"],
        "trigger": trigger,
        "executor": document["executor"],
        "args": tuple(document["args"]),
        "kwargs": document["kwargs"],
        "name": document["name"],
        "misfire_grace_time": document["misfire_grace_time"],
        "coalesce": document["coalesce"],
        "max_instances": document["max_instances"],
        "next_run_time": _parse(document["next_run_time"]),
    }


class JsonSQLAlchemyJobStore(SQLAlchemyJobStore):
    """SQLAlchemyJobStore whose job_state column holds JSON, never a pickle.

    `allowed_funcs`: the "module:name" references a stored job may name (default: the nightly
    job's). Others are refused on write and, on read, logged once and deleted, never imported.
    """

    def __init__(self, *args: Any, allowed_funcs: Iterable[str] = (NIGHTLY_JOB_FUNC,), **kw: Any):
        super().__init__(*args, **kw)
        self.allowed_funcs = frozenset(allowed_funcs)

    def add_job(self, job: Job) -> None:
        self._write(job, scheduler_jobs.insert_job, ConflictingIdError)

    def update_job(self, job: Job) -> None:
        self._write(job, scheduler_jobs.update_job, JobLookupError)

    def _write(
        self,
        job: Job,
        write: Callable[..., bool],
        error: Callable[[str], Exception],
    ) -> None:
        """`write` (insert or update) the job's row after checking its function; `error(job.id)`
        when that found a clash or no row (raised inside: a failed transaction is rolled back)."""
        self._check_func(job.id, job.func_ref)
        with self.engine.begin() as connection:
            written = write(
                connection,
                self.jobs_t,
                job_id=job.id,
                next_run_time=datetime_to_utc_timestamp(job.next_run_time),
                state=job_to_json(job),
            )
            if not written:
                raise error(job.id)

    def lookup_job(self, job_id: str) -> Job | None:
        with self.engine.begin() as connection:
            job_state = scheduler_jobs.job_state(connection, self.jobs_t, job_id)
            if not job_state:
                return None
            try:
                return self._reconstitute_job(job_state)
            except RefusedJobError as exc:
                self._refuse(connection, job_id, exc)
                return None

    def _get_jobs(self, *conditions: Any) -> list[Job]:
        jobs = []
        with self.engine.begin() as connection:
            for row in scheduler_jobs.job_rows(connection, self.jobs_t, *conditions):
                try:
                    jobs.append(self._reconstitute_job(row.job_state))
                except RefusedJobError as exc:
                    self._refuse(connection, row.id, exc)
                except Exception:
                    self._logger.exception('Unable to restore job "%s" -- removing it', row.id)
                    scheduler_jobs.delete_job(connection, self.jobs_t, row.id)
        return jobs

    def _check_func(self, job_id: str, func: object) -> None:
        if not isinstance(func, str) or func not in self.allowed_funcs:
            raise RefusedJobError(
                f"job {job_id!r} names function {func!r}, which is not allowed "
                f"(allowed: {', '.join(sorted(self.allowed_funcs)) or 'none'})"
            )

    def _refuse(self, connection: Any, job_id: str, exc: RefusedJobError) -> None:
        scheduler_jobs.delete_job(connection, self.jobs_t, job_id)
        log.error("refused a stored job: %s; deleted it from %s", exc, self.jobs_t.name)

    def _reconstitute_job(self, job_state: bytes) -> Job:
        state = job_state_from_json(job_state)
        # Before Job.__setstate__, which imports the function's module.
        self._check_func(state["id"], state["func"])
        state["jobstore"] = self
        job = Job.__new__(Job)
        job.__setstate__(state)
        job._scheduler = self._scheduler
        job._jobstore_alias = self._alias
        return job


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None
