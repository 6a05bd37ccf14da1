"""`candlecast status`: the readiness verdict for a shell or cron check (exit 0 ok, 1 degraded),
on SQLite and PostgreSQL; the due time it is measured from; the two [schedule] keys."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import ForecastRun
from jobs.cli import main
from jobs.config import ConfigError, ScheduleConfig
from jobs.config_checks import cron_trigger
from jobs.health import due_time, last_fire_time
from tests.jobs.conftest import write_config

NOW = datetime.now(UTC)
NY = "America/New_York"
# status(**schedule) -> (exit code, stdout lines): the `status` fixture
Status = Callable[..., tuple[int, list[str]]]


def add_run(
    factory: sessionmaker[Session], status: str, ago: timedelta, message: str | None = None
) -> int:
    with factory.begin() as session:
        run = ForecastRun(
            trigger="schedule",
            status=status,
            started_at=NOW - ago - timedelta(minutes=5),
            finished_at=NOW - ago,
            as_of_date=(NOW - ago).date(),
            message=message,
        )
        session.add(run)
        session.flush()
        return run.id


@pytest.fixture
def status(tmp_path: Path, migrated_url: str, capsys: pytest.CaptureFixture[str]) -> Status:
    """status(**schedule) -> (exit code, stdout lines) of `candlecast status` on this test's
    migrated database, with the [schedule] keys `schedule`."""

    def run(**schedule: Any) -> tuple[int, list[str]]:
        sections = {"schedule": schedule} if schedule else {}
        config = write_config(tmp_path / "status.toml", migrated_url, sections)
        code = main(["--config", str(config), "status"])
        return code, capsys.readouterr().out.splitlines()

    return run


def test_status_is_ok_after_a_recent_success(
    session_factory: sessionmaker[Session], status: Status
) -> None:
    add_run(session_factory, "failed", timedelta(hours=5))
    ok_id = add_run(session_factory, "succeeded", timedelta(minutes=3))
    with session_factory.begin() as session:  # a final row without finish time sorts last
        session.add(ForecastRun(trigger="manual", status="failed", started_at=NOW))
    code, lines = status()
    assert code == 0
    assert lines == [lines[0]] and lines[0].startswith(f"ok: latest finished run {ok_id} succeeded")


def test_status_is_degraded_with_one_line_per_reason(
    session_factory: sessionmaker[Session], status: Status
) -> None:
    add_run(session_factory, "succeeded", timedelta(days=10))
    bad = add_run(session_factory, "failed", timedelta(hours=1), message="2 of 2 tickers failed")
    code, lines = status()
    assert code == 1
    assert len(lines) == 2 and all(line.startswith("degraded: ") for line in lines)
    assert f"latest finished run {bad} (schedule, as of " in lines[0]
    assert lines[0].endswith("is failed: 2 of 2 tickers failed")
    assert lines[1].startswith("degraded: no run succeeded within 12 h of the run due at ")

    # Only the failure once the grace time covers the old success.
    code, lines = status(stale_after_hours=24 * 12)
    assert code == 1 and len(lines) == 1 and "is failed" in lines[0]


def test_status_is_degraded_when_runs_stopped(
    session_factory: sessionmaker[Session], status: Status
) -> None:
    code, lines = status(cron="0 * * * *", stale_after_hours=2)
    assert code == 1 and lines[0].endswith("(last success: never)")
    ok_id = add_run(session_factory, "succeeded", timedelta(hours=4))
    code, lines = status(cron="0 * * * *", stale_after_hours=2)
    assert code == 1 and f"(last success: run {ok_id} (schedule, as of " in lines[0]
    add_run(session_factory, "interrupted", timedelta(hours=1))  # neither a failure nor a success
    code, lines = status(cron="0 * * * *", stale_after_hours=5)
    assert code == 0 and lines[0].startswith("ok: latest finished run")


def test_status_without_schema_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "status.toml", f"sqlite:///{tmp_path / 'empty.db'}", {})
    assert main(["--config", str(config), "status"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "has no schema" in err[0]


def test_last_fire_time_steps_back_over_weekends_and_dst() -> None:
    weekdays = cron_trigger("30 18 * * mon-fri", NY)
    monday_morning = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert last_fire_time(weekdays, monday_morning) == datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
    exactly = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    assert last_fire_time(weekdays, exactly) == exactly
    # 18:30 New York is 22:30 UTC in summer time (before 2026-11-01) and 23:30 after.
    after_dst = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    assert last_fire_time(weekdays, after_dst) == datetime(2026, 10, 30, 22, 30, tzinfo=UTC)
    leap = cron_trigger("0 0 29 2 *", "UTC")
    assert last_fire_time(leap, monday_morning) == datetime(2024, 2, 29, tzinfo=UTC)
    seconds = cron_trigger("*/5 * * * * *", "UTC")
    assert last_fire_time(seconds, datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC)) == datetime(
        2026, 1, 1, 0, 0, 5, tzinfo=UTC
    )


def test_due_time_gives_each_run_its_grace_time() -> None:
    schedule = ScheduleConfig(cron="30 18 * * mon-fri", timezone=NY, stale_after_hours=12)
    # Tuesday 04:00 New York: Monday's 18:30 run still has until 06:30; Friday's is what counts.
    tuesday = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert due_time(schedule, tuesday) == datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
    assert due_time(schedule, tuesday + timedelta(hours=3)) == datetime(
        2026, 11, 30, 23, 30, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"stale_after_hours": 0}, "schedule.stale_after_hours must be > 0"),
        ({"stale_after_hours": "soon"}, "schedule.stale_after_hours must be a number"),
        ({"metrics_port": 70000}, "schedule.metrics_port must be between 1 and 65535"),
        ({"metrics_port": -1}, "schedule.metrics_port must be between 1 and 65535"),
    ],
)
def test_schedule_keys_are_validated(make_config, schedule: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(schedule=schedule)


def test_schedule_keys_default_and_parse(make_config) -> None:
    default = make_config().schedule
    assert default.stale_after_hours == 12.0 and default.metrics_port == 0
    custom = make_config(schedule={"stale_after_hours": 30, "metrics_port": 9108}).schedule
    assert custom.stale_after_hours == 30.0 and custom.metrics_port == 9108
