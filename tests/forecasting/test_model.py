"""Model, training, forecasting and artifacts with a tiny network (units 4, 1-2 epochs)."""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
from datetime import date

import numpy as np
import pandas as pd
import pytest

from forecasting import artifact as A
from forecasting import calibration as C
from forecasting.params import ModelParams
from forecasting.predict import decode, forecast, forecast_many
from forecasting.range_model import HarRange
from forecasting.train import (
    MIN_CAL_WINDOWS,
    InsufficientHistoryError,
    required_sessions,
    train_model,
)
from tests.forecasting.test_features import synthetic_candles

TINY = ModelParams(window=10, horizon=4, epochs=2, batch_size=32, units=4, patience=1)
BUNDLED = os.path.join(os.path.dirname(__file__), "..", "..", "forecasting", "bundled")


def _prices_valid(p: dict) -> None:
    assert np.isfinite(p["close"]).all()
    for key in ("open", "high", "low", "close", "close_lo", "close_hi"):
        assert (p[key] > 0).all(), key
    assert (p["high"] >= np.maximum(p["open"], p["close"])).all()
    assert (p["low"] <= np.minimum(p["open"], p["close"])).all()
    assert (p["close_lo"] <= p["close"]).all() and (p["close"] <= p["close_hi"]).all()
    if "quantiles" in p:
        assert np.isfinite(p["quantiles"]).all() and (p["quantiles"] > 0).all()
        assert (np.diff(p["quantiles"], axis=-1) >= 0).all()  # the quantiles never cross


# What a model version trained before close quantiles stored as its calibration.
OLD_CALIBRATION = {
    "alpha_close": [0.0] * 4,
    "alpha_open": [0.0] * 4,
    "scale_lo": [1.0] * 4,
    "scale_hi": [1.0] * 4,
}


def _har_paths(n: int, seed: int):
    """HAR-range CandlePaths for n as-of rows of synthetic candles, and their last closes."""
    candles = synthetic_candles(n + 150, seed=seed)
    rows = np.arange(150, n + 150)
    har = HarRange(horizon=4)
    fitted = har.fit(candles.iloc[:150])
    return har.predict_rows(fitted, candles, rows), candles["close"].to_numpy()[rows], fitted


@pytest.fixture(scope="module")
def real_tail() -> pd.DataFrame:
    raw = pd.read_csv(os.path.join(BUNDLED, "AAPL.csv.gz"), parse_dates=["Date"])
    raw.columns = [c.lower() for c in raw.columns]
    frame = raw.set_index(pd.DatetimeIndex(raw["date"], name="session_date")).drop(columns="date")
    return frame.astype("float64").iloc[-260:]


@pytest.fixture(scope="module")
def trained(real_tail):
    return train_model(real_tail, TINY, ticker="AAPL")


@pytest.fixture(scope="module")
def record(trained):
    return A.trained_to_record(trained)


def test_random_weights_and_outputs_decode_to_valid_candles():
    from forecasting import model as M

    rng = np.random.default_rng(3)
    net = M.build_model(10, 7, 4, 4)
    net.set_weights([rng.normal(0, 3, w.shape) for w in net.get_weights()])
    pred, weights = M.infer(net, rng.normal(0, 3, (64, 10, 7)).astype("float32"))
    assert pred.shape == (64, 4, M.N_OUTPUTS)
    assert (pred[..., 2:] >= 0).all()  # spreads and quantile gaps are softplus
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    extra = rng.normal(0, 5, (64, 4, M.N_OUTPUTS))
    extra[..., 2:] = np.abs(extra[..., 2:])  # the network's spreads are softplus >= 0
    pred = np.concatenate([pred, extra])
    har, close0, fitted = _har_paths(128, seed=5)
    sigma = rng.uniform(0.005, 0.08, 128)
    for range_from in (["lstm"] * 4, ["har_range"] * 4, ["lstm", "har_range"] * 2):
        calibration = {
            "version": C.CALIBRATION_VERSION,
            "alpha_close": rng.uniform(0, 1, 4).tolist(),
            "alpha_open": rng.uniform(0, 1, 4).tolist(),
            "q_scale": rng.uniform(0, 3, (4, 7)).tolist(),
            "blend": rng.choice(C.BLEND_GRID, 4).tolist(),
            "range_from": range_from,
            "har_range": fitted,
        }
        prices = decode(pred, close0, sigma, calibration, har)
        assert prices["quantiles"].shape == (128, 4, 7)
        _prices_valid(prices)


