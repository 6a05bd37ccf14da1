"""The scheduler daemon: APScheduler 3 BlockingScheduler firing the nightly run on a cron schedule.

It runs in its own process (never inside the web server). The job lives in the same database
(`apscheduler_jobs`, JSON-serialised) so a run missed while the daemon was down fires once when it
comes back, if within `misfire_grace_time_s`. A run a killed daemon left unfinished is resumed at
start-up (`resume_job`: only its tickers without a forecast set). SIGTERM/SIGINT let the ticker in
progress finish, mark the run interrupted and exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    EVENT_SCHEDULER_STARTED,
    JobEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from db import runs
from db.run_lock import RunLockedError
from db.session import make_engine
from jobs.config import Config, load_config
from jobs.config_checks import cron_trigger
from jobs.jobstore import JsonSQLAlchemyJobStore
from jobs.scheduler_metrics import SchedulerMetrics, record_run
from jobs.stop_signals import block_stop_signals, on_stop_signals

JOB_ID = "candlecast-nightly"
JOB_FUNC = "jobs.scheduler:nightly_job"
RESUME_FUNC = "jobs.scheduler:resume_job"
STALE_FUNC = "jobs.scheduler:stale_check_job"
STALE_CHECK_MINUTES = 15
# Due times already alerted as stale by this process (a restarted daemon alerts once more).
STALE_ALERTED: set[datetime] = set()
log = logging.getLogger("candlecast.scheduler")

if TYPE_CHECKING:
    from jobs.pipeline import Pipeline
    from jobs.run_result import RunResult

# The daemon's stop flag: set by SIGTERM/SIGINT/SIGHUP, checked by the pipeline between tickers.
STOP = threading.Event()


def nightly_job(config_path: str | None) -> None:
    """The scheduled job: one nightly run with trigger 'schedule' (config re-read every time)."""
    from jobs.pipeline import Pipeline

    # Keep SIGTERM/SIGINT/SIGHUP away from this worker thread and the TensorFlow threads it starts:
    # delivered to the main thread (blocked in the scheduler's wait) they run the stop handler at
    # once; delivered to any other thread they would wait until the main thread woke up.
    block_stop_signals()
    config = load_config(config_path)
    try:
        result = Pipeline(config, stop_event=STOP).run_nightly(trigger="schedule")
    except RunLockedError as exc:
        record_run("skipped")
        log.warning("skipped: %s", exc)
        return
    _log_result(result)


def resume_job(config_path: str | None) -> None:
    """The daemon's start-up job: resume a run a killed process left unfinished (if any)."""
    from jobs.pipeline import Pipeline

    block_stop_signals()  # as nightly_job
    config = load_config(config_path)
    try:
        result = resume_abandoned(Pipeline(config, stop_event=STOP))
    except RunLockedError as exc:
        log.warning("resume skipped: %s", exc)
        return
    if result is not None:
        _log_result(result)


def stale_check_job(config_path: str | None) -> None:
    """The daemon's periodic check: one "stale" alert per due time that no run succeeded after."""
    from db.session import make_session_factory
    from jobs.alerts import alert_stale
    from jobs.health import check

    config = load_config(config_path)
    engine = make_engine(config.database.url)
    try:
        with make_session_factory(engine)() as session:
            verdict = check(session, config)
    finally:
        engine.dispose()
    if verdict.stale and verdict.due_at not in STALE_ALERTED:
        log.warning("stale: %s", "; ".join(verdict.reasons))
        if alert_stale(config, verdict):
            STALE_ALERTED.add(verdict.due_at)


def resume_abandoned(pipeline: Pipeline) -> RunResult | None:
    """Finish the night of a run a stopped process left `running` (or `abandoned`).

    Only a schedule or manual run of the current as-of date (the one a run now would use, from the
    stored candles) counts, and only if no later run of that date finished (runs.run_to_resume).
    Its tickers without a stored forecast set for their as-of date then run now, as a 'schedule'
    run whose message says "resumes run N"; None when there is nothing to resume. The run lock
    decides whether the run's process is gone: RunLockedError when a live one holds it.
    """
    symbols = tuple(pipeline.config.tickers.symbols)
    ticker_as_of = pipeline._ticker_as_ofs(symbols)
    as_of = max(ticker_as_of.values(), default=None)
    if as_of is None:
        return None
    with pipeline.factory() as session:
        run = runs.run_to_resume(session, as_of_date=as_of)
        if run is None:
            return None
        missing = runs.tickers_without_forecasts(session, tickers=symbols, as_of_dates=ticker_as_of)
    if not missing:
        log.info(
            "run %s as of %s was left unfinished, but every ticker has forecasts", run.id, as_of
        )
        return None
    log.warning(
        "resuming abandoned run %s as of %s: %d ticker(s) without forecasts: %s",
        run.id,
        as_of,
        len(missing),
        ", ".join(missing),
    )
    return pipeline.run_nightly(tickers=missing, trigger="schedule", note=f"resumes run {run.id}")


def _log_result(result: RunResult) -> None:
    record_run(result.status, result.outcomes)
    # A succeeded run is INFO, a partial or interrupted one WARNING, a failed one ERROR.
    level = {"succeeded": logging.INFO, "failed": logging.ERROR}.get(result.status, logging.WARNING)
    log.log(
        level,
        "run %s as of %s: %s%s",
        result.run_id,
        result.as_of,
        result.status,
        f" ({result.message})" if result.message else "",
        extra={"run_id": result.run_id},
    )


