"""Scale-free, strictly causal features and targets built from daily OHLCV candles.

Prices never reach the network: every feature is a log-ratio (or a log of a ratio of volumes),
so a model trained on a $20 stock works on a $2,000 one. Every feature at session t uses only
rows <= t (backward rolling windows), and the normalisation statistics are fitted on the
training windows only, so nothing from the future can leak into a forecast.

Targets are log-ratios to the last close divided by ``sigma_t``, the recent realised
volatility at the as-of session, so that the network works in "volatility units" and the
forecast spread follows volatility regimes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.range_model import range_variance

FEATURE_COLUMNS = [
    "ret",
    "open_rel",
    "high_rel",
    "low_rel",
    "volume_rel",
    "log_vol20",
    "vol_ratio",
    "overnight",
    "log_rv1",
    "log_rv5",
    "log_rv22",
]
VOL_WINDOW = 20  # sessions in the realised-volatility estimate sigma_t
LONG_VOL_WINDOW = 60  # sessions in the slow volatility used for the regime feature
VOLUME_WINDOW = 20  # sessions in the rolling mean volume
WARMUP = LONG_VOL_WINDOW  # leading rows whose features are undefined
SIGMA_FLOOR = 1e-4  # avoids dividing by zero on a (pathological) flat price series
# Target columns per horizon: log(C/C0), log(O/C0), log(H/C0), log(L/C0), all divided by sigma.
TARGET_COLUMNS = ["close", "open", "high", "low"]
REQUIRED_COLUMNS = ["open", "high", "low", "close", "volume"]


def _check(candles: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in candles.columns]
    if missing:
        raise ValueError(f"candles are missing columns {missing}")
    if not isinstance(candles.index, pd.DatetimeIndex):
        raise ValueError("candles must have a DatetimeIndex (session_date)")


def compute_features(candles: pd.DataFrame) -> pd.DataFrame:
    """Per-session causal features plus ``sigma`` (the 20-session realised volatility).

    The first ``WARMUP`` rows are NaN. Row t depends on rows <= t only.
    """
    _check(candles)
    o, h, lo, c = (candles[k].to_numpy(dtype="float64") for k in ("open", "high", "low", "close"))
    vol = candles["volume"].to_numpy(dtype="float64")
    ret = np.full(len(c), np.nan)
    ret[1:] = np.log(c[1:] / c[:-1])
    r = pd.Series(ret, index=candles.index)
    sigma = r.rolling(VOL_WINDOW, min_periods=VOL_WINDOW).std(ddof=0).clip(lower=SIGMA_FLOOR)
    sigma_long = r.rolling(LONG_VOL_WINDOW, min_periods=LONG_VOL_WINDOW).std(ddof=0)
    sigma_long = sigma_long.clip(lower=SIGMA_FLOOR)
    rv = pd.Series(range_variance(candles), index=candles.index)
    overnight = np.full(len(c), np.nan)
    overnight[1:] = np.log(o[1:] / c[:-1])
    logv = pd.Series(np.log1p(np.maximum(vol, 0.0)), index=candles.index)
    vmean = logv.rolling(VOLUME_WINDOW, min_periods=VOLUME_WINDOW).mean()
    frame = pd.DataFrame(
        {
            "ret": ret / sigma,  # returns in volatility units
            "open_rel": np.log(o / c) / sigma,
            "high_rel": np.log(h / c) / sigma,
            "low_rel": np.log(lo / c) / sigma,
            "volume_rel": logv - vmean,
            "log_vol20": np.log(sigma),
            "vol_ratio": np.log(sigma / sigma_long),
            # range-based variance (overnight + Garman-Klass) at 1 / 5 / 22 sessions, relative
            # to the close-to-close variance: where the range says more than the closes do
            "overnight": overnight / sigma,
            "log_rv1": np.log(rv) - 2 * np.log(sigma),
            "log_rv5": np.log(rv.rolling(5, min_periods=5).mean()) - 2 * np.log(sigma),
            "log_rv22": np.log(rv.rolling(22, min_periods=22).mean()) - 2 * np.log(sigma),
            "sigma": sigma,
        },
        index=candles.index,
    )
    frame.iloc[:WARMUP] = np.nan
    return frame


def compute_targets(candles: pd.DataFrame, sigma: pd.Series, horizon: int) -> np.ndarray:
    """(n, horizon, 4): for each as-of row t, log(candle_{t+h} / close_t) / sigma_t.

    Rows without ``horizon`` later sessions are NaN. Only used for training and evaluation.
    """
    c0 = candles["close"].to_numpy(dtype="float64")
    s = sigma.to_numpy(dtype="float64")
    n = len(c0)
    out = np.full((n, horizon, len(TARGET_COLUMNS)), np.nan)
    for j, col in enumerate(TARGET_COLUMNS):
        v = candles[col].to_numpy(dtype="float64")
        for h in range(1, horizon + 1):
            out[: n - h, h - 1, j] = np.log(v[h:] / c0[: n - h]) / s[: n - h]
    return out


def fit_normalization(features: pd.DataFrame, rows: np.ndarray) -> dict:
    """Mean/std of each feature over the given (training) rows only; a JSON-able dict."""
    sub = features.iloc[rows][FEATURE_COLUMNS].to_numpy(dtype="float64")
    mean = np.nanmean(sub, axis=0)
    std = np.nanstd(sub, axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    return {
        "columns": list(FEATURE_COLUMNS),
        "mean": [float(x) for x in mean],
        "std": [float(x) for x in std],
    }


def normalized_matrix(features: pd.DataFrame, normalization: dict) -> np.ndarray:
    """Feature matrix (n, F) standardised with stored statistics, clipped to +-8 std, float32."""
    cols = normalization["columns"]
    x = features[cols].to_numpy(dtype="float64")
    x = (x - np.asarray(normalization["mean"])) / np.asarray(normalization["std"])
    return np.clip(x, -8.0, 8.0).astype("float32")


def make_windows(matrix: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """Stack windows matrix[e-window+1 : e+1] for each end row e -> (len(ends), window, F)."""
    ends = np.asarray(ends, dtype=int)
    if len(ends) and ends.min() < window - 1:
        raise ValueError("window would start before the first row")
    idx = ends[:, None] + np.arange(-window + 1, 1)[None, :]
    return matrix[idx]


def first_valid_end(window: int) -> int:
    """Index of the first row that can end a fully-defined feature window."""
    return WARMUP + window - 1