def test_blend_weight_zero_serves_har_quantiles_and_one_serves_the_network_with_the_median_close():
    rng = np.random.default_rng(8)
    pred = np.abs(rng.normal(0, 1, (20, 4, 10)))
    pred[..., :2] = rng.normal(0, 1, (20, 4, 2))
    har, close0, fitted = _har_paths(20, seed=2)
    sigma = rng.uniform(0.01, 0.03, 20)
    calibration = {
        "version": C.CALIBRATION_VERSION,
        "alpha_close": [0.0, 1.0, 0.0, 1.0],
        "alpha_open": [0.0] * 4,
        "q_scale": np.ones((4, 7)).tolist(),
        "blend": [0.0, 0.0, 1.0, 1.0],
        "range_from": ["har_range"] * 4,
        "har_range": fitted,
    }
    prices = decode(pred, close0, sigma, calibration, har)
    np.testing.assert_allclose(prices["quantiles"][:, :2], har.quantiles[:, :2], rtol=1e-12)
    network = C.lstm_log_quantiles(pred, sigma, calibration)[:, 2:]
    np.testing.assert_allclose(prices["quantiles"][:, 2:], close0[:, None, None] * np.exp(network))
    # one centre: the served close is the served median (q50) whatever alpha_close says
    np.testing.assert_array_equal(prices["close"], prices["quantiles"][..., C.MEDIAN])
    assert not np.allclose(prices["close"][:, 0], close0)  # not the last close
    np.testing.assert_allclose(prices["high"], np.maximum(har.high, prices["close"]))


def test_old_calibration_is_a_clear_value_error():
    pred = np.zeros((1, 4, 10))
    har, close0, _ = _har_paths(1, seed=0)
    sigma = np.array([0.02])
    for call in (decode, C.serve):
        with pytest.raises(ValueError, match="older candlecast.*retrain"):
            call(pred, close0, sigma, OLD_CALIBRATION, har)


@pytest.mark.slow
def test_old_calibration_is_a_clear_value_error_from_forecast(trained, record, real_tail):
    with pytest.raises(ValueError, match="older candlecast.*retrain"):
        forecast(dataclasses.replace(trained, calibration=OLD_CALIBRATION), real_tail)
    # the same through a stored model version
    stored = {**record, "calibration": dict(OLD_CALIBRATION)}
    with pytest.raises(ValueError, match="older candlecast.*retrain"):
        forecast(A.trained_from_record(stored), real_tail)


def test_a_version_without_calibration_is_unusable_with_a_clear_error(record):
    """A NULL model_versions.calibration (a row stored without one) never serves."""
    with pytest.raises(A.UnusableModelError, match="malformed.*no calibration stored; retrain"):
        A.usable_from_record({**record, "calibration": None})
    with pytest.raises(A.UnusableModelError, match="malformed: KeyError: 'calibration'"):
        A.usable_from_record({k: v for k, v in record.items() if k != "calibration"})


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
    assert {"val_coverage_80", "val_winkler80_vs_har", "attention_entropy"} <= set(trained.metrics)
    for c in result.candles:
        assert len(c.quantiles) == 7 and list(c.quantiles) == sorted(c.quantiles)
        assert c.close_lo <= c.quantiles[3] <= c.close_hi
    assert set(result.model_mix) == {"close", "quantiles", "range"}


