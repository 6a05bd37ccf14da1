"""Exchange trading sessions (exchange_calendars): which days have candles, and which come next.

Sessions are loaded once per exchange and searched with bisect, so calls are cheap in loops.
"""

from __future__ import annotations

import bisect
import datetime
import warnings
from functools import lru_cache

import numpy as np
import pandas as pd

# Fixed lower bound so old history (the bundled data starts in 2013) stays covered as time passes;
# the upper bound is exchange_calendars' default (about a year ahead of today).
CALENDAR_START = "2000-01-03"


@lru_cache(maxsize=8)
def _sessions(exchange: str) -> tuple[datetime.date, ...]:
    """All sessions of `exchange` as sorted dates (cached: building a calendar takes ~0.3 s)."""
    import exchange_calendars as xcals

    try:
        with warnings.catch_warnings():
            # exchange_calendars 4.13 trips a pandas 3 deprecation while building its schedule.
            warnings.simplefilter("ignore", DeprecationWarning)
            calendar = xcals.get_calendar(exchange, start=CALENDAR_START)
    except xcals.errors.InvalidCalendarName as exc:
        raise ValueError(f"unknown exchange calendar {exchange!r}") from exc
    return tuple(ts.date() for ts in calendar.sessions)


def _as_date(day: datetime.date) -> datetime.date:
    """Accept dates and datetimes (incl. pandas Timestamps); compare by calendar date only."""
    return day.date() if isinstance(day, datetime.datetime) else day


def _check_bounds(day: datetime.date, sessions: tuple[datetime.date, ...], exchange: str) -> None:
    if not sessions[0] <= day <= sessions[-1]:
        raise ValueError(
            f"{day.isoformat()} is outside the {exchange} calendar "
            f"({sessions[0].isoformat()} .. {sessions[-1].isoformat()})"
        )


def is_session(day: datetime.date, exchange: str = "XNYS") -> bool:
    """True if `day` is a trading session of `exchange` (weekends and holidays are not)."""
    day = _as_date(day)
    sessions = _sessions(exchange)
    _check_bounds(day, sessions, exchange)
    pos = bisect.bisect_left(sessions, day)
    return pos < len(sessions) and sessions[pos] == day


@lru_cache(maxsize=8)
def _session_index(exchange: str) -> pd.DatetimeIndex:
    """The sessions of `exchange` as a midnight, tz-naive DatetimeIndex (for vectorised checks)."""
    return pd.DatetimeIndex(pd.to_datetime(list(_sessions(exchange)))).as_unit("ns")


def off_calendar(days: pd.DatetimeIndex, exchange: str = "XNYS") -> np.ndarray:
    """True for each day inside the calendar's span that is not a session of `exchange`.

    Days outside the span (before CALENDAR_START, or past the calendar's end) and NaT are not
    judged (False): the calendar cannot say whether they were sessions.
    """
    days = pd.DatetimeIndex(days)
    if days.tz is not None:
        days = days.tz_localize(None)
    days = days.normalize().as_unit("ns")
    sessions = _session_index(exchange)
    inside = np.asarray(~days.isna() & (days >= sessions[0]) & (days <= sessions[-1]))
    return inside & ~np.asarray(days.isin(sessions))


def latest_session_on_or_before(day: datetime.date, exchange: str = "XNYS") -> datetime.date:
    """`day` itself if it is a session, else the last session before it."""
    day = _as_date(day)
    sessions = _sessions(exchange)
    _check_bounds(day, sessions, exchange)
    return sessions[bisect.bisect_right(sessions, day) - 1]


def next_sessions(after: datetime.date, n: int, exchange: str = "XNYS") -> list[datetime.date]:
    """The `n` sessions strictly after `after` (which may itself be a weekend or holiday)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    after = _as_date(after)
    sessions = _sessions(exchange)
    _check_bounds(after, sessions, exchange)
    start = bisect.bisect_right(sessions, after)
    if start + n > len(sessions):
        raise ValueError(
            f"{n} sessions after {after.isoformat()} run past the end of the {exchange} "
            f"calendar ({sessions[-1].isoformat()})"
        )
    return list(sessions[start : start + n])


def sessions_between(first: datetime.date, last: datetime.date, exchange: str = "XNYS") -> int:
    """How many sessions of `exchange` lie after `first` up to and including `last` (0 when
    `last` <= `first`): how far data ending on `first` is behind on `last`."""
    first, last = _as_date(first), _as_date(last)
    sessions = _sessions(exchange)
    if last <= first:
        return 0
    last = min(last, sessions[-1])
    return max(0, bisect.bisect_right(sessions, last) - bisect.bisect_right(sessions, first))


def next_sessions_many(after: pd.DatetimeIndex, n: int, exchange: str = "XNYS") -> np.ndarray:
    """(len(after), n) datetime64[ns]: the ``n`` sessions strictly after each day (vectorised
    ``next_sessions``, for the backtest's thousands of as-of dates)."""
    sessions = _session_index(exchange)
    days = pd.DatetimeIndex(after).normalize().as_unit("ns")
    if len(days) and (days.min() < sessions[0] or days.max() > sessions[-1]):
        raise ValueError(
            f"dates {days.min().date()}..{days.max().date()} are outside the {exchange} "
            f"calendar ({sessions[0].date()}..{sessions[-1].date()})"
        )
    start = sessions.searchsorted(days, side="right")
    index = start[:, None] + np.arange(n)[None, :]
    if len(days) and index.max() >= len(sessions):
        raise ValueError(
            f"{n} sessions after {days.max().date()} run past the end of the {exchange} "
            f"calendar ({sessions[-1].date()})"
        )
    return sessions.to_numpy()[index]
