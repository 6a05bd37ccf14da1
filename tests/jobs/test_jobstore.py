"""The JSON job store round-trips cron jobs, never unpickles anything, and loads only the nightly
job's own function."""

from __future__ import annotations

import json
import logging
import pickle
import time
from datetime import UTC, datetime

import apscheduler.job
import pytest
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import create_engine, select

from db.session import make_engine
from jobs import scheduler as daemon
from jobs.jobstore import NIGHTLY_JOB_FUNC, JsonSQLAlchemyJobStore, RefusedJobError

CALLS: list[tuple] = []


def noop() -> None:
    """A job target with a textual reference."""


def record_call(*args: object) -> None:
    """A function a forged row may name: it records that it ran."""
    CALLS.append(args)


def test_cron_job_round_trips_as_json(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    allowed = [f"{__name__}:noop"]
    store = JsonSQLAlchemyJobStore(engine=engine, allowed_funcs=allowed)
    scheduler = BackgroundScheduler(jobstores={"default": store})
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

    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    store = JsonSQLAlchemyJobStore(engine=engine, allowed_funcs=allowed)
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


NIGHTLY = CronTrigger.from_crontab("30 18 * * mon-fri", timezone="America/New_York")


def _store_with_the_nightly_job(url: str) -> JsonSQLAlchemyJobStore:
    """A job store on `url` holding the nightly job, written as the daemon writes it."""
    store = JsonSQLAlchemyJobStore(engine=make_engine(url))
    scheduler = BackgroundScheduler(jobstores={"default": store})
    scheduler.start(paused=True)
    scheduler.add_job(NIGHTLY_JOB_FUNC, NIGHTLY, args=[None], id=daemon.JOB_ID)
    scheduler.shutdown(wait=False)
    return store


def _forge(store: JsonSQLAlchemyJobStore, job_id: str, func: str, args: list) -> None:
    """Write a row naming `func`, due a second ago, as someone with write access could."""
    with store.engine.begin() as conn:
        raw = conn.execute(
            select(store.jobs_t.c.job_state).where(store.jobs_t.c.id == daemon.JOB_ID)
        ).scalar_one()
        document = json.loads(raw)
        document.update(id=job_id, func=func, args=args, misfire_grace_time=None)
        due = time.time() - 1
        document["next_run_time"] = datetime.fromtimestamp(due, UTC).isoformat()
        conn.execute(store.jobs_t.delete().where(store.jobs_t.c.id == job_id))
        conn.execute(
            store.jobs_t.insert().values(
                id=job_id, next_run_time=due, job_state=json.dumps(document).encode()
            )
        )


def test_a_row_naming_another_function_is_refused_never_resolved_and_deleted(
    db_url, tmp_path, monkeypatch, caplog
):
    store = _store_with_the_nightly_job(db_url)
    marker = tmp_path / "pwned"
    _forge(store, "shell", "subprocess:getoutput", [f"touch {marker}"])
    _forge(store, "recorder", f"{__name__}:record_call", ["ran"])
    resolved: list[str] = []
    real_ref_to_obj = apscheduler.job.ref_to_obj

    def spy(ref: str):
        resolved.append(ref)
        return real_ref_to_obj(ref)

    monkeypatch.setattr(apscheduler.job, "ref_to_obj", spy)
    CALLS.clear()
    caplog.set_level(logging.INFO, logger="candlecast.jobstore")

    # A running scheduler: both forged rows are due now, so today's store would run them.
    scheduler = BackgroundScheduler(jobstores={"default": store})
    scheduler.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not CALLS:
            with store.engine.begin() as conn:
                left = set(conn.execute(select(store.jobs_t.c.id)).scalars())
            if left == {daemon.JOB_ID}:
                break
            time.sleep(0.05)
        time.sleep(0.3)  # room for an executor thread, had anything been submitted
        jobs = scheduler.get_jobs()
    finally:
        scheduler.shutdown(wait=True)

    assert CALLS == []
    assert not marker.exists()
    assert "subprocess:getoutput" not in resolved
    assert f"{__name__}:record_call" not in resolved
    refusals = [r for r in caplog.records if r.name == "candlecast.jobstore"]
    assert sorted(r.getMessage() for r in refusals) == [
        f"refused a stored job: job 'recorder' names function '{__name__}:record_call', "
        f"which is not allowed (allowed: {NIGHTLY_JOB_FUNC}); deleted it from apscheduler_jobs",
        "refused a stored job: job 'shell' names function 'subprocess:getoutput', "
        f"which is not allowed (allowed: {NIGHTLY_JOB_FUNC}); deleted it from apscheduler_jobs",
    ]
    assert all(r.levelno == logging.ERROR and r.exc_info is None for r in refusals)
    # the legitimate nightly job still loads, and is the only row left
    assert [(j.id, j.func_ref) for j in jobs] == [(daemon.JOB_ID, NIGHTLY_JOB_FUNC)]
    assert jobs[0].func is daemon.nightly_job
    with store.engine.begin() as conn:
        assert list(conn.execute(select(store.jobs_t.c.id)).scalars()) == [daemon.JOB_ID]
    store.engine.dispose()


def test_a_forged_nightly_row_is_refused_on_lookup_and_cannot_be_written(db_url, caplog):
    store = _store_with_the_nightly_job(db_url)
    with store.engine.begin() as conn:
        raw = conn.execute(select(store.jobs_t.c.job_state)).scalar_one()
        document = json.loads(raw)
        document["func"] = f"{__name__}:record_call"
        conn.execute(store.jobs_t.update().values(job_state=json.dumps(document).encode()))
    caplog.set_level(logging.INFO, logger="candlecast.jobstore")
    # what the daemon's stored_job() does at start-up before re-adding its job
    assert store.lookup_job(daemon.JOB_ID) is None
    assert "names function 'tests.jobs.test_jobstore:record_call'" in caplog.text
    with store.engine.begin() as conn:
        assert conn.execute(select(store.jobs_t.c.id)).first() is None

    scheduler = BackgroundScheduler(jobstores={"default": store})
    scheduler.start(paused=True)
    try:
        with pytest.raises(RefusedJobError):
            scheduler.add_job(f"{__name__}:record_call", NIGHTLY, id="other")
        # the daemon's own function, as jobs.scheduler names it, is the store's default
        assert daemon.JOB_FUNC == NIGHTLY_JOB_FUNC
        scheduler.add_job(daemon.JOB_FUNC, NIGHTLY, args=[None], id=daemon.JOB_ID)
        assert store.lookup_job(daemon.JOB_ID).func is daemon.nightly_job
    finally:
        scheduler.shutdown(wait=False)


def test_a_clashing_add_and_an_update_of_a_missing_job_raise(db_url):
    """APScheduler's contract: a second job with a stored id is refused and the first kept; an
    update of a job that is not stored is a lookup error and writes nothing."""
    store = _store_with_the_nightly_job(db_url)
    try:
        job = store.lookup_job(daemon.JOB_ID)
        with pytest.raises(ConflictingIdError):
            store.add_job(job)
        assert store.lookup_job(daemon.JOB_ID) is not None
        store.remove_job(daemon.JOB_ID)
        with pytest.raises(JobLookupError):
            store.update_job(job)
        assert store.get_all_jobs() == []
    finally:
        store.engine.dispose()