def test_training_blocks_and_calibration(trained, real_tail):
    from forecasting import features as F

    m = trained.metrics
    windows = len(real_tail) - F.first_valid_end(TINY.window) - TINY.horizon
    assert m["n_train"] + m["n_val"] + m["n_cal"] + 2 * TINY.horizon == windows
    assert m["n_cal"] >= MIN_CAL_WINDOWS
    cal = trained.calibration
    assert cal["version"] == C.CALIBRATION_VERSION
    assert np.asarray(cal["q_scale"]).shape == (4, 7)
    assert all(len(cal[k]) == 4 for k in ("alpha_close", "alpha_open", "blend", "range_from"))
    assert set(cal["range_from"]) <= {"lstm", "har_range"}
    assert set(cal["blend"]) <= set(C.BLEND_GRID)
    assert set(cal["har_range"]) >= {"beta", "z", "up", "down"}
    for key in ("val_coverage_50", "val_coverage_80", "val_coverage_90"):
        assert len(m[key]) == 4 and all(0.0 <= x <= 1.0 for x in m[key])
    assert 0.0 < m["attention_entropy"] <= 1.0


def test_forecast_ignores_rows_after_as_of(trained, real_tail):
    as_of = real_tail.index[-20].date()
    base = forecast(trained, real_tail.iloc[:-19])
    changed = real_tail.copy()
    changed.iloc[-19:, :4] *= 2.0
    again = forecast(trained, changed, as_of=as_of)
    assert again.as_of == base.as_of == as_of
    assert again.candles == base.candles and again.attention == base.attention


@pytest.mark.slow
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


def test_save_load_round_trip_gives_identical_forecasts(trained, record, real_tail):
    assert record["artifact_sha256"] == A.sha256_hex(record["artifact"])
    assert record["calibration"] == trained.calibration
    assert "calibration" not in record["normalization"]
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


@pytest.mark.slow
def test_two_runs_give_close_forecasts(trained, real_tail):
    again = train_model(real_tail, TINY, ticker="AAPL")
    a, b = forecast(trained, real_tail), forecast(again, real_tail)
    for x, y in zip(a.candles, b.candles, strict=True):
        assert x.close == pytest.approx(y.close, rel=1e-3)
        assert x.close_hi == pytest.approx(y.close_hi, rel=1e-3)


def test_attention_ablation_gives_uniform_weights_and_round_trips(tmp_path):
    import keras

    from forecasting import model as M

    net = M.build_model(10, 7, 4, 4, attention=False)
    x = np.random.default_rng(1).normal(size=(3, 10, 7)).astype("float32")
    _, weights = M.infer(net, x)
    np.testing.assert_allclose(weights, np.full((3, 10), 0.1), rtol=1e-6)
    assert not net.get_layer("attention").weights  # nothing to learn in the ablation
    path = tmp_path / "ablated.keras"
    net.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.get_layer("attention").uniform
    np.testing.assert_allclose(M.infer(loaded, x)[0], M.infer(net, x)[0], rtol=1e-6)
    learnt = M.build_model(10, 7, 4, 4)
    assert len(learnt.get_layer("attention").weights) == 4


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.0, -1.0])
def test_a_served_forecast_with_a_bad_price_is_refused(bad: float) -> None:
    """Forecast.check_finite (called by the nightly task before anything is stored) refuses a
    non-finite or non-positive price, in the candle or in its quantiles."""
    from forecasting.predict import Forecast, ForecastCandle

    def forecast(**change: float) -> Forecast:
        values = {"open": 10.0, "high": 11.0, "low": 9.0, "close": 10.0}
        values |= {"close_lo": 9.5, "close_hi": 10.5, **change}
        candle = ForecastCandle(date(2024, 1, 2), 1, **values, quantiles=(9.0, 9.5, 10.0))
        return Forecast("AAPL", date(2023, 12, 29), [candle], [], [])

    forecast().check_finite()  # a valid one passes
    for key in ("open", "high", "low", "close", "close_lo", "close_hi"):
        with pytest.raises(ValueError, match="non-finite or non-positive price; not stored"):
            forecast(**{key: bad}).check_finite()
