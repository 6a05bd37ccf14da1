"""HAR-range: volatility from the whole candle, HAR-style, pooled across tickers.

The daily variance proxy is the Garman-Klass range variance plus the squared overnight return:
    v_t = log(O_t/C_{t-1})^2 + 0.5 log(H_t/L_t)^2 - (2 log 2 - 1) log(C_t/O_t)^2.
For each horizon h a linear model predicts log(mean of v over the next h sessions) from the
logs of the intraday (Garman-Klass) and overnight parts averaged over the last 1 / 5 / 22
sessions, of v over 66 sessions (the HAR cascade) and from the last five sessions' downside
return in volatility units (the leverage effect). Close quantiles are the
last close times exp(s_h * z_q), where s_h = sqrt(h * exp(prediction)) and z_q are empirical
quantiles of past standardised h-session returns, so the skew and fat tails come from data,
not from a normal table. High and low are the last close times exp(s_1 * median standardised
distance of the high / low of session t+h from the last close): the median minimises the MAE.

Fitting on several tickers at once (``fit_pooled``) shares the regression across them (the
inputs are scale-free logs of variances) and averages each ticker's own z quantiles with the
pooled ones. On the dev universe that beat one fit per ticker (see the README).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from forecasting.forecaster import HORIZON, CandlePaths, Forecaster, log_returns
from forecasting.quantiles import QUANTILE_LEVELS

FEATURES = (
    "const",
    "log_v1",
    "log_intraday1",
    "log_overnight1",
    "log_intraday5",
    "log_overnight5",
    "log_intraday22",
    "log_overnight22",
    "log_v66",
    "down5",
)
WARMUP = 67  # rows before the first defined feature row (66-session mean + one return)
VARIANCE_FLOOR = 1e-8
OVERNIGHT_FLOOR = 1e-7  # overnight gaps are often exactly zero; log needs a floor
Z_POOL_WEIGHT = 0.5  # weight of the pooled z quantiles in a ticker's own (pooled fits)


def variance_parts(candles: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per-session (squared overnight return, Garman-Klass intraday variance); row 0 has no
    overnight return (0)."""
    o, h, lo, c = (candles[k].to_numpy(dtype="float64") for k in ("open", "high", "low", "close"))
    overnight = np.zeros(len(c))
    overnight[1:] = np.log(o[1:] / c[:-1])
    gk = 0.5 * np.log(h / lo) ** 2 - (2 * np.log(2) - 1) * np.log(c / o) ** 2
    return overnight**2, np.maximum(gk, 0.0)


def range_variance(candles: pd.DataFrame) -> np.ndarray:
    """Per-session variance proxy v_t (overnight^2 + Garman-Klass), floored at 1e-8."""
    overnight2, intraday = variance_parts(candles)
    return np.maximum(overnight2 + intraday, VARIANCE_FLOOR)


def design_matrix(candles: pd.DataFrame) -> np.ndarray:
    """(n, len(FEATURES)) causal inputs: row t uses candles up to t only; NaN in the warm-up.

    The overnight and intraday parts of the variance enter separately at 1 / 5 / 22 sessions
    (they forecast differently: on the dev universe the split beat the summed v by ~0.3% of
    Winkler score at every horizon), the total at 66 sessions, plus the downside return.
    """
    overnight2, intraday = variance_parts(candles)
    v = pd.Series(range_variance(candles))
    on = pd.Series(overnight2 + OVERNIGHT_FLOOR)
    gk = pd.Series(np.maximum(intraday, VARIANCE_FLOOR))
    r = np.nan_to_num(log_returns(candles))
    v22 = v.rolling(22, min_periods=22).mean()
    down5 = pd.Series(np.minimum(r, 0.0)).rolling(5, min_periods=5).sum() / np.sqrt(v22)

    def mean(series: pd.Series, n: int) -> np.ndarray:
        return np.log(series.rolling(n, min_periods=n).mean().to_numpy())

    x = np.column_stack(
        [
            np.ones(len(v)),
            np.log(v.to_numpy()),
            np.log(gk.to_numpy()),
            np.log(on.to_numpy()),
            mean(gk, 5),
            mean(on, 5),
            mean(gk, 22),
            mean(on, 22),
            mean(v, 66),
            down5.to_numpy(),
        ]
    )
    x[:WARMUP] = np.nan
    return x


