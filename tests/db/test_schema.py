"""Constraints, time zones and the forecast_accuracy view of the migrated schema."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from db.models import (
    RUN_STATUSES,
    RUN_TRIGGERS,
    Candle,
    Forecast,
    ForecastRun,
    ForecastRunTicker,
    ModelVersion,
)
from db.views import forecast_accuracy

AS_OF = date(2024, 1, 2)
TARGET = date(2024, 1, 3)
MISSING = date(2024, 1, 4)


def _run(session: Session, **kwargs: object) -> ForecastRun:
    run = ForecastRun(**{"trigger": "manual", **kwargs})
    session.add(run)
    session.flush()
    return run


def _forecast(run_id: int, horizon: int, target: date, **kwargs: float | None) -> Forecast:
    values: dict[str, float | None] = {"open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0}
    values.update(kwargs)
    return Forecast(
        run_id=run_id,
        ticker="AAPL",
        as_of_date=AS_OF,
        horizon=horizon,
        target_date=target,
        **values,
    )


def _candle(day: date, close: float) -> Candle:
    return Candle(
        ticker="AAPL",
        session_date=day,
        open=close - 1,
        high=close + 2,
        low=close - 2,
        close=close,
        volume=1000.0,
        source="test",
    )


def test_forecast_accuracy_view(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        session.add_all([_candle(AS_OF, 100.0), _candle(TARGET, 103.5)])
        run = _run(session)
        session.add_all(
            [
                _forecast(run.id, 1, TARGET, close=102.25, close_lo=101.0, close_hi=104.0),
                _forecast(run.id, 2, TARGET, close=105.0, close_lo=104.0, close_hi=106.0),
                _forecast(run.id, 3, TARGET, close=103.5, close_lo=None, close_hi=None),
                _forecast(run.id, 4, MISSING, close=99.0, close_lo=98.0, close_hi=100.0),
            ]
        )
    with session_factory() as session:
        rows = {
            r.horizon: r
            for r in session.execute(select(forecast_accuracy).order_by("horizon")).mappings()
        }
    assert sorted(rows) == [1, 2, 3, 4]
    hit, miss, no_interval, unknown = rows[1], rows[2], rows[3], rows[4]

    assert hit["run_id"] == run.id and hit["ticker"] == "AAPL"
    assert (hit["as_of_date"], hit["target_date"]) == (AS_OF, TARGET)
    assert (hit["actual_open"], hit["actual_high"], hit["actual_low"], hit["actual_close"]) == (
        102.5,
        105.5,
        101.5,
        103.5,
    )
    assert hit["abs_error"] == 1.25
    assert hit["naive_close"] == 100.0
    assert hit["naive_abs_error"] == 3.5
    assert hit["in_interval"] == 1

    assert miss["abs_error"] == 1.5
    assert miss["in_interval"] == 0
    assert no_interval["abs_error"] == 0.0
    assert no_interval["in_interval"] is None

    assert unknown["actual_close"] is None
    assert unknown["abs_error"] is None
    assert unknown["naive_close"] == 100.0
    assert unknown["naive_abs_error"] is None
    assert unknown["in_interval"] is None


def test_view_interval_bounds_are_inclusive(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        session.add_all([_candle(AS_OF, 100.0), _candle(TARGET, 103.5)])
        run = _run(session)
        session.add(_forecast(run.id, 1, TARGET, close=103.0, close_lo=103.5, close_hi=103.5))
    with session_factory() as session:
        assert session.scalar(select(forecast_accuracy.c.in_interval)) == 1


def test_run_status_check_constraint(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), session_factory.begin() as session:
        _run(session, status="exploded")


def test_run_trigger_check_constraint(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), session_factory.begin() as session:
        _run(session, trigger="cron")


def test_run_ticker_status_check_constraint(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), session_factory.begin() as session:
        run = _run(session)
        session.add(ForecastRunTicker(run_id=run.id, ticker="AAPL", status="partial"))
        session.flush()


@pytest.mark.parametrize("horizon", [0, 5])
def test_horizon_check_constraint(session_factory: sessionmaker[Session], horizon: int) -> None:
    with pytest.raises(IntegrityError), session_factory.begin() as session:
        run = _run(session)
        session.add(_forecast(run.id, horizon, TARGET))
        session.flush()


def test_valid_statuses_are_accepted(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        for status in RUN_STATUSES:
            for trigger in RUN_TRIGGERS:
                _run(session, status=status, trigger=trigger)
    with session_factory() as session:
        runs = session.scalars(select(ForecastRun)).all()
    assert {(r.status, r.trigger) for r in runs} == {
        (s, t) for s in RUN_STATUSES for t in RUN_TRIGGERS
    }


def test_unique_ticker_as_of_horizon(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        run_id = _run(session).id
        session.add(_forecast(run_id, 1, TARGET))
    duplicate = "uq_forecasts_ticker_asof_horizon|UNIQUE constraint failed: forecasts.ticker"
    with pytest.raises(IntegrityError, match=duplicate), session_factory.begin() as session:
        session.add(_forecast(run_id, 1, TARGET, close=2.0))
    with session_factory.begin() as session:  # another horizon of the same day is fine
        session.add(_forecast(run_id, 2, TARGET, close=2.0))


def test_forecast_requires_existing_run(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), session_factory.begin() as session:
        session.add(_forecast(424242, 1, TARGET))


def test_deleting_a_run_cascades_to_its_tickers(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        run = _run(session)
        session.add(ForecastRunTicker(run_id=run.id, ticker="AAPL"))
    with session_factory.begin() as session:
        session.execute(delete(ForecastRun).where(ForecastRun.id == run.id))
    with session_factory() as session:
        assert session.scalars(select(ForecastRunTicker)).all() == []


def test_timezone_aware_datetimes_round_trip(session_factory: sessionmaker[Session]) -> None:
    new_york = timezone(timedelta(hours=-5))
    started = datetime(2024, 1, 2, 18, 30, 15, 123456, tzinfo=new_york)
    with session_factory.begin() as session:
        run_id = _run(session, started_at=started).id
    with session_factory() as session:
        run = session.get(ForecastRun, run_id)
        assert run is not None
        assert run.started_at == started
        assert run.started_at.utcoffset() == timedelta(0)
        assert run.started_at == datetime(2024, 1, 2, 23, 30, 15, 123456, tzinfo=UTC)
        assert run.finished_at is None
        assert run.host and run.pid > 0 and run.status == "running"


def test_naive_datetimes_are_rejected(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(StatementError, match="naive datetime"), session_factory() as session:
        _run(session, started_at=datetime(2024, 1, 2, 18, 30))


def test_model_version_json_and_artifact(session_factory: sessionmaker[Session]) -> None:
    blob = bytes(range(256)) * 4
    with session_factory.begin() as session:
        session.execute(
            insert(ModelVersion).values(
                ticker="AAPL",
                train_start=date(2019, 1, 2),
                train_end=date(2023, 12, 29),
                hyperparameters={"units": 4, "window": 60},
                normalization={"mean": [1.5, 2.5], "std": [0.5, 0.25]},
                calibration={"version": 2, "blend": [0.5, 0.25, 0.0, 1.0]},
                metrics={"val_mae": 1.25},
                artifact=blob,
                artifact_sha256="0" * 64,
                keras_version="3.3.3",
                tensorflow_version="2.16.1",
            )
        )
    with session_factory() as session:
        version = session.scalars(select(ModelVersion)).one()
        assert version.normalization == {"mean": [1.5, 2.5], "std": [0.5, 0.25]}
        assert version.calibration == {"version": 2, "blend": [0.5, 0.25, 0.0, 1.0]}
        assert version.artifact == blob
        assert version.created_at.tzinfo is not None
