"""Features are causal, scale-free and normalised with training rows only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting import features as F


def synthetic_candles(n: int = 300, seed: int = 0, end: str | None = None) -> pd.DataFrame:
    """A valid random-walk OHLCV frame on business days (shared by the forecasting tests)."""
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0005, 0.02, n)))
    opn = close * np.exp(rng.normal(0, 0.01, n))
    high = np.maximum(opn, close) * np.exp(np.abs(rng.normal(0, 0.01, n)))
    low = np.minimum(opn, close) * np.exp(-np.abs(rng.normal(0, 0.01, n)))
    volume = rng.lognormal(15, 0.3, n)
    if end is None:
        index = pd.bdate_range("2015-01-02", periods=n, name="session_date")
    else:
        index = pd.bdate_range(end=end, periods=n, name="session_date")
    return pd.DataFrame(
        {"open": opn, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )


def test_features_never_look_ahead():
    df = synthetic_candles(300)
    full = F.compute_features(df)
    cut = 200
    head = F.compute_features(df.iloc[:cut])
    pd.testing.assert_frame_equal(full.iloc[:cut], head)
    changed = df.copy()
    changed.iloc[cut:, :4] *= 3.0  # a wild future must not move the past
    changed.iloc[cut:, 4] *= 0.1
    pd.testing.assert_frame_equal(F.compute_features(changed).iloc[:cut], head)


def test_features_are_scale_free():
    df = synthetic_candles(200)
    scaled = df.copy()
    scaled[["open", "high", "low", "close"]] *= 137.0
    a, b = F.compute_features(df), F.compute_features(scaled)
    np.testing.assert_allclose(a[F.FEATURE_COLUMNS], b[F.FEATURE_COLUMNS], atol=1e-9)


def test_warmup_rows_are_nan_and_rest_finite():
    feats = F.compute_features(synthetic_candles(200))
    assert feats.iloc[: F.WARMUP].isna().all().all()
    assert np.isfinite(feats.iloc[F.WARMUP :].to_numpy()).all()


def test_targets_are_log_ratios_to_last_close_in_sigma_units():
    df = synthetic_candles(150)
    feats = F.compute_features(df)
    targets = F.compute_targets(df, feats["sigma"], 4)
    t = 100
    for h in range(1, 5):
        for j, col in enumerate(F.TARGET_COLUMNS):
            expected = np.log(df[col].iloc[t + h] / df["close"].iloc[t]) / feats["sigma"].iloc[t]
            assert targets[t, h - 1, j] == pytest.approx(expected)
    assert np.isnan(targets[-1]).all() and np.isfinite(targets[-5]).all()


def test_normalization_uses_only_given_rows():
    df = synthetic_candles(300)
    feats = F.compute_features(df)
    rows = np.arange(100, 200)
    stats = F.fit_normalization(feats, rows)
    other = feats.copy()
    other.iloc[200:, :] = 1e6  # values outside the training rows are irrelevant
    assert F.fit_normalization(other, rows) == stats
    matrix = F.normalized_matrix(feats, stats)
    np.testing.assert_allclose(matrix[rows].mean(axis=0), 0.0, atol=1e-4)


def test_make_windows_stacks_oldest_first():
    matrix = np.arange(20, dtype="float32").reshape(10, 2)
    windows = F.make_windows(matrix, np.array([4, 9]), 3)
    assert windows.shape == (2, 3, 2)
    np.testing.assert_array_equal(windows[0, :, 0], [4, 6, 8])
    np.testing.assert_array_equal(windows[1, -1], matrix[9])
    with pytest.raises(ValueError):
        F.make_windows(matrix, np.array([1]), 3)
