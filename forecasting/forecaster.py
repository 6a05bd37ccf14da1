"""One forecaster interface (the darts shape) for the product model and every baseline.

``fit(history) -> fitted`` sees only candles up to the as-of date; ``predict_rows(fitted, candles,
rows)`` forecasts the ``horizon`` sessions after each as-of row in ``rows`` from rows <= that row
(features are causal), in one vectorised pass, so the backtest can score a model that was fitted
once on every as-of date until the next refit. ``predict`` turns one as-of row into the
``Forecast`` type the database and the web use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forecasting.forecast_set import HORIZON
from forecasting.quantiles import QUANTILE_LEVELS, quantile_index

__all__ = ["HORIZON", "CandlePaths", "Forecaster", "log_returns", "normal_quantiles"]

I_LO, I_HI = quantile_index(0.10), quantile_index(0.90)


@dataclass
class CandlePaths:
    """Predictions for n as-of rows: (n, horizon) prices and (n, horizon, 7) close quantiles."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    quantiles: np.ndarray  # NaN where a forecaster has no interval (naive)
    attention: np.ndarray | None = None  # (n, window) for the LSTM, else None

    def prices(self) -> dict[str, np.ndarray]:
        """The (n, horizon) arrays by name, close_lo/close_hi being the 80% interval."""
        return {
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "close_lo": self.quantiles[..., I_LO],
            "close_hi": self.quantiles[..., I_HI],
        }

    def check_finite(self, name: str) -> None:
        """ValueError when a price is not finite and positive: never store such a forecast."""
        for key, arr in [*self.prices().items(), ("quantiles", self.quantiles)]:
            bad = ~np.isfinite(arr) | (arr <= 0)
            if key in ("close_lo", "close_hi", "quantiles"):
                bad &= ~np.isnan(arr)  # a missing interval is allowed, an infinite one is not
            if bad.any():
                raise ValueError(f"{name} produced a non-finite or non-positive {key}")


class Forecaster(ABC):
    """Fit on history up to an as-of date; predict four candles with close quantiles."""

    name: str = "forecaster"
    horizon: int = HORIZON

    @abstractmethod
    def fit(self, history: pd.DataFrame) -> Any:
        """Fit on ``history`` (candles up to and including the as-of session)."""

    @abstractmethod
    def predict_rows(self, fitted: Any, candles: pd.DataFrame, rows: np.ndarray) -> CandlePaths:
        """Forecast after each as-of row index in ``rows`` using only candles[: row + 1]."""

    def predict_last(self, fitted: Any, candles: pd.DataFrame) -> CandlePaths:
        """The forecast after the last row of ``candles``."""
        return self.predict_rows(fitted, candles, np.array([len(candles) - 1]))


def log_returns(candles: pd.DataFrame) -> np.ndarray:
    """Close-to-close log returns; element 0 is NaN."""
    c = candles["close"].to_numpy(dtype="float64")
    out = np.full(len(c), np.nan)
    out[1:] = np.log(c[1:] / c[:-1])
    return out


def normal_quantiles(close0: np.ndarray, sigma_h: np.ndarray) -> np.ndarray:
    """(n, h, 7) close quantiles of a zero-mean log-normal with h-session std ``sigma_h``."""
    from scipy.stats import norm

    z = norm.ppf(np.asarray(QUANTILE_LEVELS))
    return close0[:, None, None] * np.exp(sigma_h[..., None] * z[None, None, :])
