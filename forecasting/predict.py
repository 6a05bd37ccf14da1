"""Inference: the next ``horizon`` sessions' candles, close quantiles and attention weights.

The served numbers come from ``forecasting.calibration.serve``: the close quantiles blend the
network's with HAR-range's in log-return space with per-horizon weights fitted on held-out data,
the close is their median (q50: one centre), the open is the last close moved by the (gated)
network move, and the high/low come from whichever of the two was clearly better there
(HAR-range by default).
All prices are positive and low <= min(open, close) <= max(open, close) <= high.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import numpy as np
import pandas as pd

from forecasting import features as F
from forecasting.calibration import serve
from forecasting.forecast_set import PRICE_KEYS, Forecast, ForecastCandle, candles_from
from forecasting.range_model import HarRange
from forecasting.train import InsufficientHistoryError, TrainedModel

__all__ = ["PRICE_KEYS", "Forecast", "ForecastCandle", "candles_from", "forecast", "forecast_many"]


def decode(pred: np.ndarray, close0: np.ndarray, sigma: np.ndarray, calibration: dict, har) -> dict:
    """Network outputs (n, horizon, 10) + HAR-range paths -> dict of (n, horizon) price arrays
    (open, high, low, close, close_lo, close_hi) plus ``quantiles`` (n, horizon, 7)."""
    from forecasting.forecaster import I_HI, I_LO

    served = serve(pred, close0, sigma, calibration, har)
    q = served["quantiles"]
    # the served close is always inside its own 80% interval
    served["close_lo"] = np.minimum(q[..., I_LO], served["close"])
    served["close_hi"] = np.maximum(q[..., I_HI], served["close"])
    return served


def model_mix(calibration: dict) -> dict:
    """Which model produced each part of the served forecast (stored with every forecast)."""
    blend = [float(w) for w in calibration["blend"]]
    return {
        "close": ["median"] * len(blend),
        "quantiles": [{"lstm": w, "har_range": round(1 - w, 4)} for w in blend],
        "range": list(calibration["range_from"]),
    }


def har_paths(trained: TrainedModel, candles: pd.DataFrame, ends: np.ndarray):
    """HAR-range's forecasts for as-of rows ``ends`` with the fit stored in the model version."""
    if "har_range" not in trained.calibration:
        serve(None, [], [], trained.calibration, None)  # raises the clear "older candlecast" error
    return HarRange(horizon=trained.params.horizon).predict_rows(
        trained.calibration["har_range"], candles, ends
    )


def prepare_inputs(
    trained: TrainedModel, candles: pd.DataFrame, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(windows, last close, sigma) for as-of rows ``ends`` of ``candles`` (causal features)."""
    feats = F.compute_features(candles)
    matrix = F.normalized_matrix(feats, trained.normalization)
    x = F.make_windows(matrix, ends, trained.params.window)
    close0 = candles["close"].to_numpy(dtype="float64")[ends]
    sigma = feats["sigma"].to_numpy()[ends]
    return x, close0, sigma


def _history(trained: TrainedModel, candles: pd.DataFrame, as_of: date | None) -> pd.DataFrame:
    data = candles if as_of is None else candles.loc[candles.index <= pd.Timestamp(as_of)]
    needed = F.first_valid_end(trained.params.window) + 1
    if len(data) < needed:
        raise InsufficientHistoryError(
            f"{trained.ticker}: forecasting needs at least {needed} sessions (window "
            f"{trained.params.window} + feature warm-up {F.WARMUP}); {len(data)} available"
        )
    # Features only look back LONG_VOL_WINDOW rows, so the tail is enough (and faster).
    return data.iloc[-(needed + F.WARMUP) :]


def network_only(calibration: dict) -> dict:
    """The calibration that serves the network alone: its own quantiles and high/low."""
    horizon = len(calibration["blend"])
    return {**calibration, "blend": [1.0] * horizon, "range_from": ["lstm"] * horizon}


def _build(
    trained: TrainedModel, data: pd.DataFrame, prices: dict, weights, exchange: str, parts: dict
) -> Forecast:
    from forecasting.calendar import next_sessions

    as_of = data.index[-1].date()
    window = trained.params.window
    dates = next_sessions(as_of, trained.params.horizon, exchange=exchange)
    return Forecast(
        ticker=trained.ticker,
        as_of=as_of,
        candles=candles_from(prices, dates),
        attention=[float(w) for w in weights],
        attention_dates=[ts.date() for ts in data.index[-window:]],
        model_mix=model_mix(trained.calibration),
        components={name: candles_from(p, dates) for name, p in parts.items()},
    )


def forecast(
    trained: TrainedModel,
    candles: pd.DataFrame,
    *,
    as_of: date | None = None,
    exchange: str = "XNYS",
    universe=None,
) -> Forecast:
    """Forecast the ``horizon`` sessions after ``as_of`` (default: last row) from rows <= as_of.

    A global model (``forecasting.global_serve``) may need the universe's candles: ``universe``
    is a loader ``(tickers, as_of, rows) -> {ticker: candles}``."""
    return forecast_many(
        [(trained, candles)], as_of=as_of, exchange_for=lambda _t: exchange, universe=universe
    )[0]


def forecast_many(
    items: list[tuple[TrainedModel, pd.DataFrame]],
    *,
    as_of: date | None = None,
    exchange_for: Callable[[str], str] = lambda _t: "XNYS",
    universe=None,
) -> list[Forecast]:
    """One forecast per (model, candles) pair; each model is called directly once (fast)."""
    from forecasting import global_serve as GS

    out = []
    for trained, candles in items:
        if GS.is_global(trained):
            out.append(
                GS.forecast_global(
                    trained,
                    candles,
                    as_of=as_of,
                    exchange=exchange_for(trained.ticker),
                    universe=universe,
                )
            )
            continue
        from forecasting import model as M

        data = _history(trained, candles, as_of)
        x, close0, sigma = prepare_inputs(trained, data, np.array([len(data) - 1]))
        pred, weights = M.infer(trained.model, x)
        ends = np.array([len(data) - 1])
        har = har_paths(trained, data, ends)
        prices = decode(pred, close0, sigma, trained.calibration, har)
        parts = {
            "lstm": decode(pred, close0, sigma, network_only(trained.calibration), har),
            "har_range": {**har.prices(), "quantiles": har.quantiles},
        }
        exchange = exchange_for(trained.ticker)
        out.append(_build(trained, data, prices, weights[0], exchange, parts))
    return out
