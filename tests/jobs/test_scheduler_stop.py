"""A stop that races APScheduler's main loop still ends the daemon cleanly (exit code 0).

APScheduler 3's shutdown() marks the scheduler stopped before it takes the job store lock; when
that happens while the main loop is between submitting a one-shot job (the start-up resume job)
and removing it, the removal raises JobLookupError out of scheduler.start(). It happened about
once in ten real daemon tests that sent SIGTERM right at start-up. Here the stop is sent at
exactly that point, in-process, with the real scheduler, job stores and executor.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest
from apscheduler.executors.base import BaseExecutor
from apscheduler.schedulers.base import STATE_STOPPED

from jobs import scheduler as daemon


@pytest.fixture
def signal_handlers(keep_signal_handlers: None):
    """Restore SIGTERM/SIGINT handlers (tests/jobs/conftest.py) and the daemon's stop flag."""
    yield
    daemon.STOP.clear()


def test_a_stop_while_the_resume_job_is_submitted_ends_with_0(
    make_config, migrated_url: str, monkeypatch: pytest.MonkeyPatch, signal_handlers: None
) -> None:
    assert threading.current_thread() is threading.main_thread()  # signal handlers need it
    config = make_config(migrated_url)
    original = BaseExecutor.submit_job
    stopped_at_submit: list[str] = []

    def submit_then_stop(self: BaseExecutor, job: Any, run_times: Any) -> None:
        original(self, job, run_times)
        if job.id.endswith("-resume") and not stopped_at_submit:
            stopped_at_submit.append(job.id)
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # the daemon's own handler
            deadline = time.monotonic() + 10
            while self._scheduler.state != STATE_STOPPED:  # shutdown() has begun
                assert time.monotonic() < deadline, "shutdown() did not start"
                time.sleep(0.001)

    monkeypatch.setattr(BaseExecutor, "submit_job", submit_then_stop)
    assert daemon.run_daemon(config, None) == 0
    assert stopped_at_submit == [f"{daemon.JOB_ID}-resume"]


def test_the_same_error_without_a_stop_is_raised(
    make_config, migrated_url: str, monkeypatch: pytest.MonkeyPatch, signal_handlers: None
) -> None:
    from apscheduler.jobstores.base import JobLookupError

    config = make_config(migrated_url)

    def broken_start(self: Any, *args: Any, **kwargs: Any) -> None:
        raise JobLookupError("some-job")

    monkeypatch.setattr("apscheduler.schedulers.blocking.BlockingScheduler.start", broken_start)
    with pytest.raises(JobLookupError):
        daemon.run_daemon(config, None)
