"""Readiness of the forecasting service: the one function /readyz and `candlecast status` share.

The verdict itself (db.health.readiness) needs the time a run was last due: the latest fire time
of `[schedule] cron` that is at least `[schedule] stale_after_hours` old. A run due then must have
succeeded by now; the run due since has not had its grace time yet. (Measuring from the latest
fire time before now instead would give a daily schedule less than a day of grace, and would call
a Monday stale because the weekend had no runs.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from db.health import DataAge, Readiness, newest_candles, readiness
from forecasting.calendar import sessions_between
from jobs.config import Config, ScheduleConfig
from jobs.config_checks import cron_trigger

# Look-back windows for the latest fire time: small first so frequent schedules iterate little.
_WINDOWS = (
    timedelta(minutes=2),
    timedelta(hours=2),
    timedelta(days=2),
    timedelta(days=9),
    timedelta(days=40),
    timedelta(days=400),
    timedelta(days=1500),
)


def last_fire_time(trigger: Any, moment: datetime) -> datetime | None:
    """The latest fire time of an APScheduler trigger at or before `moment` (None: none in ~4
    years). APScheduler 3 only computes forward, so step forward from a window before `moment`."""
    for window in _WINDOWS:
        fire = trigger.get_next_fire_time(None, moment - window)
        if fire is None or fire > moment:
            continue
        while True:
            later = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
            if later is None or later > moment:
                return fire
            fire = later
    return None


def due_time(schedule: ScheduleConfig, now: datetime) -> datetime | None:
    """When the run that must have succeeded by `now` was due (see the module docstring)."""
    trigger = cron_trigger(schedule.cron, schedule.timezone)
    return last_fire_time(trigger, now - timedelta(hours=schedule.stale_after_hours))


def data_age(session: Session, config: Config, now: datetime) -> DataAge | None:
    """How far the configured tickers' candles are behind `now`, each on its own exchange's
    calendar: the stalest ticker's newest candle (None when no candle is stored)."""
    newest = newest_candles(session, tickers=config.tickers.symbols)
    if not newest:
        return None
    today = now.astimezone(UTC).date()
    behind = {
        ticker: sessions_between(day, today, config.tickers.exchange_for(ticker))
        for ticker, day in newest.items()
    }
    worst = max(behind.values())
    tickers = tuple(t for t in config.tickers.symbols if behind.get(t) == worst)
    return DataAge(
        as_of=min(newest[t] for t in tickers),
        sessions_behind=worst,
        tickers=tickers,
        stale_after=config.schedule.data_stale_after_sessions,
    )


def check(session: Session, config: Config, now: datetime | None = None) -> Readiness:
    """The service's readiness verdict at `now` (default: the current time)."""
    now = now or datetime.now(UTC)
    return readiness(
        session,
        now=now,
        due_at=due_time(config.schedule, now),
        stale_after_hours=config.schedule.stale_after_hours,
        data=data_age(session, config, now),
    )