def _targets(candles: pd.DataFrame, horizon: int) -> tuple[np.ndarray, ...]:
    """(n, horizon) log mean future v, h-session log return, log(high/C0), log(low/C0)."""
    v = range_variance(candles)
    logc = np.log(candles["close"].to_numpy(dtype="float64"))
    logh = np.log(candles["high"].to_numpy(dtype="float64"))
    logl = np.log(candles["low"].to_numpy(dtype="float64"))
    n = len(v)
    cum = np.concatenate([[0.0], np.cumsum(v)])
    y, ret, up, down = (np.full((n, horizon), np.nan) for _ in range(4))
    for h in range(1, horizon + 1):
        y[: n - h, h - 1] = np.log((cum[h + 1 : n + 1] - cum[1 : n - h + 1]) / h)
        ret[: n - h, h - 1] = logc[h:] - logc[:-h]
        up[: n - h, h - 1] = logh[h:] - logc[:-h]
        down[: n - h, h - 1] = logl[h:] - logc[:-h]
    return y, ret, up, down


def _scales(x: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(s_h for the close, s_1 for the range), both (n, horizon)."""
    pred = np.exp(x @ beta)
    horizon = beta.shape[1]
    s_close = np.sqrt(pred * np.arange(1, horizon + 1)[None, :])
    s_range = np.repeat(np.sqrt(pred[:, :1]), horizon, axis=1)
    return s_close, s_range


def _training_rows(history: pd.DataFrame, horizon: int):
    x = design_matrix(history)
    y, ret, up, down = _targets(history, horizon)
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    return x[ok], y[ok], ret[ok], up[ok], down[ok]


def _standardised(parts, beta):
    x, _, ret, up, down = parts
    s_close, s_range = _scales(x, beta)
    return ret / s_close, up / s_range, down / s_range


def _z_quantiles(z: np.ndarray) -> np.ndarray:
    return np.quantile(z, QUANTILE_LEVELS, axis=0).T  # (horizon, 7)


def _fitted(beta, z, up, down) -> dict:
    return {
        "features": list(FEATURES),
        "beta": beta.tolist(),
        "z": z.tolist(),
        "up": up.tolist(),
        "down": down.tolist(),
    }


class HarRange(Forecaster):
    """Pooled HAR on range variance with empirical standardised quantiles (see module doc)."""

    name = "har_range"

    def __init__(self, horizon: int = HORIZON) -> None:
        self.horizon = horizon

    def fit(self, history: pd.DataFrame) -> dict:
        """One ticker on its own."""
        return self.fit_pooled({"_": history})["_"]

    def fit_universe(self, histories: Mapping[str, pd.DataFrame], previous=None) -> dict[str, dict]:
        """The served HAR-range: pooled over the universe."""
        return self.fit_pooled(histories)

    def fit_pooled(self, histories: Mapping[str, pd.DataFrame]) -> dict[str, dict]:
        """Shared regression over every ticker's history; per-ticker z quantiles mixed with the
        pooled ones. Returns one JSON-able fit per ticker."""
        parts = {t: _training_rows(h, self.horizon) for t, h in histories.items()}
        parts = {t: p for t, p in parts.items() if len(p[0]) > 0}
        if not parts:
            raise ValueError(f"HAR-range needs more than {WARMUP + self.horizon} sessions")
        x = np.vstack([p[0] for p in parts.values()])
        y = np.vstack([p[1] for p in parts.values()])
        beta = np.linalg.lstsq(x, y, rcond=None)[0]
        std = {t: _standardised(p, beta) for t, p in parts.items()}
        pooled_z = _z_quantiles(np.vstack([s[0] for s in std.values()]))
        up = np.median(np.vstack([s[1] for s in std.values()]), axis=0)
        down = np.median(np.vstack([s[2] for s in std.values()]), axis=0)
        out = {}
        for ticker, (z, _, _) in std.items():
            own = _z_quantiles(z)
            w = Z_POOL_WEIGHT if len(parts) > 1 else 0.0
            out[ticker] = _fitted(beta, (1 - w) * own + w * pooled_z, up, down)
        return out

    def predict_rows(self, fitted: dict, candles: pd.DataFrame, rows: np.ndarray) -> CandlePaths:
        rows = np.asarray(rows, dtype=int)
        x = design_matrix(candles.iloc[: rows.max() + 1])[rows]
        if not np.isfinite(x).all():
            raise ValueError(f"HAR-range needs {WARMUP} sessions before the as-of date")
        beta = np.asarray(fitted["beta"])
        s_close, s_range = _scales(x, beta)
        c0 = candles["close"].to_numpy(dtype="float64")[rows][:, None]
        z = np.asarray(fitted["z"])
        quantiles = c0[..., None] * np.exp(s_close[..., None] * z[None, :, :])
        close = np.repeat(c0, self.horizon, axis=1)
        return CandlePaths(
            open=close.copy(),
            # a valid candle: high >= max(open, close) = last close >= low
            high=c0 * np.exp(s_range * np.maximum(np.asarray(fitted["up"]), 0.0)[None, :]),
            low=c0 * np.exp(s_range * np.minimum(np.asarray(fitted["down"]), 0.0)[None, :]),
            close=close,
            quantiles=quantiles,
        )
