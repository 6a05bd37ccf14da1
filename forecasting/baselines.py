"""The simple baselines every model claim is measured against, as Forecasters.

All of them forecast the close (and open) as the last close: the naive forecast. They differ in
the close quantiles and in the high/low:
- ``naive``: no interval; high/low keep the last session's distance from its close.
- ``rw20``: random walk, normal quantiles from the 20-session std of log returns, sqrt(h) scaling.
- ``ewma``: RiskMetrics EWMA variance (lambda 0.94), normal quantiles, sqrt(h) scaling.
- ``garch``: GARCH(1,1) (zero mean, normal) fitted with the ``arch`` package at each refit;
  the variance is filtered forward with the fitted parameters to every later as-of date.
- ``empirical``: empirical quantiles of the past h-session log returns of the fitted history.
- ``range20``: high/low at the 20-session mean log distance of high and low from the close.
rw20, ewma, garch and empirical take their high/low from ``range20``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.forecaster import CandlePaths, Forecaster, log_returns, normal_quantiles
from forecasting.quantiles import QUANTILE_LEVELS

RANGE_WINDOW = 20
RW_WINDOW = 20
EWMA_LAMBDA = 0.94
EWMA_SEED = 20  # sessions whose mean squared return starts the EWMA recursion


def _close_paths(candles: pd.DataFrame, rows: np.ndarray, horizon: int) -> np.ndarray:
    c0 = candles["close"].to_numpy(dtype="float64")[rows]
    return np.repeat(c0[:, None], horizon, axis=1)


def range_distances(candles: pd.DataFrame, window: int = RANGE_WINDOW) -> tuple[np.ndarray, ...]:
    """Trailing ``window``-session means of log(high/close) and log(low/close), per row."""
    c = candles["close"].to_numpy(dtype="float64")
    up = pd.Series(np.log(candles["high"].to_numpy(dtype="float64") / c))
    down = pd.Series(np.log(candles["low"].to_numpy(dtype="float64") / c))
    return (
        up.rolling(window, min_periods=window).mean().to_numpy(),
        down.rolling(window, min_periods=window).mean().to_numpy(),
    )


def _paths(candles, rows, horizon, quantiles, up, down) -> CandlePaths:
    close = _close_paths(candles, rows, horizon)
    return CandlePaths(
        open=close.copy(),
        high=close * np.exp(np.repeat(up[rows, None], horizon, axis=1)),
        low=close * np.exp(np.repeat(down[rows, None], horizon, axis=1)),
        close=close,
        quantiles=quantiles,
    )


def _no_quantiles(n: int, horizon: int) -> np.ndarray:
    return np.full((n, horizon, len(QUANTILE_LEVELS)), np.nan)


class Naive(Forecaster):
    name = "naive"

    def fit(self, history: pd.DataFrame) -> None:
        return None

    def predict_rows(self, fitted, candles, rows) -> CandlePaths:
        up, down = range_distances(candles, window=1)
        return _paths(candles, rows, self.horizon, _no_quantiles(len(rows), self.horizon), up, down)


class Range20(Forecaster):
    name = "range20"

    def fit(self, history: pd.DataFrame) -> None:
        return None

    def predict_rows(self, fitted, candles, rows) -> CandlePaths:
        up, down = range_distances(candles)
        return _paths(candles, rows, self.horizon, _no_quantiles(len(rows), self.horizon), up, down)


class _VolatilityBaseline(Forecaster):
    """Normal quantiles from a one-session volatility and sqrt(h) scaling; range20 high/low."""

    def sigma_paths(self, fitted, candles: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        """(n, horizon) std of the h-session log return."""
        one = self.sigma_one(fitted, candles)[rows]
        return one[:, None] * np.sqrt(np.arange(1, self.horizon + 1))[None, :]

    def sigma_one(self, fitted, candles: pd.DataFrame) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def predict_rows(self, fitted, candles, rows) -> CandlePaths:
        c0 = candles["close"].to_numpy(dtype="float64")[rows]
        q = normal_quantiles(c0, self.sigma_paths(fitted, candles, rows))
        up, down = range_distances(candles)
        return _paths(candles, rows, self.horizon, q, up, down)


class RandomWalk20(_VolatilityBaseline):
    name = "rw20"

    def fit(self, history: pd.DataFrame) -> None:
        return None

    def sigma_one(self, fitted, candles) -> np.ndarray:
        r = pd.Series(log_returns(candles))
        return r.rolling(RW_WINDOW, min_periods=RW_WINDOW).std(ddof=1).to_numpy()


def ewma_variance(returns: np.ndarray, lam: float = EWMA_LAMBDA, seed: int = EWMA_SEED):
    """Variance forecast for the session after each row: s2[t] = lam*s2[t-1] + (1-lam)*r[t]^2.

    Row 0's return is NaN; the recursion starts at row ``seed`` from the mean squared return of
    rows 1..seed. Earlier rows are NaN.
    """
    out = np.full(len(returns), np.nan)
    if len(returns) <= seed:
        return out
    s2 = float(np.mean(returns[1 : seed + 1] ** 2))
    out[seed] = s2
    for t in range(seed + 1, len(returns)):
        s2 = lam * s2 + (1.0 - lam) * returns[t] ** 2
        out[t] = s2
    return out


class Ewma(_VolatilityBaseline):
    name = "ewma"

    def fit(self, history: pd.DataFrame) -> None:
        return None

    def sigma_one(self, fitted, candles) -> np.ndarray:
        return np.sqrt(ewma_variance(log_returns(candles)))


@dataclass(frozen=True)
class GarchParams:
    """GARCH(1,1) on log returns (not percent): s2[t+1] = omega + alpha r[t]^2 + beta s2[t]."""

    omega: float
    alpha: float
    beta: float
    start_variance: float


def fit_garch(returns: np.ndarray) -> GarchParams:
    """Zero-mean normal GARCH(1,1) by maximum likelihood (``arch``; returns scaled x100)."""
    from arch import arch_model

    r = returns[np.isfinite(returns)] * 100.0
    result = arch_model(r, mean="Zero", vol="GARCH", p=1, q=1, dist="normal").fit(
        disp="off", show_warning=False
    )
    p = result.params
    return GarchParams(
        omega=float(p["omega"]) / 1e4,
        alpha=float(p["alpha[1]"]),
        beta=float(p["beta[1]"]),
        start_variance=float(np.var(r)) / 1e4,
    )


def garch_variance(returns: np.ndarray, params: GarchParams) -> np.ndarray:
    """Next-session variance after each row, filtered from row 1 with fixed parameters."""
    out = np.full(len(returns), np.nan)
    s2 = params.start_variance
    for t in range(1, len(returns)):
        s2 = params.omega + params.alpha * returns[t] ** 2 + params.beta * s2
        out[t] = s2
    return out


class Garch(_VolatilityBaseline):
    name = "garch"

    def fit(self, history: pd.DataFrame) -> GarchParams:
        return fit_garch(log_returns(history))

    def sigma_paths(self, fitted: GarchParams, candles, rows) -> np.ndarray:
        """Sum of the 1..h-step variance forecasts: E s2[t+k] mean-reverts at alpha + beta."""
        s2 = garch_variance(log_returns(candles), fitted)[rows]
        persistence = fitted.alpha + fitted.beta
        cum = np.zeros_like(s2)
        step = s2.copy()
        out = []
        for _ in range(self.horizon):
            cum = cum + step
            out.append(np.sqrt(cum))
            step = fitted.omega + persistence * step
        return np.stack(out, axis=1)


class Empirical(Forecaster):
    """Quantiles of the fitted history's overlapping h-session log returns."""

    name = "empirical"

    def fit(self, history: pd.DataFrame) -> np.ndarray:
        logc = np.log(history["close"].to_numpy(dtype="float64"))
        return np.stack(
            [np.quantile(logc[h:] - logc[:-h], QUANTILE_LEVELS) for h in range(1, self.horizon + 1)]
        )

    def predict_rows(self, fitted: np.ndarray, candles, rows) -> CandlePaths:
        c0 = candles["close"].to_numpy(dtype="float64")[rows]
        q = c0[:, None, None] * np.exp(fitted[None, :, :])
        up, down = range_distances(candles)
        return _paths(candles, rows, self.horizon, q, up, down)


BASELINES: dict[str, type[Forecaster]] = {
    cls.name: cls for cls in (Naive, RandomWalk20, Ewma, Garch, Empirical, Range20)
}
