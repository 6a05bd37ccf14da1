"""Model, training, forecasting and artifacts with a tiny network (units 4, 1-2 epochs)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from datetime import date  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from forecasting import artifact as A  # noqa: E402
from forecasting.params import ModelParams  # noqa: E402
from forecasting.predict import decode, forecast, forecast_many  # noqa: E402
from forecasting.train import InsufficientHistoryError, required_sessions, train_model  # noqa: E402
from tests.forecasting.test_features import synthetic_candles  # noqa: E402

TINY = ModelParams(window=10, horizon=4, epochs=2, batch_size=32, units=4, patience=1)
BUNDLED = os.path.join(os.path.dirname(__file__), "..", "..", "forecasting", "bundled")


def _prices_valid(p: dict) -> None:
    assert np.isfinite(p["close"]).all()
    for key in ("open", "high", "low", "close", "close_lo", "close_hi"):
        assert (p[key] > 0).all(), key
    assert (p["high"] >= np.maximum(p["open"], p["close"])).all()
    assert (p["low"] <= np.minimum(p["open"], p["close"])).all()
    assert (p["close_lo"] <= p["close"]).all() and (p["close"] <= p["close_hi"]).all()


@pytest.fixture(scope="module")
def real_tail() -> pd.DataFrame:
    raw = pd.read_csv(os.path.join(BUNDLED, "AAPL.csv.gz"), parse_dates=["Date"])
    raw.columns = [c.lower() for c in raw.columns]
    frame = raw.set_index(pd.DatetimeIndex(raw["date"], name="session_date")).drop(columns="date")
    return frame.astype("float64").iloc[-260:]


@pytest.fixture(scope="module")
def trained(real_tail):
    return train_model(real_tail, TINY, ticker="AAPL")


def test_random_weights_and_outputs_decode_to_valid_candles():
    from forecasting import model as M

    rng = np.random.default_rng(3)
    net = M.build_model(10, 7, 4, 4)
    net.set_weights([rng.normal(0, 3, w.shape) for w in net.get_weights()])
    pred, weights = M.infer(net, rng.normal(0, 3, (64, 10, 7)).astype("float32"))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    pred = np.concatenate([pred, rng.normal(0, 5, (64, 4, 6))])
    calibration = {
        "alpha_close": rng.uniform(0, 1, 4),
        "alpha_open": rng.uniform(0, 1, 4),
        "scale_lo": rng.uniform(0, 3, 4),
        "scale_hi": rng.uniform(0, 3, 4),
    }
    pred[64:, :, 2:] = np.abs(pred[64:, :, 2:])  # the network's spreads are softplus >= 0
    prices = decode(pred, rng.uniform(1, 500, 128), rng.uniform(0.005, 0.08, 128), calibration)
    _prices_valid(prices)


def test_untrained_model_is_the_naive_forecast():
    from forecasting import model as M

    net = M.build_model(10, 7, 4, 4)
    pred, _ = M.infer(net, np.random.default_rng(0).normal(size=(5, 10, 7)).astype("float32"))
    assert np.all(pred[..., :2] == 0.0)


def test_forecast_dates_candles_and_attention(trained, real_tail):
    result = forecast(trained, real_tail)
    assert result.as_of == date(2023, 12, 29)
    assert [c.date for c in result.candles] == [date(2024, 1, d) for d in (2, 3, 4, 5)]
    assert [c.horizon for c in result.candles] == [1, 2, 3, 4]
    _prices_valid(
        {
            k: np.array([getattr(c, k) for c in result.candles])
            for k in ("open", "high", "low", "close", "close_lo", "close_hi")
        }
    )
    assert len(result.attention) == len(result.attention_dates) == TINY.window
    assert result.attention_dates[-1] == date(2023, 12, 29)
    assert sum(result.attention) == pytest.approx(1.0, abs=1e-5)
    assert {"epochs_run", "val_mae_ratio_vs_naive", "train_seconds"} <= set(trained.metrics)


def test_forecast_ignores_rows_after_as_of(trained, real_tail):
    as_of = real_tail.index[-20].date()
    base = forecast(trained, real_tail.iloc[:-19])
    changed = real_tail.copy()
    changed.iloc[-19:, :4] *= 2.0
    again = forecast(trained, changed, as_of=as_of)
    assert again.as_of == base.as_of == as_of
    assert again.candles == base.candles and again.attention == base.attention


def test_training_ignores_rows_after_as_of(real_tail):
    as_of = real_tail.index[-30].date()
    a = train_model(real_tail.iloc[:-29], TINY, ticker="X")
    changed = real_tail.copy()
    changed.iloc[-29:, :4] *= 2.0
    b = train_model(changed, TINY, ticker="X", as_of=as_of)
    assert a.train_end == b.train_end == as_of
    assert a.normalization == b.normalization
    fa, fb = forecast(a, real_tail, as_of=as_of), forecast(b, real_tail, as_of=as_of)
    for x, y in zip(fa.candles, fb.candles, strict=True):
        assert x.close == pytest.approx(y.close, rel=1e-4)


def test_save_load_round_trip_gives_identical_forecasts(trained, real_tail):
    record = A.trained_to_record(trained)
    assert record["artifact_sha256"] == A.sha256_hex(record["artifact"])
    assert "calibration" in record["normalization"]
    loaded = A.trained_from_record(record)
    assert loaded.params == trained.params and loaded.calibration == trained.calibration
    a, b = forecast(trained, real_tail), forecast(loaded, real_tail)
    assert a.candles == b.candles
    np.testing.assert_allclose(a.attention, b.attention, rtol=0, atol=0)
    both = forecast_many([(trained, real_tail), (loaded, real_tail)])
    assert both[0].candles == both[1].candles == a.candles


def test_sha_mismatch_and_lambda_layers_are_refused(trained):
    import keras

    data = A.model_to_bytes(trained.model)
    with pytest.raises(ValueError, match="sha256"):
        A.model_from_bytes(data, expected_sha256="0" * 64)
    inputs = keras.Input((3,))
    unsafe = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2.0)(inputs))
    with pytest.raises(ValueError, match="(?i)lambda|unsafe|safe_mode"):
        A.model_from_bytes(A.model_to_bytes(unsafe))


def test_insufficient_history_is_a_clear_value_error(trained, real_tail):
    needed = required_sessions(TINY)
    short = synthetic_candles(needed - 1)
    with pytest.raises(InsufficientHistoryError, match=f"{needed}.*{needed - 1} available"):
        train_model(short, TINY, ticker="SHORT")
    assert issubclass(InsufficientHistoryError, ValueError)
    with pytest.raises(InsufficientHistoryError, match="available"):
        forecast(trained, real_tail.iloc[:30])


def test_two_runs_give_close_forecasts(trained, real_tail):
    again = train_model(real_tail, TINY, ticker="AAPL")
    a, b = forecast(trained, real_tail), forecast(again, real_tail)
    for x, y in zip(a.candles, b.candles, strict=True):
        assert x.close == pytest.approx(y.close, rel=1e-3)
        assert x.close_hi == pytest.approx(y.close_hi, rel=1e-3)