def build_scheduler(config: Config) -> BlockingScheduler:
    """A BlockingScheduler whose job store is the app database's `apscheduler_jobs` table."""
    scheduler = BlockingScheduler(
        jobstores={"default": _job_store(config), "memory": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": config.schedule.misfire_grace_time_s,
        },
        timezone=config.schedule.timezone,
    )
    return scheduler


def stored_job(config: Config) -> Job | None:
    """The nightly job as the database holds it (None before the daemon's first start)."""
    return _job_store(config).lookup_job(JOB_ID)


def add_nightly_job(scheduler: BaseScheduler, config: Config, config_path: str | None) -> None:
    """Add (or replace) the nightly job before the scheduler starts.

    When the stored job has the same schedule its pending fire time is kept, so a run missed while
    the daemon was down fires once at start-up (if within the grace time) instead of being lost.
    """
    trigger = cron_trigger(config.schedule.cron, config.schedule.timezone)
    existing = stored_job(config)
    options: dict[str, Any] = {}
    if existing is not None and str(existing.trigger) == str(trigger):
        options["next_run_time"] = existing.next_run_time
    scheduler.add_job(
        JOB_FUNC,
        trigger,
        args=[config_path],
        id=JOB_ID,
        name="nightly forecast run",
        replace_existing=True,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=config.schedule.misfire_grace_time_s,
        **options,
    )


def next_fire_times(config: Config, count: int = 5) -> list[datetime]:
    """The next `count` fire times of the configured schedule, from now."""
    trigger = cron_trigger(config.schedule.cron, config.schedule.timezone)
    times: list[datetime] = []
    previous = None
    now = datetime.now(trigger.timezone)
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        times.append(fire)
        previous = now = fire
    return times


def run_daemon(config: Config, config_path: str | None, *, run_now: bool = False) -> int:
    """Run the daemon in this process until SIGTERM/SIGINT/SIGHUP; returns the exit code (0)."""
    scheduler = build_scheduler(config)
    metrics = _serve_metrics(scheduler, config)

    def log_next(event: JobEvent | None = None) -> None:
        if STOP.is_set():  # shutting down: shutdown() holds the job store lock get_job needs
            return
        if event is not None and event.job_id == f"{JOB_ID}-stale-check":
            return  # the periodic check changes nothing about the next run
        if event is not None and event.code == EVENT_JOB_MISSED:
            log.warning("missed the run due at %s (past the grace time)", event.scheduled_run_time)
        job = scheduler.get_job(JOB_ID)
        if metrics is not None and job is not None:
            metrics.set_next_run(job.next_run_time)
        if job is not None and job.next_run_time is not None:
            log.info("next run due at %s", job.next_run_time.isoformat())

    stopping: list[threading.Thread] = []

    def stop(signum: int, _frame: object) -> None:
        if stopping:  # a second signal: already stopping
            return
        log.info(
            "received %s: finishing the ticker in progress, then stopping",
            signal.Signals(signum).name,
        )
        STOP.set()
        # shutdown(wait=True) waits for the running job; do it off the signal handler.
        stopping.append(threading.Thread(target=scheduler.shutdown, daemon=True))
        stopping[0].start()

    on_stop_signals(stop)  # SIGTERM, SIGINT and SIGHUP (jobs.stop_signals)
    scheduler.add_listener(log_next, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    add_nightly_job(scheduler, config, config_path)
    if run_now:
        scheduler.add_job(
            JOB_FUNC, args=[config_path], id=f"{JOB_ID}-now", name="run now", jobstore="memory"
        )
    else:  # (with --run-now the full run does all a resume would)
        scheduler.add_job(
            RESUME_FUNC,
            args=[config_path],
            id=f"{JOB_ID}-resume",
            name="resume an abandoned run",
            jobstore="memory",
        )
    if config.alerts.webhook_url and "stale" in config.alerts.on:
        scheduler.add_job(
            STALE_FUNC,
            "interval",
            minutes=STALE_CHECK_MINUTES,
            args=[config_path],
            id=f"{JOB_ID}-stale-check",
            name="stale check",
            jobstore="memory",
            next_run_time=datetime.now(UTC),
        )
    scheduler.add_listener(lambda _e: log_next(), EVENT_SCHEDULER_STARTED)
    log.info("scheduler starting (cron %r, %s)", config.schedule.cron, config.schedule.timezone)
    try:
        scheduler.start()  # blocks until shutdown
    except JobLookupError:
        # APScheduler 3 race: shutdown() (from the signal's thread) marks the scheduler stopped
        # while its main loop is removing a one-shot job it has just submitted (the resume job at
        # start-up); that removal then fails. Only a stop makes it happen: anything else is a bug.
        if not STOP.is_set():
            raise
        log.debug("stopping: a one-shot job was being removed (APScheduler shutdown race)")
    for thread in stopping:  # the running job has finished, the job stores are closed
        thread.join()
    log.info("scheduler stopped")
    return 0


def _serve_metrics(scheduler: BaseScheduler, config: Config) -> SchedulerMetrics | None:
    """With [schedule] metrics_port: serve the daemon's metrics and count failed jobs."""
    from jobs import scheduler_metrics

    if not config.schedule.metrics_port:
        return None
    metrics = SchedulerMetrics()
    metrics.serve(config.schedule.metrics_port)
    scheduler_metrics.ACTIVE = metrics

    def job_error(event: JobEvent) -> None:
        if event.job_id not in (f"{JOB_ID}-resume", f"{JOB_ID}-stale-check"):
            metrics.record_run("error")

    scheduler.add_listener(job_error, EVENT_JOB_ERROR)
    return metrics


def _job_store(config: Config) -> JsonSQLAlchemyJobStore:
    return JsonSQLAlchemyJobStore(engine=make_engine(config.database.url))
