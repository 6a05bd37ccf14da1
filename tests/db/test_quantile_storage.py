"""Close quantiles, model_mix and baseline forecasts: write path and the accuracy views' scores.

Expected scores are computed by hand from the Winkler interval score:
(hi - lo) + 2/alpha * (lo - actual) below, + 2/alpha * (actual - hi) above, alpha = 0.5/0.2/0.1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db import runs
from db.models import QUANTILE_COLUMNS, BaselineForecast, Candle, Forecast
from db.views import baseline_accuracy, forecast_accuracy
from forecasting.forecast_set import ForecastCandle

AS_OF = date(2024, 1, 2)
TARGET = date(2024, 1, 3)
MISSING = date(2024, 1, 4)  # no candle: the actual is not known yet
MIX = {"close": "naive", "quantiles": {"har_range": 0.7, "lstm": 0.3}, "range": "har_range"}


def _candle(day: date, *, open: float, high: float, low: float, close: float) -> Candle:
    return Candle(
        ticker="AAPL",
        session_date=day,
        open=open,
        high=high,
        low=low,
        close=close,
        volume=1000.0,
        source="test",
    )


def _row(
    horizon: int,
    target: date,
    *,
    close: float,
    lo: float | None,
    hi: float | None,
    quantiles: tuple[float, ...] = (),
    high: float = 110.0,
    low: float = 95.0,
) -> runs.ForecastRow:
    return runs.ForecastRow(
        horizon=horizon,
        target_date=target,
        open=close,
        high=high,
        low=low,
        close=close,
        close_lo=lo,
        close_hi=hi,
        quantiles=quantiles,
    )


# Actual close on TARGET is 103.5 (high 105.5, low 101.5).
ABOVE = _row(  # above the 50% and 80% intervals, inside the 90% one
    1,
    TARGET,
    close=102.5,
    lo=101.0,
    hi=103.0,
    quantiles=(100.0, 101.0, 102.0, 102.5, 102.75, 103.0, 104.0),
    high=104.0,
    low=100.25,
)
BELOW = _row(  # below every interval
    2,
    TARGET,
    close=105.0,
    lo=104.5,
    hi=106.0,
    quantiles=(104.0, 104.5, 104.75, 105.0, 105.5, 106.0, 106.5),
)
NO_QUANTILES = _row(3, TARGET, close=103.5, lo=103.0, hi=104.0)  # a model without quantiles
UNKNOWN = _row(
    4, MISSING, close=103.0, lo=102.0, hi=104.0, quantiles=(101, 102, 102.5, 103, 103.5, 104, 105)
)
ROWS = (ABOVE, BELOW, NO_QUANTILES, UNKNOWN)


def _seed_candles(session: Session) -> None:
    session.add_all(
        [
            _candle(AS_OF, open=99.0, high=101.0, low=98.0, close=100.0),
            _candle(TARGET, open=102.5, high=105.5, low=101.5, close=103.5),
        ]
    )


def _forecasts(
    factory: sessionmaker[Session],
    rows: Sequence[runs.ForecastRow],
    *,
    candles: bool = False,
    model_mix: dict[str, Any] | None = None,
) -> None:
    """Store `rows` as AAPL's forecast set as of AS_OF in a new run (after the candles of
    AS_OF and TARGET when `candles`)."""
    with factory.begin() as session:
        if candles:
            _seed_candles(session)
        run_id = runs.start_run(session, trigger="manual").id
        runs.replace_forecasts(
            session,
            run_id=run_id,
            ticker="AAPL",
            as_of_date=AS_OF,
            rows=rows,
            model_version_id=None,
            model_mix=model_mix,
        )


def _view_rows(factory: sessionmaker[Session], view: Any, *where: Any) -> dict[int, Any]:
    with factory() as session:
        stmt = select(view).where(*where).order_by(view.c.horizon)
        found = session.execute(stmt).mappings().all()
    return {row["horizon"]: row for row in found}


def test_quantiles_and_model_mix_round_trip(session_factory: sessionmaker[Session]) -> None:
    _forecasts(session_factory, ROWS, model_mix=MIX)
    with session_factory() as session:
        stored = {f.horizon: f for f in session.scalars(select(Forecast))}
        assert sorted(stored) == [1, 2, 3, 4]
        for row in ROWS:
            values = tuple(getattr(stored[row.horizon], c) for c in QUANTILE_COLUMNS)
            assert values == (row.quantiles or (None,) * 7)
        assert all(f.model_mix == MIX for f in stored.values())
        # model_mix is a JSON object in the database, queryable without the ORM as well
        assert session.scalar(select(func.count()).where(Forecast.model_mix.is_(None))) == 0
    view = _view_rows(session_factory, forecast_accuracy)
    assert view[1]["model_mix"] == MIX
    assert view[1]["close_q25"] == 102.0 and view[3]["close_q50"] is None


def test_without_model_mix_the_column_is_sql_null(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        run_id = runs.start_run(session, trigger="manual").id
        for ticker, mix in (("AAPL", None), ("MSFT", {})):
            runs.replace_forecasts(
                session,
                run_id=run_id,
                ticker=ticker,
                as_of_date=AS_OF,
                rows=[replace(NO_QUANTILES, horizon=1)],
                model_version_id=None,
                model_mix=mix,
            )
    with session_factory() as session:
        # SQL NULL, not JSON 'null': `model_mix IS NULL` finds forecasts without a mix
        assert session.scalar(select(func.count()).where(Forecast.model_mix.is_(None))) == 2


def test_forecast_accuracy_interval_scores(session_factory: sessionmaker[Session]) -> None:
    _forecasts(session_factory, ROWS, candles=True)
    rows = _view_rows(session_factory, forecast_accuracy)
    above, below, plain, unknown = rows[1], rows[2], rows[3], rows[4]
    approx = pytest.approx

    # 80%: [101, 103], actual 103.5 above: 2 + 10 * 0.5
    assert above["in_interval"] == 0 and above["winkler_80"] == approx(7.0)
    # 50%: [102, 102.75]: 0.75 + 4 * 0.75
    assert above["in_interval_50"] == 0 and above["winkler_50"] == approx(3.75)
    # 90%: [100, 104] holds 103.5: the width only
    assert above["in_interval_90"] == 1 and above["winkler_90"] == approx(4.0)
    assert above["high_abs_error"] == approx(1.5)  # |104 - 105.5|
    assert above["low_abs_error"] == approx(1.25)  # |100.25 - 101.5|
    assert above["abs_error"] == approx(1.0) and above["naive_abs_error"] == approx(3.5)

    # below: 80% [104.5, 106]: 1.5 + 10 * 1; 50% [104.75, 105.5]: 0.75 + 4 * 1.25;
    # 90% [104, 106.5]: 2.5 + 20 * 0.5
    assert (below["in_interval"], below["in_interval_50"], below["in_interval_90"]) == (0, 0, 0)
    assert below["winkler_80"] == approx(11.5)
    assert below["winkler_50"] == approx(5.75)
    assert below["winkler_90"] == approx(12.5)

    # no quantiles: the 80% interval from close_lo/close_hi still scores, 50/90 are NULL
    assert plain["in_interval"] == 1 and plain["winkler_80"] == approx(1.0)
    for key in ("in_interval_50", "in_interval_90", "winkler_50", "winkler_90"):
        assert plain[key] is None

    # actual unknown: every score NULL
    for key in (
        "in_interval",
        "in_interval_50",
        "in_interval_90",
        "winkler_50",
        "winkler_80",
        "winkler_90",
        "high_abs_error",
        "low_abs_error",
    ):
        assert unknown[key] is None, key
    assert unknown["close_q95"] == 105.0


def test_interval_bounds_are_inclusive(session_factory: sessionmaker[Session]) -> None:
    on_the_bounds = _row(
        1,
        TARGET,
        close=103.5,
        lo=103.5,
        hi=103.5,
        quantiles=(103.5, 103.5, 103.5, 103.5, 103.5, 103.5, 103.5),
    )
    _forecasts(session_factory, [on_the_bounds], candles=True)
    row = _view_rows(session_factory, forecast_accuracy)[1]
    assert (row["in_interval_50"], row["in_interval"], row["in_interval_90"]) == (1, 1, 1)
    assert (row["winkler_50"], row["winkler_80"], row["winkler_90"]) == (0.0, 0.0, 0.0)


def _baselines(
    factory: sessionmaker[Session], model: str, rows: list[runs.ForecastRow], run_id: int
) -> None:
    with factory.begin() as session:
        runs.replace_baseline_forecasts(
            session, run_id=run_id, ticker="AAPL", as_of_date=AS_OF, model=model, rows=rows
        )


def _stored_baselines(factory: sessionmaker[Session]) -> list[tuple[Any, ...]]:
    with factory() as session:
        found = session.scalars(
            select(BaselineForecast).order_by(BaselineForecast.model, BaselineForecast.horizon)
        )
        return [
            (b.model, b.horizon, b.run_id, b.close, b.close_lo, b.close_q05, b.close_q95)
            for b in found
        ]


def test_replace_baseline_forecasts_is_idempotent(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        first = runs.start_run(session, trigger="manual").id
        second = runs.start_run(session, trigger="manual").id
    naive = [replace(NO_QUANTILES, horizon=1)]
    _baselines(session_factory, "garch", list(ROWS), first)
    _baselines(session_factory, "naive", naive, first)
    once = _stored_baselines(session_factory)
    assert len(once) == 5
    _baselines(session_factory, "garch", list(ROWS), first)
    _baselines(session_factory, "naive", naive, first)
    assert _stored_baselines(session_factory) == once

    # a new set for the same ticker, date and model replaces that model's rows only
    _baselines(session_factory, "garch", [replace(BELOW, horizon=1)], second)
    assert _stored_baselines(session_factory) == [
        ("garch", 1, second, 105.0, 104.5, 104.0, 106.5),
        ("naive", 1, first, 103.5, 103.0, None, None),
    ]
    with session_factory() as session:  # the model's own forecasts table is not involved
        assert session.scalar(select(func.count()).select_from(Forecast)) == 0


def test_baseline_unique_per_ticker_date_horizon_model(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory.begin() as session:
        run_id = runs.start_run(session, trigger="manual").id
    _baselines(session_factory, "ewma", [ABOVE], run_id)
    duplicate = BaselineForecast(
        run_id=run_id,
        ticker="AAPL",
        as_of_date=AS_OF,
        horizon=1,
        target_date=TARGET,
        model="ewma",
        close=1.0,
    )
    with pytest.raises(IntegrityError), session_factory.begin() as session:
        session.add(duplicate)
    with pytest.raises(ValueError, match="horizons"), session_factory.begin() as session:
        runs.replace_baseline_forecasts(
            session, run_id=run_id, ticker="AAPL", as_of_date=AS_OF, model="ewma", rows=[BELOW]
        )


def test_baseline_accuracy_view(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        _seed_candles(session)
        run_id = runs.start_run(session, trigger="manual").id
    _baselines(session_factory, "garch", list(ROWS), run_id)
    _baselines(session_factory, "naive", [replace(NO_QUANTILES, horizon=1)], run_id)
    rows = _view_rows(session_factory, baseline_accuracy, baseline_accuracy.c.model == "garch")
    assert sorted(rows) == [1, 2, 3, 4]
    above, below = rows[1], rows[2]
    assert above["model"] == "garch" and above["run_id"] == run_id
    assert (above["actual_close"], above["naive_close"]) == (103.5, 100.0)
    assert above["winkler_80"] == pytest.approx(7.0)
    assert above["winkler_50"] == pytest.approx(3.75)
    assert above["winkler_90"] == pytest.approx(4.0)
    assert (above["in_interval_50"], above["in_interval"], above["in_interval_90"]) == (0, 0, 1)
    assert below["winkler_90"] == pytest.approx(12.5)
    assert rows[3]["winkler_50"] is None and rows[4]["winkler_80"] is None
    with session_factory() as session:
        models = session.scalars(select(baseline_accuracy.c.model).distinct()).all()
    assert sorted(models) == ["garch", "naive"]


def test_forecast_row_of_reads_quantiles() -> None:
    qs = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)
    candle = ForecastCandle(TARGET, 1, 4.0, 8.0, 0.5, 4.0, 2.0, 6.0, quantiles=qs)
    assert runs.ForecastRow.of(candle, target_date=TARGET).quantiles == qs
    legacy = ForecastCandle(TARGET, 1, 4.0, 8.0, 0.5, 4.0, 2.0, 6.0)
    assert runs.ForecastRow.of(legacy, target_date=TARGET).quantiles == ()
    plain = SimpleNamespace(
        horizon=1, open=1, high=2, low=0.5, close=1, close_lo=None, close_hi=None
    )
    assert runs.ForecastRow.of(plain, target_date=TARGET).quantiles == ()


def test_forecast_row_of_a_backtest_frame_row() -> None:
    """Backtest rows carry close_q05 .. close_q95 columns; NaN (no quantiles) becomes NULL."""
    base = {"horizon": 1, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.0}
    frame = pd.DataFrame(
        [
            {**base, "close_lo": 0.9, "close_hi": 1.1, **dict.fromkeys(QUANTILE_COLUMNS, 1.0)},
            {**base, "close_lo": math.nan, "close_hi": math.nan},
        ]
    )
    assert frame[list(QUANTILE_COLUMNS)].iloc[1].isna().all()
    with_q, without = (runs.ForecastRow.of(r, target_date=TARGET) for r in frame.itertuples())
    assert with_q.quantiles == (1.0,) * 7
    assert without.quantiles == ()
    assert without.quantile_columns() == dict.fromkeys(QUANTILE_COLUMNS)


def test_forecast_row_rejects_a_partial_quantile_set() -> None:
    with pytest.raises(ValueError, match="7 values"):
        _row(1, TARGET, close=1.0, lo=None, hi=None, quantiles=(1.0, 2.0))
