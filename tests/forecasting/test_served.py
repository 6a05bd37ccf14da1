"""The served model through the one forecast path: a stored version round-trips to the same
forecast, unusable versions are refused with a clear reason, rows after the as-of date are never
read, and a bad price never reaches the database."""

from __future__ import annotations

import math
from datetime import date

import pandas as pd
import pytest

from forecasting import artifact as A
from forecasting.forecast_path import UseModel, forecast_set
from forecasting.forecast_set import Forecast, ForecastCandle
from forecasting.global_net import fit_global
from forecasting.global_serve import ticker_models
from forecasting.params import ModelParams
from forecasting.providers import BundledProvider
from forecasting.train import InsufficientHistoryError

TINY = ModelParams(window=10, epochs=1, warm_epochs=1, units=4, patience=1, max_windows=600)
AS_OF = date(2021, 6, 30)

# What a per-ticker network of an older candlecast stored as its calibration.
PER_TICKER_CALIBRATION = {
    "version": 2,
    "blend": [0.0] * 4,
    "range_from": ["har_range"] * 4,
}


@pytest.fixture(scope="module")
def candles() -> dict[str, pd.DataFrame]:
    provider = BundledProvider()
    return {t: provider.fetch(t, date(2019, 1, 1), date(2021, 12, 31)) for t in ("AAPL", "MSFT")}


@pytest.fixture(scope="module")
def fitted(candles):
    histories = {t: c.loc[: pd.Timestamp(AS_OF)] for t, c in candles.items()}
    fit = fit_global(histories, TINY)
    return fit, ticker_models(fit, histories)


@pytest.fixture(scope="module")
def record(fitted):
    fit, models = fitted
    return A.trained_to_record(models["AAPL"], artifact=A.model_to_bytes(fit.network))


@pytest.mark.slow
def test_a_stored_version_round_trips_to_the_same_forecast(fitted, record, candles) -> None:
    trained = fitted[1]["AAPL"]
    assert record["artifact_sha256"] == A.sha256_hex(record["artifact"])
    assert record["calibration"] == trained.calibration
    assert "calibration" not in record["normalization"]
    loaded = A.usable_from_record(record)
    assert loaded.params == trained.params and loaded.calibration == trained.calibration
    a = forecast_set("AAPL", AS_OF, UseModel(trained), candles=candles["AAPL"])
    b = forecast_set("AAPL", AS_OF, UseModel(loaded), candles=candles["AAPL"])
    assert a.candles == b.candles and a.attention == b.attention
    assert [c.date for c in a.candles] == [
        date(2021, 7, 1),
        date(2021, 7, 2),
        date(2021, 7, 6),  # the exchange calendar: 5 July 2021 was a holiday
        date(2021, 7, 7),
    ]
    a.check_finite()
    for c in a.candles:
        assert c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high
        assert c.close_lo <= c.close <= c.close_hi and list(c.quantiles) == sorted(c.quantiles)


@pytest.mark.slow
def test_rows_after_the_as_of_date_are_never_read(fitted, candles) -> None:
    trained = fitted[1]["AAPL"]
    full = forecast_set("AAPL", AS_OF, UseModel(trained), candles=candles["AAPL"])
    changed = candles["AAPL"].copy()
    changed.loc[changed.index > pd.Timestamp(AS_OF), ["open", "high", "low", "close"]] *= 3.0
    again = forecast_set("AAPL", AS_OF, UseModel(trained), candles=changed)
    assert again.candles == full.candles


@pytest.mark.slow
def test_the_policy_must_give_the_tickers_own_model(fitted, candles) -> None:
    with pytest.raises(ValueError, match="gave AAPL's model for MSFT"):
        forecast_set("MSFT", AS_OF, UseModel(fitted[1]["AAPL"]), candles=candles["MSFT"])


@pytest.mark.slow
def test_too_short_a_history_is_a_clear_value_error(fitted, candles) -> None:
    short = candles["AAPL"].loc[: pd.Timestamp(AS_OF)].iloc[-30:]
    with pytest.raises(InsufficientHistoryError, match=r"at least \d+ sessions.*30 available"):
        forecast_set("AAPL", AS_OF, UseModel(fitted[1]["AAPL"]), candles=short)
    assert issubclass(InsufficientHistoryError, ValueError)


@pytest.mark.slow
def test_unusable_versions_are_refused_with_the_reason(record) -> None:
    old = {**record, "calibration": PER_TICKER_CALIBRATION}
    with pytest.raises(A.UnusableModelError, match="older candlecast.*per-ticker.*retrain"):
        A.usable_from_record(old)
    with pytest.raises(A.UnusableModelError, match="malformed.*no calibration stored; retrain"):
        A.usable_from_record({**record, "calibration": None})
    with pytest.raises(A.UnusableModelError, match="malformed: KeyError: 'calibration'"):
        A.usable_from_record({k: v for k, v in record.items() if k != "calibration"})
    with pytest.raises(A.UnusableModelError, match="sha256"):
        A.usable_from_record({**record, "artifact_sha256": "0" * 64})


@pytest.mark.slow
def test_lambda_layers_are_refused() -> None:
    import keras

    inputs = keras.Input((3,))
    unsafe = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2.0)(inputs))
    with pytest.raises(ValueError, match="(?i)lambda|unsafe|safe_mode"):
        A.model_from_bytes(A.model_to_bytes(unsafe))


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.0, -1.0])
def test_a_served_forecast_with_a_bad_price_is_refused(bad: float) -> None:
    """Forecast.check_finite (called by the nightly task before anything is stored) refuses a
    non-finite or non-positive price, in the candle or in its quantiles."""

    def forecast(**change: float) -> Forecast:
        values = {"open": 10.0, "high": 11.0, "low": 9.0, "close": 10.0}
        values |= {"close_lo": 9.5, "close_hi": 10.5, **change}
        candle = ForecastCandle(date(2024, 1, 2), 1, **values, quantiles=(9.0, 9.5, 10.0))
        return Forecast("AAPL", date(2023, 12, 29), [candle], [], [])

    forecast().check_finite()  # a valid one passes
    for key in ("open", "high", "low", "close", "close_lo", "close_hi"):
        with pytest.raises(ValueError, match="non-finite or non-positive price; not stored"):
            forecast(**{key: bad}).check_finite()
    quantiles = ForecastCandle(date(2024, 1, 2), 1, 10.0, 11.0, 9.0, 10.0, 9.5, 10.5, (bad,))
    with pytest.raises(ValueError, match="non-finite or non-positive"):
        Forecast("AAPL", date(2023, 12, 29), [quantiles], [], []).check_finite()
