"""The JSON job store round-trips cron jobs and never unpickles anything."""

from __future__ import annotations

import json
import pickle

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import create_engine, select

from jobs.jobstore import JsonSQLAlchemyJobStore


def noop() -> None:
    """A job target with a textual reference."""


def test_cron_job_round_trips_as_json(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    scheduler = BackgroundScheduler(jobstores={"default": JsonSQLAlchemyJobStore(engine=engine)})
    scheduler.start(paused=True)
    trigger = CronTrigger.from_crontab("30 18 * * mon-fri", timezone="America/New_York")
    scheduler.add_job(
        f"{__name__}:noop",
        trigger,
        id="nightly",
        misfire_grace_time=3600,
        coalesce=True,
        max_instances=1,
    )
    stored = scheduler.get_job("nightly")
    scheduler.shutdown(wait=False)

    store = JsonSQLAlchemyJobStore(engine=create_engine(f"sqlite:///{tmp_path / 'jobs.db'}"))
    with store.engine.begin() as conn:
        raw = conn.execute(select(store.jobs_t.c.job_state)).scalar_one()
    document = json.loads(raw)
    assert document["func"] == f"{__name__}:noop"
    assert document["trigger"]["fields"] == {
        "month": "*",
        "day": "*",
        "day_of_week": "mon-fri",
        "hour": "18",
        "minute": "30",
    }
    reloaded = BackgroundScheduler(jobstores={"default": store})
    reloaded.start(paused=True)
    job = reloaded.get_job("nightly")
    assert job.next_run_time == stored.next_run_time
    assert str(job.trigger) == str(stored.trigger)
    assert job.misfire_grace_time == 3600 and job.coalesce and job.max_instances == 1
    reloaded.shutdown(wait=False)


def test_a_pickled_row_is_not_loaded(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    store = JsonSQLAlchemyJobStore(engine=engine)
    store.jobs_t.create(engine)
    with engine.begin() as conn:
        conn.execute(
            store.jobs_t.insert().values(
                id="evil", next_run_time=0.0, job_state=pickle.dumps({"id": "evil"})
            )
        )
    scheduler = BackgroundScheduler(jobstores={"default": store})
    scheduler.start(paused=True)
    assert scheduler.get_jobs() == []
    scheduler.shutdown(wait=False)
