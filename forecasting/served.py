"""The served model as a Forecaster: the global network on top of pooled HAR-range, gated.

``fit_universe`` is one global fit over every ticker's history (warm-started from ``previous``
when given); ``predict_ticker`` gives the served forecast of one ticker's as-of rows with its
parts as ``components``: ``lstm`` (the network's correction served in full) and ``har_range``
(no correction). The universe's per-session inputs are built once from ``universe`` (every
input at session t uses candles up to t only), so a walk-forward needs no re-computation.
The same network code serves one date in ``forecasting.global_serve.forecast_global``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from forecasting.forecaster import CandlePaths, Forecaster
from forecasting.model_names import PRODUCT
from forecasting.params import ModelParams


def served_paths(parts: dict[str, dict[str, np.ndarray]]) -> CandlePaths:
    """``global_net.predict_rows``'s parts as the served CandlePaths, its parts as components:
    ``lstm`` (the network's correction in full) and ``har_range`` (no correction)."""
    served = CandlePaths.from_prices(parts["candlecast"])
    served.components = {
        "lstm": CandlePaths.from_prices(parts["network"]),
        "har_range": CandlePaths.from_prices(parts["har_range"]),
    }
    return served


class ServedModel(Forecaster):
    """What the product serves, fitted once per refit date over the whole universe."""

    name = PRODUCT
    warm_starts = True

    def __init__(self, params: ModelParams, universe: Mapping[str, pd.DataFrame]) -> None:
        from forecasting import global_inputs as G

        self.params = params
        self.horizon = params.horizon
        self.inputs = G.build_inputs(universe)

    def fit(self, history: pd.DataFrame) -> Any:
        raise TypeError("the served model is fitted over the universe: use fit_universe")

    def predict_rows(self, fitted: Any, candles: pd.DataFrame, rows: np.ndarray) -> CandlePaths:
        raise TypeError("the served model forecasts one ticker of its universe: predict_ticker")

    def fit_universe(self, histories: Mapping[str, pd.DataFrame], previous: Any = None) -> Any:
        from forecasting.global_net import fit_global

        return fit_global(histories, self.params, previous=previous)

    def predict_ticker(
        self, fitted: Any, ticker: str, candles: pd.DataFrame, rows: np.ndarray, targets: Any
    ) -> CandlePaths | None:
        from forecasting.global_net import predict_rows

        if ticker not in fitted.har:
            return None
        return served_paths(predict_rows(fitted, self.inputs[ticker], ticker, rows, targets))
