"""Synthetic candles shared by the forecasting tests."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from forecasting.calendar import next_sessions


def synthetic_candles(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """A valid random-walk OHLCV frame on the NYSE's sessions (shared by the forecasting tests)."""
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0005, 0.02, n)))
    opn = close * np.exp(rng.normal(0, 0.01, n))
    high = np.maximum(opn, close) * np.exp(np.abs(rng.normal(0, 0.01, n)))
    low = np.minimum(opn, close) * np.exp(-np.abs(rng.normal(0, 0.01, n)))
    volume = rng.lognormal(15, 0.3, n)
    index = pd.DatetimeIndex(next_sessions(date(2015, 1, 1), n), name="session_date")
    return pd.DataFrame(
        {"open": opn, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )


def assert_valid_prices(paths) -> None:
    """Every price of CandlePaths is finite and positive; a quantile may be NaN (no interval)."""
    for key in ("open", "high", "low", "close"):
        values = getattr(paths, key)
        assert np.isfinite(values).all() and (values > 0).all(), key
    q = paths.quantiles[~np.isnan(paths.quantiles)]
    assert np.isfinite(q).all() and (q > 0).all(), "quantiles"
