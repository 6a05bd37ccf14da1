"""Honest gates, tested: the calibration opens a gate only for a real signal, conformal scales
give nominal coverage, inputs are causal, and the stored val metrics are cross-fitted.

Pure numpy (no TensorFlow): ``forecasting.train`` imports keras only inside ``train_model``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from forecasting import calibration as C
from forecasting import features as F
from forecasting import range_model as R
from forecasting.forecaster import CandlePaths
from forecasting.quantiles import INTERVAL_LEVELS, interval_indices
from forecasting.train import _CalibrationBlock, cross_fitted_metrics
from tests.forecasting.test_features import synthetic_candles

H = 4
LEVELS = C.LEVELS


# --- the close gate (fit_shrinkage) -------------------------------------------------------------


def test_a_planted_signal_opens_the_close_gate():
    rng = np.random.default_rng(11)
    n = 400
    pred = rng.normal(0.0, 1.0, (n, H))
    target = pred + rng.normal(0.0, 0.3, (n, H))  # the network really predicts the move
    sigma = rng.uniform(0.01, 0.03, n)
    alphas = C.fit_shrinkage(pred, target, sigma)
    assert len(alphas) == H
    assert all(a > 0 for a in alphas), alphas


@pytest.mark.parametrize("seed", range(8))
def test_pure_noise_keeps_the_close_gate_shut(seed):
    rng = np.random.default_rng(seed)
    n = 400
    pred = rng.normal(0.0, 1.0, (n, H))
    target = rng.normal(0.0, 1.0, (n, H)) * np.sqrt(np.arange(1, H + 1))  # independent of pred
    # (a plain argmin over ALPHA_GRID picks a non-zero alpha on 12 of these 32 horizons)
    sigma = rng.uniform(0.01, 0.03, n)
    assert C.fit_shrinkage(pred, target, sigma) == [0.0] * H


# --- the quantile blend (fit_blend) -------------------------------------------------------------


def _heteroscedastic(rng, n: int):
    """Per-row scales (n, H) and log-returns with those scales; true quantiles are scale * z."""
    scale = 0.02 * np.exp(rng.normal(0.0, 0.6, (n, 1))) * np.sqrt(np.arange(1, H + 1))[None, :]
    actual = scale * rng.standard_normal((n, H))
    true_q = scale[..., None] * stats.norm.ppf(LEVELS)[None, None, :]
    return scale, actual, true_q


def test_blend_opens_when_the_network_has_the_true_quantiles():
    rng = np.random.default_rng(5)
    scale, actual, true_q = _heteroscedastic(rng, 600)
    # HAR badly scaled: one scale for every row, three times too wide
    har_q = 3.0 * scale.mean(axis=0)[None, :, None] * stats.norm.ppf(LEVELS)[None, None, :]
    har_q = np.broadcast_to(har_q, true_q.shape)
    weights = C.fit_blend(true_q, har_q, actual)
    assert all(w > 0 for w in weights), weights


@pytest.mark.parametrize("seed", range(5))
def test_blend_stays_shut_when_the_network_is_noise_around_har(seed):
    rng = np.random.default_rng(seed)
    scale, actual, har_q = _heteroscedastic(rng, 600)
    # small noise: no better in expectation (pinball loss is convex), yet an ungated argmin over
    # the weights would pick a non-zero one on about a third of the horizons by chance
    noise = rng.normal(0.0, 0.1, har_q.shape) * scale[..., None]
    lstm_q = np.sort(har_q + noise, axis=-1)
    assert C.fit_blend(lstm_q, har_q, actual) == [0.0] * H


# --- conformal scales ---------------------------------------------------------------------------


def _stratified_t(rng, n: int, df: int = 5) -> np.ndarray:
    """(n, H) Student-t draws, one per stratum of [0, 1] in random order (per column), so each
    half's empirical quantiles sit within 1/n of the true ones: the 2-point tolerance below then
    tests the method, not the luck of a 3000-row draw (plain draws miss it about half the time
    over 4 horizons x 7 levels)."""
    u = (np.argsort(rng.random((n, H)), axis=0) + rng.random((n, H))) / n
    return stats.t.ppf(u, df)


def test_conformal_scales_give_nominal_coverage_out_of_sample():
    rng = np.random.default_rng(2024)
    n = 3000
    scale = np.exp(rng.normal(0.0, 0.5, (2 * n, 1))) * np.sqrt(np.arange(1, H + 1))[None, :]
    centre = rng.normal(0.0, 0.3, (2 * n, H))
    eps = np.concatenate([_stratified_t(rng, n), _stratified_t(rng, n)])
    target = centre + scale * eps  # heteroscedastic, fat-tailed
    true_z = stats.t.ppf(LEVELS, 5)
    mis = np.where(LEVELS < 0.5, 2.0, 0.5)  # lower offsets twice too wide, upper half as wide
    offsets = scale[..., None] * (mis * true_z)[None, None, :]
    fit, test = slice(0, n), slice(n, 2 * n)

    k = C.conformal_scales(centre[fit], offsets[fit], target[fit])
    assert k.shape == (H, len(LEVELS))
    expected_k = np.broadcast_to(1 / mis, k.shape)  # undoes the mis-scaling (median: 1)
    np.testing.assert_allclose(k, np.where(LEVELS == 0.5, 1.0, expected_k), rtol=0.05)
    q = centre[test, :, None] + k[None] * offsets[test]
    share_below = (target[test, :, None] <= q).mean(axis=0)  # (H, 7)
    np.testing.assert_allclose(share_below, np.broadcast_to(LEVELS, (H, len(LEVELS))), atol=0.02)
    lo, hi = interval_indices(80)
    inside = (target[test] >= q[..., lo]) & (target[test] <= q[..., hi])
    coverage = inside.mean(axis=0)
    assert ((coverage >= 0.78) & (coverage <= 0.82)).all(), coverage
    # without the scales the mis-scaled offsets are far off: the check above has teeth
    raw = (target[test, :, None] <= centre[test, :, None] + offsets[test]).mean(axis=0)
    assert np.abs(raw - LEVELS).max() > 0.05


# --- causal inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [F.WARMUP, R.WARMUP, 150, 298])
def test_no_input_at_t_changes_when_data_after_t_changes(t):
    candles = synthetic_candles(300, seed=3)
    changed = candles.copy()
    rng = np.random.default_rng(t)
    after = slice(t + 1, None)
    m = len(changed) - t - 1
    factor = np.exp(rng.normal(0.0, 1.0, (m, 1)))  # a wild future: x0.1 .. x10 prices
    factor[0] *= 0.1  # starting with a crash the session right after t
    changed.iloc[after, :4] = changed.iloc[after, :4].to_numpy() * factor
    changed.iloc[after, 1] *= 1.5  # highs far above, lows far below
    changed.iloc[after, 2] /= 1.5
    changed.iloc[after, 4] *= 100.0

    before_f, after_f = F.compute_features(candles), F.compute_features(changed)
    np.testing.assert_array_equal(after_f.iloc[: t + 1].to_numpy(), before_f.iloc[: t + 1])
    before_x, after_x = R.design_matrix(candles), R.design_matrix(changed)
    np.testing.assert_array_equal(after_x[: t + 1], before_x[: t + 1])
    # the change did reach the later rows (the comparison is not vacuous)
    if t + 1 < len(candles):
        assert not np.allclose(after_f.iloc[-1].to_numpy(), before_f.iloc[-1].to_numpy())
        assert not np.allclose(after_x[-1], before_x[-1])


# --- cross-fitted val metrics -------------------------------------------------------------------


def _synthetic_block(seed: int = 0, n: int = 160) -> _CalibrationBlock:
    """Held-out outputs where the network's quantiles beat a badly scaled HAR (so calibration
    matters) and volatility doubles halfway through (so in-sample and out-of-sample differ)."""
    rng = np.random.default_rng(seed)
    regime = np.where(np.arange(n) < n // 2, 1.0, 2.0)[:, None]
    root_h = np.sqrt(np.arange(1, H + 1))[None, :]
    sigma = 0.02 * np.exp(rng.normal(0.0, 0.2, n))
    close0 = 100.0 * np.exp(rng.normal(0.0, 0.3, n))
    t_close = regime * root_h * rng.standard_normal((n, H))
    t_open = 0.5 * t_close + 0.3 * rng.standard_normal((n, H))
    t_high = np.maximum(t_close, t_open) + np.abs(rng.normal(0.0, 1.0, (n, H)))
    t_low = np.minimum(t_close, t_open) - np.abs(rng.normal(0.0, 1.0, (n, H)))
    target = np.stack([t_close, t_open, t_high, t_low], axis=-1)

    pred = np.empty((n, H, 10))
    pred[..., 0] = 0.4 * t_close + rng.normal(0.0, 1.0, (n, H))
    pred[..., 1] = 0.4 * t_open + rng.normal(0.0, 1.0, (n, H))
    pred[..., 2:4] = np.abs(rng.normal(0.8, 0.3, (n, H, 2)))
    gaps = np.diff(stats.norm.ppf([0.5, 0.75, 0.9, 0.95]))  # true gaps of a unit normal
    pred[..., 4:7] = root_h[..., None] * gaps[None, None, :] * rng.uniform(0.8, 1.2, (n, H, 1))
    pred[..., 7:10] = pred[..., 4:7]

    har_q = close0[:, None, None] * np.exp(
        4.0 * sigma[:, None, None] * root_h[..., None] * stats.norm.ppf(LEVELS)[None, None, :]
    )
    flat = np.repeat(close0[:, None], H, axis=1)
    har = CandlePaths(
        open=flat.copy(),
        high=flat * np.exp(sigma[:, None]),
        low=flat * np.exp(-sigma[:, None]),
        close=flat.copy(),
        quantiles=har_q,
    )
    return _CalibrationBlock(pred, target, sigma, close0, har)


def _hl_err(high, low, block, rows):
    c0 = block.close0[rows][:, None]
    s = block.sigma[rows][:, None]
    actual_high = np.exp(s * block.target[rows][..., 2])
    actual_low = np.exp(s * block.target[rows][..., 3])
    return (np.abs(high / c0 - actual_high) + np.abs(low / c0 - actual_low)) / 2


def _har_rows(block, rows) -> CandlePaths:
    har = block.har
    return CandlePaths(
        open=har.open[rows],
        high=har.high[rows],
        low=har.low[rows],
        close=har.close[rows],
        quantiles=har.quantiles[rows],
    )


def _calibrate_by_hand(block, rows) -> dict:
    pred, target, sigma = block.pred[rows], block.target[rows], block.sigma[rows]
    c0 = block.close0[rows][:, None]
    har = _har_rows(block, rows)
    har_hl = _hl_err(har.high, har.low, block, rows)
    har_log_q = np.log(har.quantiles / c0[..., None])
    return C.calibrate(pred, target, sigma, har_log_q, har_hl)


def _winkler80(q, actual):
    lo, hi = interval_indices(80)
    lower, upper = q[..., lo], q[..., hi]
    return (upper - lower) + 10 * np.maximum(lower - actual, 0) + 10 * np.maximum(actual - upper, 0)


def _score_by_hand(block, rows, calibration) -> dict:
    c0, sigma = block.close0[rows], block.sigma[rows]
    har = _har_rows(block, rows)
    served = C.serve(block.pred[rows], c0, sigma, calibration, har)
    actual = c0[:, None] * np.exp(sigma[:, None] * block.target[rows][..., 0])
    out = {}
    for level in INTERVAL_LEVELS:
        lo, hi = interval_indices(level)
        q = served["quantiles"]
        out[f"coverage_{level}"] = ((actual >= q[..., lo]) & (actual <= q[..., hi])).mean(axis=0)
    out["winkler80_vs_har"] = _winkler80(served["quantiles"], actual).mean(axis=0) / _winkler80(
        har.quantiles, actual
    ).mean(axis=0)
    out["mae_ratio_vs_naive"] = np.abs(served["close"] - actual).mean(axis=0) / np.abs(
        c0[:, None] - actual
    ).mean(axis=0)
    return out


def test_cross_fitted_val_metrics_never_score_the_rows_they_were_fitted_on():
    block = _synthetic_block()
    n = len(block.pred)
    a, b = np.arange(n // 2), np.arange(n // 2, n)
    cal_a, cal_b = _calibrate_by_hand(block, a), _calibrate_by_hand(block, b)
    # the synthetic block makes the calibration matter: the network's quantiles are served
    assert any(w > 0 for w in cal_a["blend"]) and any(w > 0 for w in cal_b["blend"])
    b_from_a, a_from_b = _score_by_hand(block, b, cal_a), _score_by_hand(block, a, cal_b)

    metrics = cross_fitted_metrics(block)
    assert set(metrics) == {f"val_{k}" for k in b_from_a}
    for key, first in b_from_a.items():
        expected = (first + a_from_b[key]) / 2
        # stored values are rounded to 4 decimals
        np.testing.assert_allclose(metrics[f"val_{key}"], expected, rtol=0, atol=5.001e-5)

    # in-sample (calibrate and score on the whole block) would report different, rosier numbers
    whole = np.arange(n)
    in_sample = _score_by_hand(block, whole, _calibrate_by_hand(block, whole))
    assert np.abs(np.asarray(metrics["val_coverage_80"]) - in_sample["coverage_80"]).max() > 0.02
    # in-sample the conformal scales hit their levels almost exactly; cross-fitted they do not
    assert (
        np.abs(in_sample["coverage_80"] - 0.8).max()
        < np.abs(np.asarray(metrics["val_coverage_80"]) - 0.8).max()
    )


def test_calibration_block_subset_keeps_every_har_array_aligned():
    block = _synthetic_block(seed=1, n=40)
    rows = np.array([3, 7, 20])
    sub = block.subset(rows)
    for name in ("open", "high", "low", "close", "quantiles"):
        np.testing.assert_array_equal(getattr(sub.har, name), getattr(block.har, name)[rows])
    assert sub.har.attention is None
    np.testing.assert_array_equal(sub.target, block.target[rows])
    np.testing.assert_array_equal(sub.close0, block.close0[rows])
    np.testing.assert_array_equal(sub.pred, block.pred[rows])


def test_range_source_gate_scores_the_high_low_that_would_be_served():
    """The network's high/low are judged around the gated close/open, as serve() builds them."""
    rng = np.random.default_rng(5)
    n, h = 400, 4
    sigma = np.full(n, 0.01)
    pred = np.zeros((n, h, 10))
    pred[..., 0] = rng.normal(0, 3, (n, h))  # a wild close move the gate will shut (alpha 0)
    pred[..., 2:4] = 1.0
    target = np.zeros((n, h, 4))
    target[..., 0] = rng.normal(0, 1, (n, h))
    target[..., 2], target[..., 3] = 1.0, -1.0  # high/low one sigma from the last close
    errors = C.network_hl_errors(pred, target, sigma, [0.0] * h, [0.0] * h)
    # served around the last close, the network's high/low hit the targets exactly
    np.testing.assert_allclose(errors, 0.0, atol=1e-12)
    ungated = C.network_hl_errors(pred, target, sigma, [1.0] * h, [1.0] * h)
    assert (ungated.mean(axis=0) > 1e-3).all()
