"""The baseline forecasters against values worked out by hand on small candle frames.

Every expected number here is computed independently of ``forecasting.baselines`` (by hand in a
comment, or with plain numpy on the frame), so a wrong window, lag, seed or scaling fails a test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from forecasting.baselines import (
    BASELINES,
    Empirical,
    Ewma,
    Garch,
    GarchParams,
    Naive,
    RandomWalk20,
    Range20,
    ewma_variance,
    fit_garch,
    garch_variance,
    range_distances,
)
from forecasting.forecaster import log_returns, normal_quantiles
from forecasting.quantiles import QUANTILE_LEVELS
from forecasting.range_model import HarRange
from tests.forecasting.synthetic import assert_valid_prices

Z = norm.ppf(QUANTILE_LEVELS)  # (7,) standard normal quantiles
H = np.arange(1, 5)  # horizons 1..4


def make_candles(returns, up, down) -> pd.DataFrame:
    """Candles whose close log returns are ``returns`` (row 0's is ignored), with
    log(high/close) = up and log(low/close) = -down; the open sits inside the range."""
    returns, up, down = (np.asarray(a, dtype="float64") for a in (returns, up, down))
    close = 100.0 * np.exp(np.cumsum(np.r_[0.0, returns[1:]]))
    index = pd.bdate_range("2021-03-01", periods=len(close))
    return pd.DataFrame(
        {
            "open": close * np.exp(0.25 * (up - down)),
            "high": close * np.exp(up),
            "low": close * np.exp(-down),
            "close": close,
            "volume": np.full(len(close), 1_000_000.0),
        },
        index=index,
    )


@pytest.fixture()
def frame25() -> pd.DataFrame:
    """25 sessions. Returns: rows 1-4 are +0.05, rows 5-24 alternate +0.01, -0.01 (mean 0).
    High/low distances: rows 0-4 are 0.20 / 0.30, rows 5-24 alternate 0.01, 0.03 (mean 0.02)
    for the high and 0.02, 0.04 (mean 0.03) for the low."""
    r = np.r_[np.nan, [0.05] * 4, [0.01, -0.01] * 10]
    up = np.r_[[0.20] * 5, [0.01, 0.03] * 10]
    down = np.r_[[0.30] * 5, [0.02, 0.04] * 10]
    return make_candles(r, up, down)


def random_candles(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 0.015, n)
    return make_candles(r, rng.uniform(0.002, 0.02, n), rng.uniform(0.002, 0.02, n))


def test_make_candles_builds_the_returns_it_was_given(frame25):
    r = log_returns(frame25)
    assert np.isnan(r[0])
    np.testing.assert_allclose(r[1:5], 0.05, rtol=1e-12)
    np.testing.assert_allclose(r[5:], [0.01, -0.01] * 10, rtol=1e-10)
    assert isinstance(frame25.index, pd.DatetimeIndex)
    assert all(ts.weekday() < 5 for ts in frame25.index)


def test_baselines_registry_names():
    assert set(BASELINES) == {"naive", "rw20", "ewma", "garch", "empirical", "range20"}
    for name, cls in BASELINES.items():
        assert cls.name == name


# --- naive and range20 -----------------------------------------------------------------------


def test_naive_is_last_close_with_last_sessions_high_and_low(frame25):
    last = frame25.iloc[-1]
    p = Naive().predict_rows(Naive().fit(frame25), frame25, np.array([24, 10]))
    assert p.close.shape == p.open.shape == p.high.shape == p.low.shape == (2, 4)
    np.testing.assert_array_equal(p.close[0], [last["close"]] * 4)
    np.testing.assert_array_equal(p.open[0], [last["close"]] * 4)
    # C0 * exp(log(H/C)) of the last session is that session's own high (and low)
    np.testing.assert_allclose(p.high[0], [last["high"]] * 4, rtol=1e-12)
    np.testing.assert_allclose(p.low[0], [last["low"]] * 4, rtol=1e-12)
    np.testing.assert_allclose(p.high[1], [frame25["high"].iloc[10]] * 4, rtol=1e-12)
    np.testing.assert_allclose(p.low[1], [frame25["low"].iloc[10]] * 4, rtol=1e-12)
    assert p.quantiles.shape == (2, 4, 7) and np.isnan(p.quantiles).all()
    assert_valid_prices(p)  # a missing interval is allowed


def test_range_distances_are_trailing_20_session_means(frame25):
    up, down = range_distances(frame25)
    assert np.isnan(up[:19]).all() and np.isnan(down[:19]).all()
    # row 24: the window is rows 5..24, alternating distances -> means 0.02 and -0.03
    assert up[24] == pytest.approx(0.02, rel=1e-9)
    assert down[24] == pytest.approx(-0.03, rel=1e-9)
    # row 19: rows 0..19 = five wide sessions and 15 alternating ones (8 of the first value)
    assert up[19] == pytest.approx((5 * 0.20 + 8 * 0.01 + 7 * 0.03) / 20, rel=1e-9)
    assert down[19] == pytest.approx(-(5 * 0.30 + 8 * 0.02 + 7 * 0.04) / 20, rel=1e-9)


def test_range20_high_low_from_mean_log_distances(frame25):
    c0 = frame25["close"].iloc[-1]
    p = Range20().predict_last(None, frame25)
    np.testing.assert_array_equal(p.close, [[c0] * 4])
    np.testing.assert_allclose(p.high, [[c0 * np.exp(0.02)] * 4], rtol=1e-9)
    np.testing.assert_allclose(p.low, [[c0 * np.exp(-0.03)] * 4], rtol=1e-9)
    assert np.isnan(p.quantiles).all()
    # the same with plain numpy on the frame's own columns
    last20 = frame25.iloc[-20:]
    up = np.mean(np.log(last20["high"] / last20["close"]))
    down = np.mean(np.log(last20["low"] / last20["close"]))
    np.testing.assert_allclose(p.high[0, 0], c0 * np.exp(up), rtol=1e-12)
    np.testing.assert_allclose(p.low[0, 0], c0 * np.exp(down), rtol=1e-12)


# --- rw20 --------------------------------------------------------------------------------------


def test_rw20_quantiles_use_20_session_std_and_sqrt_h(frame25):
    c0 = frame25["close"].iloc[-1]
    p = RandomWalk20().predict_last(None, frame25)
    # rows 5..24: twenty returns +-0.01 with mean 0 -> sample std 0.01 * sqrt(20 / 19)
    sigma = 0.01 * np.sqrt(20 / 19)
    expected = c0 * np.exp(Z[None, :] * sigma * np.sqrt(H)[:, None])
    np.testing.assert_allclose(p.quantiles[0], expected, rtol=1e-9)
    np.testing.assert_array_equal(p.close, [[c0] * 4])
    # median of a zero-mean log-normal is the last close
    np.testing.assert_allclose(p.quantiles[0, :, 3], c0, rtol=1e-12)
    # high/low come from range20
    np.testing.assert_allclose(p.high, [[c0 * np.exp(0.02)] * 4], rtol=1e-9)
    np.testing.assert_allclose(p.low, [[c0 * np.exp(-0.03)] * 4], rtol=1e-9)


def test_rw20_window_starts_at_row_20(frame25):
    p = RandomWalk20().predict_rows(None, frame25, np.array([19, 20, 23]))
    assert np.isnan(p.quantiles[0]).all()  # only 19 returns by row 19
    r = log_returns(frame25)
    for i, row in ((1, 20), (2, 23)):
        sigma = np.std(r[row - 19 : row + 1], ddof=1)
        c0 = frame25["close"].iloc[row]
        expected = c0 * np.exp(Z[None, :] * sigma * np.sqrt(H)[:, None])
        np.testing.assert_allclose(p.quantiles[i], expected, rtol=1e-9)
    # row 20's window holds the four +0.05 returns: a much wider interval than row 24's
    assert np.std(r[1:21], ddof=1) > 2 * 0.01


def test_normal_quantiles_shape_and_values():
    q = normal_quantiles(np.array([100.0, 50.0]), np.array([[0.01, 0.02], [0.1, 0.2]]))
    assert q.shape == (2, 2, 7)
    assert q[1, 1, 5] == pytest.approx(50.0 * np.exp(0.2 * 1.2815515655446004), rel=1e-12)
    assert q[0, 0, 0] == pytest.approx(100.0 * np.exp(-0.01 * 1.6448536269514722), rel=1e-12)


# --- ewma --------------------------------------------------------------------------------------


def test_ewma_variance_recursion_by_hand():
    r = np.array([np.nan, 0.01, -0.02, 0.03, -0.01, 0.02])
    out = ewma_variance(r, lam=0.94, seed=2)
    assert np.isnan(out[:2]).all()
    # seed: mean(0.01^2, 0.02^2) = 2.5e-4
    # 0.94 * 2.5e-4    + 0.06 * 9e-4 = 2.89e-4
    # 0.94 * 2.89e-4   + 0.06 * 1e-4 = 2.7766e-4
    # 0.94 * 2.7766e-4 + 0.06 * 4e-4 = 2.850004e-4
    np.testing.assert_allclose(out[2:], [2.5e-4, 2.89e-4, 2.7766e-4, 2.850004e-4], rtol=1e-12)


def test_ewma_variance_default_seed_is_20_sessions():
    r = np.r_[np.nan, np.full(20, 0.02)]
    assert np.isnan(ewma_variance(r[:20])).all()  # too short to seed
    out = ewma_variance(r)
    assert np.isnan(out[:20]).all()
    assert out[20] == pytest.approx(4e-4, rel=1e-12)


def test_ewma_forecaster_quantiles(frame25):
    r = log_returns(frame25)
    s2 = np.mean(r[1:21] ** 2)  # four 0.05^2 and sixteen 0.01^2
    assert s2 == pytest.approx((4 * 0.0025 + 16 * 0.0001) / 20, rel=1e-9)
    for t in range(21, 25):
        s2 = 0.94 * s2 + 0.06 * r[t] ** 2
    c0 = frame25["close"].iloc[-1]
    p = Ewma().predict_last(None, frame25)
    expected = c0 * np.exp(Z[None, :] * np.sqrt(s2) * np.sqrt(H)[:, None])
    np.testing.assert_allclose(p.quantiles[0], expected, rtol=1e-9)
    np.testing.assert_allclose(p.high, [[c0 * np.exp(0.02)] * 4], rtol=1e-9)


# --- garch -------------------------------------------------------------------------------------

GP = GarchParams(omega=1e-6, alpha=0.1, beta=0.8, start_variance=1e-4)
# s2[1] = 1e-6 + 0.1 * 1e-4 + 0.8 * 1e-4     = 9.1e-5
# s2[2] = 1e-6 + 0.1 * 4e-4 + 0.8 * 9.1e-5   = 1.138e-4
# s2[3] = 1e-6 + 0.1 * 9e-4 + 0.8 * 1.138e-4 = 1.8204e-4
GARCH_S2 = [9.1e-5, 1.138e-4, 1.8204e-4]
# steps ahead from row 3 (persistence 0.9): 1.8204e-4, 1.64836e-4, 1.493524e-4, 1.3541716e-4
GARCH_CUM = [1.8204e-4, 3.46876e-4, 4.962284e-4, 6.3164556e-4]


def test_garch_variance_by_hand():
    out = garch_variance(np.array([np.nan, 0.01, -0.02, 0.03]), GP)
    assert np.isnan(out[0])
    np.testing.assert_allclose(out[1:], GARCH_S2, rtol=1e-12)


def test_garch_sigma_paths_sum_the_mean_reverting_steps():
    frame = make_candles([np.nan, 0.01, -0.02, 0.03], np.full(4, 0.01), np.full(4, 0.01))
    sigma = Garch().sigma_paths(GP, frame, np.array([3, 1]))
    np.testing.assert_allclose(sigma[0], np.sqrt(GARCH_CUM), rtol=1e-9)
    # from row 1: 9.1e-5, then 1e-6 + 0.9 * previous
    steps = [9.1e-5, 8.29e-5, 7.561e-5, 6.9049e-5]
    np.testing.assert_allclose(sigma[1], np.sqrt(np.cumsum(steps)), rtol=1e-9)
    p = Garch().predict_rows(GP, frame, np.array([3]))
    c0 = frame["close"].iloc[3]
    expected = c0 * np.exp(Z[None, :] * np.sqrt(GARCH_CUM)[:, None])
    np.testing.assert_allclose(p.quantiles[0], expected, rtol=1e-9)


def simulate_garch(n: int, seed: int, omega: float, alpha: float, beta: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.full(n + 1, np.nan)
    s2 = omega / (1 - alpha - beta)
    for t in range(1, n + 1):
        r[t] = np.sqrt(s2) * rng.standard_normal()
        s2 = omega + alpha * r[t] ** 2 + beta * s2
    return r


def test_fit_garch_recovers_persistence():
    # true alpha + beta = 0.95, unconditional variance 1e-4 (1% a day)
    r = simulate_garch(1000, seed=0, omega=5e-6, alpha=0.15, beta=0.80)
    p = fit_garch(r)
    assert abs(p.alpha + p.beta - 0.95) < 0.1
    assert 0.05 < p.alpha < 0.3
    assert 0.5e-4 < p.omega / (1 - p.alpha - p.beta) < 2e-4  # omega back in log-return units
    assert p.start_variance == pytest.approx(np.var(r[1:]), rel=1e-9)


def test_garch_fit_uses_history_returns():
    r = simulate_garch(400, seed=3, omega=5e-6, alpha=0.15, beta=0.80)
    frame = make_candles(r, np.full(len(r), 0.01), np.full(len(r), 0.01))
    fitted = Garch().fit(frame)
    direct = fit_garch(log_returns(frame))
    assert fitted == direct
    assert fitted.start_variance == pytest.approx(np.var(r[1:]), rel=1e-9)


# --- empirical ---------------------------------------------------------------------------------


def test_empirical_quantiles_by_hand():
    # h=1 returns 0.00, 0.01, 0.02, 0.03, 0.04; h=4 returns 0.06 and 0.10
    frame = make_candles([np.nan, 0.0, 0.01, 0.02, 0.03, 0.04], np.full(6, 0.01), np.full(6, 0.01))
    fitted = Empirical().fit(frame)
    assert fitted.shape == (4, 7)
    # linear interpolation at (n - 1) * q
    np.testing.assert_allclose(
        fitted[0], [0.002, 0.004, 0.01, 0.02, 0.03, 0.036, 0.038], atol=1e-12
    )
    np.testing.assert_allclose(
        fitted[3], [0.062, 0.064, 0.07, 0.08, 0.09, 0.096, 0.098], atol=1e-12
    )
    p = Empirical().predict_last(fitted, frame)
    c0 = frame["close"].iloc[-1]
    np.testing.assert_allclose(p.quantiles[0], c0 * np.exp(fitted), rtol=1e-12)


def test_empirical_matches_np_quantile_of_h_session_returns():
    frame = random_candles(60, seed=5)
    c = frame["close"].to_numpy()
    fitted = Empirical().fit(frame)
    for h in range(1, 5):
        expected = np.quantile(np.log(c[h:] / c[:-h]), QUANTILE_LEVELS)
        np.testing.assert_allclose(fitted[h - 1], expected, rtol=1e-9, atol=1e-12)
    # predictions use the fitted history only, not the frame they are applied to
    p = Empirical().predict_rows(fitted, frame, np.array([30]))
    np.testing.assert_allclose(p.quantiles[0], c[30] * np.exp(fitted), rtol=1e-12)
    up, down = range_distances(frame)
    np.testing.assert_allclose(p.high[0], c[30] * np.exp(up[30]), rtol=1e-12)


# --- causality ---------------------------------------------------------------------------------

ALL_FORECASTERS = {**BASELINES, "har_range": HarRange}


@pytest.mark.parametrize("name", sorted(ALL_FORECASTERS))
def test_predictions_do_not_look_ahead(name):
    candles = random_candles(130, seed=11)
    t = 100
    model = ALL_FORECASTERS[name]()
    fitted = model.fit(candles.iloc[: t + 1])
    changed = candles.copy()
    scale = np.linspace(3.0, 40.0, len(candles) - t - 1)  # a wild rally after t
    for col in ("open", "high", "low", "close"):
        changed.iloc[t + 1 :, changed.columns.get_loc(col)] *= scale
    changed.iloc[t + 1 :, changed.columns.get_loc("high")] *= 1.5
    changed.iloc[t + 1 :, changed.columns.get_loc("low")] /= 1.5
    changed.iloc[t + 1 :, changed.columns.get_loc("volume")] = 1.0
    rows = np.array([t - 10, t - 1, t])
    before = model.predict_rows(fitted, candles, rows)
    after = model.predict_rows(fitted, changed, rows)
    for key in ("open", "high", "low", "close", "quantiles"):
        np.testing.assert_array_equal(getattr(after, key), getattr(before, key), err_msg=key)
    assert_valid_prices(before)
    # the change is real: a row after t does move
    later = np.array([t + 12])
    moved = model.predict_rows(fitted, changed, later).close
    assert not np.array_equal(moved, model.predict_rows(fitted, candles, later).close)


def test_model_names_list_every_baseline():
    from forecasting.model_names import BASELINE_NAMES

    assert tuple(BASELINES) == BASELINE_NAMES
