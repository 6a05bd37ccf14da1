"""HAR-range: the variance proxy by hand, the regression against a plain-numpy refit, and the
calibration of its intervals on simulated candles with volatility regimes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from forecasting.forecaster import log_returns
from forecasting.quantiles import QUANTILE_LEVELS
from forecasting.range_model import FEATURES, WARMUP, HarRange, design_matrix, range_variance
from tests.forecasting.synthetic import assert_valid_prices

GK = 2 * math.log(2) - 1
LOW_VOL, HIGH_VOL, BLOCK = 0.008, 0.024, 60


def frame(o, h, lo, c) -> pd.DataFrame:
    index = pd.bdate_range("2022-01-03", periods=len(c))
    return pd.DataFrame(
        {"open": o, "high": h, "low": lo, "close": c, "volume": np.full(len(c), 1e6)},
        index=index,
        dtype="float64",
    )


def simulate(n: int, seed: int, drift: float = 0.0, steps: int = 24):
    """Candles from a Brownian path per session: an overnight gap (20% of the variance) and
    ``steps`` intraday increments (80%); the daily std alternates LOW_VOL / HIGH_VOL every BLOCK
    sessions, so high and low reflect the regime. ``drift`` is a daily mean in units of the std.
    Returns the candles and the per-session std."""
    rng = np.random.default_rng(seed)
    sigma = np.where((np.arange(n) // BLOCK) % 2 == 0, LOW_VOL, HIGH_VOL)
    night = sigma * math.sqrt(0.2) * rng.standard_normal(n)
    step_sd = sigma[:, None] * math.sqrt(0.8 / steps)
    path = np.cumsum(step_sd * rng.standard_normal((n, steps)) + drift * sigma[:, None] / steps, 1)
    log_close = math.log(100.0) + np.cumsum(night + path[:, -1])
    log_open = log_close - path[:, -1]
    log_high = log_open + np.maximum(path.max(axis=1), 0.0)
    log_low = log_open + np.minimum(path.min(axis=1), 0.0)
    candles = frame(*(np.exp(a) for a in (log_open, log_high, log_low, log_close)))
    return candles, sigma


@pytest.fixture(scope="module")
def regimes():
    return simulate(3000, seed=7)


# --- the variance proxy and the inputs --------------------------------------------------------


def test_range_variance_of_hand_candles():
    c = frame(o=[98.0, 100.0, 102.0], h=[100.0, 105.0, 102.0], lo=[97.0, 98.0, 102.0],
              c=[99.0, 102.0, 102.0])  # fmt: skip
    v = range_variance(c)
    # row 0 has no previous close: no overnight term
    v0 = 0.5 * math.log(100 / 97) ** 2 - GK * math.log(99 / 98) ** 2
    v1 = math.log(100 / 99) ** 2 + 0.5 * math.log(105 / 98) ** 2 - GK * math.log(102 / 100) ** 2
    assert v[0] == pytest.approx(v0, rel=1e-12)
    assert v[1] == pytest.approx(v1, rel=1e-12)
    assert v1 == pytest.approx(1.0e-4 + 23.86e-4 - 0.386 * 3.92e-4, rel=0.01)  # rough, by hand
    assert v[2] == 1e-8  # a flat session with no gap is floored, not log(0)


def test_design_matrix_rows_by_hand(regimes):
    candles = regimes[0].iloc[:200]
    x = design_matrix(candles)
    assert x.shape == (200, len(FEATURES))
    assert np.isnan(x[:WARMUP]).all() and np.isfinite(x[WARMUP:]).all()
    v = range_variance(candles)
    r = log_returns(candles)
    o, h, lo, c = (candles[k].to_numpy() for k in ("open", "high", "low", "close"))
    gk = np.maximum(0.5 * np.log(h / lo) ** 2 - GK * np.log(c / o) ** 2, 1e-8)
    on = np.concatenate([[0.0], np.log(o[1:] / c[:-1]) ** 2]) + 1e-7
    t = 150
    v22 = v[t - 21 : t + 1].mean()
    expected = [
        1.0,
        math.log(v[t]),
        math.log(gk[t]),
        math.log(on[t]),
        math.log(gk[t - 4 : t + 1].mean()),
        math.log(on[t - 4 : t + 1].mean()),
        math.log(gk[t - 21 : t + 1].mean()),
        math.log(on[t - 21 : t + 1].mean()),
        math.log(v[t - 65 : t + 1].mean()),
        np.minimum(r[t - 4 : t + 1], 0.0).sum() / math.sqrt(v22),
    ]
    np.testing.assert_allclose(x[t], expected, rtol=1e-9)
    # causal: the row is the same computed from candles up to t only
    np.testing.assert_allclose(design_matrix(candles.iloc[: t + 1])[t], x[t], rtol=1e-12)


def hand_fit_parts(candles: pd.DataFrame, beta: np.ndarray, horizon: int = 4):
    """Targets by explicit loops over the training rows, and the standardised returns/ranges."""
    v = range_variance(candles)
    c, hi, lo = (candles[k].to_numpy() for k in ("close", "high", "low"))
    x_all = design_matrix(candles)
    rows = [t for t in range(len(c)) if t >= WARMUP and t + horizon < len(c)]
    x = x_all[rows]
    y = np.array([[math.log(v[t + 1 : t + h + 1].mean()) for h in range(1, 5)] for t in rows])
    if beta is None:
        beta = np.linalg.lstsq(x, y, rcond=None)[0]
    pred = np.exp(x @ beta)  # mean variance over the next h sessions
    z = np.array([[math.log(c[t + h] / c[t]) for h in range(1, 5)] for t in rows]) / np.sqrt(
        pred * np.arange(1, 5)
    )
    s1 = np.sqrt(pred[:, :1])
    up = np.array([[math.log(hi[t + h] / c[t]) for h in range(1, 5)] for t in rows]) / s1
    down = np.array([[math.log(lo[t + h] / c[t]) for h in range(1, 5)] for t in rows]) / s1
    return beta, z, up, down


def test_fit_matches_a_plain_numpy_refit(regimes):
    candles = regimes[0].iloc[:400]
    fitted = HarRange().fit(candles)
    beta, z, up, down = hand_fit_parts(candles, None)
    assert fitted["features"] == list(FEATURES)
    np.testing.assert_allclose(np.asarray(fitted["beta"]), beta, rtol=1e-8, atol=1e-10)
    # one ticker: its own z quantiles, no pooling
    np.testing.assert_allclose(
        np.asarray(fitted["z"]), np.quantile(z, QUANTILE_LEVELS, axis=0).T, rtol=1e-8
    )
    np.testing.assert_allclose(fitted["up"], np.median(up, axis=0), rtol=1e-8)
    np.testing.assert_allclose(fitted["down"], np.median(down, axis=0), rtol=1e-8)
    # the log-variance persists: the coefficients on the HAR terms sum to something positive
    assert np.asarray(fitted["beta"])[1:5, 0].sum() > 0.15


def test_predict_rows_by_hand(regimes):
    candles = regimes[0].iloc[:100]
    beta = np.zeros((len(FEATURES), 4))
    beta[0] = math.log(1e-4)  # constant model: mean variance 1e-4, s_h = 0.01 sqrt(h)
    z = np.tile(np.linspace(-2.0, 2.0, 7), (4, 1)) + np.arange(4)[:, None] * 0.1
    fitted = {"beta": beta.tolist(), "z": z.tolist(), "up": [1.0, 1.2, -0.5, 1.6],
              "down": [-1.0, 0.3, -1.4, -1.6]}  # fmt: skip
    p = HarRange().predict_rows(fitted, candles, np.array([80, 99]))
    for i, row in enumerate((80, 99)):
        c0 = candles["close"].iloc[row]
        s = 0.01 * np.sqrt(np.arange(1, 5))
        np.testing.assert_allclose(p.quantiles[i], c0 * np.exp(s[:, None] * z), rtol=1e-12)
        np.testing.assert_array_equal(p.close[i], [c0] * 4)
        np.testing.assert_array_equal(p.open[i], [c0] * 4)
        # the range scale is s_1 at every horizon; a negative up / positive down is clipped to 0
        np.testing.assert_allclose(
            p.high[i], c0 * np.exp(0.01 * np.array([1.0, 1.2, 0.0, 1.6])), rtol=1e-12
        )
        np.testing.assert_allclose(
            p.low[i], c0 * np.exp(0.01 * np.array([-1.0, 0.0, -1.4, -1.6])), rtol=1e-12
        )


# --- calibration on simulated regimes ---------------------------------------------------------


@pytest.fixture(scope="module")
def oos(regimes):
    candles, sigma = regimes
    train = 1200
    model = HarRange()
    fitted = model.fit(candles.iloc[:train])
    rows = np.arange(train, len(candles) - 1)
    return candles, sigma, rows, model.predict_rows(fitted, candles, rows)


def test_80pct_interval_covers_80pct_out_of_sample(oos):
    candles, _, rows, p = oos
    actual = candles["close"].to_numpy()[rows + 1]
    inside = (actual >= p.quantiles[:, 0, 1]) & (actual <= p.quantiles[:, 0, 5])
    assert len(rows) > 1700
    assert inside.mean() == pytest.approx(0.80, abs=0.03)


def test_interval_is_wider_in_the_high_vol_regime(oos):
    candles, sigma, rows, p = oos
    width = (p.quantiles[:, 0, 5] - p.quantiles[:, 0, 1]) / p.close[:, 0]
    settled = rows % BLOCK >= 10  # ten sessions into a block
    high = width[settled & (sigma[rows] == HIGH_VOL)].mean()
    low = width[settled & (sigma[rows] == LOW_VOL)].mean()
    assert high > 2.0 * low  # true ratio 3
    # and the width tracks the true std: about 2 * 1.28 * sigma
    assert low == pytest.approx(2 * 1.2816 * LOW_VOL, rel=0.25)
    assert high == pytest.approx(2 * 1.2816 * HIGH_VOL, rel=0.25)


def test_predictions_are_valid_candles(oos):
    _, _, _, p = oos
    assert p.quantiles.shape == (len(p.close), 4, 7)
    assert (np.diff(p.quantiles, axis=-1) > 0).all()
    assert (p.high >= p.close).all() and (p.close >= p.low).all()
    assert (p.high > p.low).all()
    assert_valid_prices(p)
    # the interval widens with the horizon
    assert (np.diff(p.quantiles[..., 5] - p.quantiles[..., 1], axis=1) > 0).all()


# --- pooling ---------------------------------------------------------------------------------


def test_fit_pooled_shares_beta_and_mixes_z():
    flat = simulate(800, seed=1)[0]
    rising = simulate(800, seed=2, drift=0.5)[0]  # returns half a std a day above zero
    fits = HarRange().fit_pooled({"FLAT": flat, "RISE": rising})
    assert set(fits) == {"FLAT", "RISE"}
    assert fits["FLAT"]["beta"] == fits["RISE"]["beta"]
    z_flat, z_rise = np.asarray(fits["FLAT"]["z"]), np.asarray(fits["RISE"]["z"])
    assert not np.allclose(z_flat, z_rise)
    # the rising ticker's median standardised return is higher, at every horizon
    assert (z_rise[:, 3] - z_flat[:, 3] > 0.1).all()
    # half own, half pooled: the difference is half the difference of the own quantiles
    beta = np.asarray(fits["FLAT"]["beta"])
    own = {k: hand_fit_parts(c, beta)[1] for k, c in (("FLAT", flat), ("RISE", rising))}
    q = {k: np.quantile(z, QUANTILE_LEVELS, axis=0).T for k, z in own.items()}
    np.testing.assert_allclose(z_rise - z_flat, 0.5 * (q["RISE"] - q["FLAT"]), atol=1e-9)
    pooled = np.quantile(np.vstack(list(own.values())), QUANTILE_LEVELS, axis=0).T
    np.testing.assert_allclose(z_flat, 0.5 * q["FLAT"] + 0.5 * pooled, atol=1e-9)


# --- too little data -------------------------------------------------------------------------


def test_too_short_a_history_raises_a_clear_error(regimes):
    candles = regimes[0]
    need = WARMUP + 4 + 1  # 67 warm-up rows, one training row, four sessions to score it
    with pytest.raises(ValueError, match=r"HAR-range needs more than 71 sessions"):
        HarRange().fit(candles.iloc[: need - 1])
    with pytest.raises(ValueError, match=r"needs more than 71 sessions"):
        HarRange().fit_pooled({"A": candles.iloc[:30], "B": candles.iloc[:50]})
    fitted = HarRange().fit(candles.iloc[:need])  # the shortest that fits
    assert np.isfinite(np.asarray(fitted["beta"])).all()
    with pytest.raises(ValueError, match=r"HAR-range needs 67 sessions before the as-of date"):
        HarRange().predict_rows(fitted, candles, np.array([WARMUP - 1]))
    p = HarRange().predict_rows(fitted, candles, np.array([WARMUP]))
    assert p.close.shape == (1, 4)
