"""The one way a forecast of ticker T as of D is made: ``forecast_set(ticker, as_of, policy)``.

The policy says which model serves (``ModelPolicy.model_for``): the night's global fit or a
backfill's current model (``UseModel``), a fresh stored model or one fitted now (the ``forecast``
command, ``jobs.cli_model``), the newest usable stored model (the web's live fallback,
``web.live``). Callers differ only in the policy and in where they write the result. Target dates
always come from the exchange calendar. The backtest walks the same served model over thousands
of as-of dates in one vectorised pass through the same network code
(``forecasting.served.ServedModel`` in ``forecasting.backtest.walk_forward``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Protocol

import numpy as np
import pandas as pd

from forecasting.forecast_set import PRICE_KEYS, Forecast, ForecastCandle, candles_from
from forecasting.global_serve import UniverseLoader, forecast_global
from forecasting.train import TrainedModel

__all__ = [
    "PRICE_KEYS",
    "Forecast",
    "ForecastCandle",
    "ModelPolicy",
    "UseModel",
    "baseline_sets",
    "candles_from",
    "forecast_set",
]


class ModelPolicy(Protocol):
    """Which model forecasts ``ticker`` as of ``as_of`` (it may load or fit one)."""

    def model_for(self, ticker: str, as_of: date) -> TrainedModel: ...


@dataclass(frozen=True)
class UseModel:
    """The model at hand: the night's global fit, a backfill's current model, a test's fit."""

    trained: TrainedModel

    def model_for(self, ticker: str, as_of: date) -> TrainedModel:
        return self.trained


def forecast_set(
    ticker: str,
    as_of: date,
    policy: ModelPolicy,
    *,
    candles: pd.DataFrame,
    exchange: str = "XNYS",
    universe: UniverseLoader | None = None,
) -> Forecast:
    """The four candles after ``as_of`` (from ``candles`` rows <= as_of) of the model the
    policy gives. A model fitted before ``as_of`` needs the universe's later candles for its
    cross-sectional inputs: ``universe(tickers, as_of, rows) -> {ticker: candles}``."""
    trained = policy.model_for(ticker, as_of)
    if trained.ticker != ticker:
        raise ValueError(f"the model policy gave {trained.ticker}'s model for {ticker}")
    return forecast_global(trained, candles, as_of=as_of, exchange=exchange, universe=universe)


def baseline_sets(forecast: Forecast, history: pd.DataFrame) -> dict[str, list[ForecastCandle]]:
    """Every baseline (``forecasting.baselines``) fitted on ``history`` (candles up to the
    forecast's as-of date) for the forecast's own target dates: what the nightly task stores
    beside the served forecast, through the same Forecaster interface the backtest scores."""
    from forecasting.baselines import BASELINES

    dates = [c.date for c in forecast.candles]
    last = np.array([len(history) - 1])
    out = {}
    for name, cls in BASELINES.items():
        model = cls()
        paths = model.predict_ticker(
            model.fit_universe({forecast.ticker: history}), forecast.ticker, history, last, None
        )
        if paths is not None:
            out[name] = paths.candles(dates)
    return out
