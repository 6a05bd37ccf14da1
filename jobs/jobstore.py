"""APScheduler's SQLAlchemy job store with JSON instead of pickle.

The stock SQLAlchemyJobStore pickles each job's state into the database, so anyone able to write
that table could run code in the daemon. This store keeps the same table layout but writes a small
JSON document and only understands cron-triggered jobs whose function is a "module:name" reference.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.triggers.cron import CronTrigger
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy.exc import IntegrityError

FORMAT_VERSION = 1


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
    """SQLAlchemyJobStore whose job_state column holds JSON, never a pickle."""

    def add_job(self, job: Job) -> None:
        insert = self.jobs_t.insert().values(
            id=job.id,
            next_run_time=datetime_to_utc_timestamp(job.next_run_time),
            job_state=job_to_json(job),
        )
        with self.engine.begin() as connection:
            try:
                connection.execute(insert)
            except IntegrityError:
                raise ConflictingIdError(job.id) from None

    def update_job(self, job: Job) -> None:
        update = (
            self.jobs_t.update()
            .values(
                next_run_time=datetime_to_utc_timestamp(job.next_run_time),
                job_state=job_to_json(job),
            )
            .where(self.jobs_t.c.id == job.id)
        )
        with self.engine.begin() as connection:
            if connection.execute(update).rowcount == 0:
                raise JobLookupError(job.id)

    def _reconstitute_job(self, job_state: bytes) -> Job:
        state = job_state_from_json(job_state)
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
