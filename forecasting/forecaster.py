"""One forecaster interface (the darts / statsforecast shape) for the served model and every
baseline, so one walk-forward loop (``forecasting.backtest.walk_forward``) scores them all.

``fit_universe(histories) -> fitted`` sees every ticker's candles up to the refit date (one fit
per ticker by default through ``fit(history)``; pooled HAR-range and the served global network fit
once over all of them). ``predict_ticker(fitted, ticker, candles, rows, targets)`` forecasts the
``horizon`` sessions after each as-of row in ``rows`` from rows <= that row (inputs are causal), in
one vectorised pass, so a fit serves every as-of date until the next refit; ``targets`` are the
exchange calendar's sessions after each as-of row. One forecast for one date is
``forecasting.forecast_path.forecast_set``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from forecasting.forecast_set import HORIZON, ForecastCandle, candles_from
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
    attention: np.ndarray | None = None  # (n, window) for the network, else None
    components: dict[str, CandlePaths] = field(default_factory=dict)  # the served model's parts

    @classmethod
    def from_prices(cls, prices: Mapping[str, np.ndarray]) -> CandlePaths:
        """From arrays by name (open, high, low, close, quantiles and optionally attention)."""
        return cls(
            open=prices["open"],
            high=prices["high"],
            low=prices["low"],
            close=prices["close"],
            quantiles=prices["quantiles"],
            attention=prices.get("attention"),
        )

    def candles(self, dates: Sequence[date], row: int = 0) -> list[ForecastCandle]:
        """As-of row ``row`` as the forecast type's candles on ``dates``."""
        return candles_from({**self.prices(), "quantiles": self.quantiles}, list(dates), row)

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


class Forecaster(ABC):
    """Fit on history up to an as-of date; predict four candles with close quantiles."""

    name: str = "forecaster"
    horizon: int = HORIZON
    warm_starts: bool = False  # fit_universe(previous=...) continues from the previous fit

    def fit_universe(self, histories: Mapping[str, pd.DataFrame], previous: Any = None) -> Any:
        """Fit on every ticker's history up to the refit date (default: one fit per ticker)."""
        return {ticker: self.fit(history) for ticker, history in histories.items()}

    def predict_ticker(
        self, fitted: Any, ticker: str, candles: pd.DataFrame, rows: np.ndarray, targets: Any
    ) -> CandlePaths | None:
        """Forecasts after ``ticker``'s as-of ``rows`` (None when the fit left the ticker out)."""
        if ticker not in fitted:
            return None
        return self.predict_rows(fitted[ticker], candles, rows)

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
