"""Trading calendar: sessions after a date, the latest session, holidays and bounds."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pandas as pd
import pytest

from forecasting.calendar import is_session, latest_session_on_or_before, next_sessions

# NYSE holidays (weekdays) in 2023-2024.
HOLIDAYS = {
    date(2023, 1, 2), date(2023, 1, 16), date(2023, 2, 20), date(2023, 4, 7), date(2023, 5, 29),
    date(2023, 6, 19), date(2023, 7, 4), date(2023, 9, 4), date(2023, 11, 23), date(2023, 12, 25),
    date(2024, 1, 1), date(2024, 1, 15), date(2024, 2, 19), date(2024, 3, 29), date(2024, 5, 27),
    date(2024, 6, 19), date(2024, 7, 4), date(2024, 9, 2), date(2024, 11, 28), date(2024, 12, 25),
}  # fmt: skip


def test_four_sessions_after_the_last_2023_session_skip_new_year() -> None:
    assert next_sessions(date(2023, 12, 29), 4) == [
        date(2024, 1, 2),
        date(2024, 1, 3),
        date(2024, 1, 4),
        date(2024, 1, 5),
    ]


def test_independence_day_is_skipped() -> None:
    assert next_sessions(date(2023, 7, 3), 1) == [date(2023, 7, 5)]
    assert not is_session(date(2023, 7, 4))
    assert latest_session_on_or_before(date(2023, 7, 4)) == date(2023, 7, 3)


def test_non_session_after_date_works() -> None:
    saturday = date(2023, 12, 30)
    assert next_sessions(saturday, 2) == [date(2024, 1, 2), date(2024, 1, 3)]
    assert next_sessions(date(2023, 12, 25), 1) == [date(2023, 12, 26)]  # Christmas Day
    assert latest_session_on_or_before(saturday) == date(2023, 12, 29)
    assert latest_session_on_or_before(date(2024, 1, 1)) == date(2023, 12, 29)
    assert latest_session_on_or_before(date(2024, 1, 2)) == date(2024, 1, 2)


def test_sessions_are_exactly_the_weekdays_that_are_not_holidays() -> None:
    start, end = date(2023, 1, 1), date(2024, 12, 31)
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    expected = [d for d in days if d.weekday() < 5 and d not in HOLIDAYS]
    assert [d for d in days if is_session(d)] == expected
    assert next_sessions(date(2022, 12, 31), len(expected)) == expected
    assert len(expected) == 250 + 252  # NYSE sessions in 2023 and 2024


def test_a_forecast_horizon_never_lands_on_a_weekend_or_holiday() -> None:
    for after in pd.date_range("2023-01-01", "2024-12-20", freq="D").date:
        sessions = next_sessions(after, 4)
        assert len(sessions) == 4 and sessions == sorted(set(sessions))
        assert sessions[0] > after
        assert all(d.weekday() < 5 and d not in HOLIDAYS for d in sessions)


def test_datetimes_and_timestamps_are_taken_by_their_date() -> None:
    assert is_session(datetime(2024, 1, 2, 15, 30))
    assert is_session(pd.Timestamp("2024-01-02"))
    assert next_sessions(pd.Timestamp("2023-12-29 16:00"), 1) == [date(2024, 1, 2)]


def test_dates_outside_the_calendar_raise_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match="1990-01-02 is outside the XNYS calendar"):
        is_session(date(1990, 1, 2))
    with pytest.raises(ValueError, match="outside the XNYS calendar"):
        latest_session_on_or_before(date(2200, 1, 1))
    with pytest.raises(ValueError, match="run past the end of the XNYS calendar"):
        next_sessions(date.today(), 100_000)
    with pytest.raises(ValueError, match="n must be >= 0"):
        next_sessions(date(2023, 1, 3), -1)
    with pytest.raises(ValueError, match="unknown exchange calendar"):
        is_session(date(2023, 1, 3), exchange="NOPE")


def test_other_exchanges_work() -> None:
    assert not is_session(date(2023, 12, 26), exchange="XLON")  # Boxing Day
    assert is_session(date(2023, 12, 26))
