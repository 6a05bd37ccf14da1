"""Inference: the next ``horizon`` sessions' candles, an 80% close interval and attention weights.

Decoding (all valid by construction, no clipping), with C0 the last close and s = sigma_t:
    close = C0 * exp(s * alpha_c * p_close)       open = C0 * exp(s * alpha_o * p_open)
    high  = max(open, close) * exp(s * up)        low  = min(open, close) * exp(-s * down)
    close_lo = close * exp(-s * scale_lo * q_lo)  close_hi = close * exp(s * scale_hi * q_hi)
where up, down, q_lo, q_hi >= 0 (softplus in the network) and the scales are >= 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from forecasting import features as F
from forecasting.train import InsufficientHistoryError, TrainedModel


@dataclass
class ForecastCandle:
    date: date
    horizon: int
    open: float
    high: float
    low: float
    close: float
    close_lo: float
    close_hi: float
    # Close quantiles (prices) at forecasting.quantiles.QUANTILE_LEVELS; close_lo/close_hi are
    # the 0.10/0.90 ones (the 80% interval).
    quantiles: tuple[float, ...] = ()


@dataclass
class Forecast:
    ticker: str
    as_of: date
    candles: list[ForecastCandle]
    attention: list[float]
    attention_dates: list[date]
    # Which model(s) produced the served numbers, e.g. {"close": "naive", "quantiles":
    # {"har_range": 0.7, "lstm": 0.3}, "range": "har_range"}; stored with every forecast.
    model_mix: dict = field(default_factory=dict)


def decode(pred: np.ndarray, close0: np.ndarray, sigma: np.ndarray, calibration: dict) -> dict:
    """Network outputs (n, horizon, 6) -> dict of (n, horizon) price arrays (see module doc)."""
    c0 = np.asarray(close0, dtype="float64")[:, None]
    s = np.asarray(sigma, dtype="float64")[:, None]
    a_c = np.asarray(calibration["alpha_close"])[None, :]
    a_o = np.asarray(calibration["alpha_open"])[None, :]
    close = c0 * np.exp(s * a_c * pred[..., 0])
    opn = c0 * np.exp(s * a_o * pred[..., 1])
    high = np.maximum(opn, close) * np.exp(s * pred[..., 2])
    low = np.minimum(opn, close) * np.exp(-s * pred[..., 3])
    lo = close * np.exp(-s * np.asarray(calibration["scale_lo"])[None, :] * pred[..., 4])
    hi = close * np.exp(s * np.asarray(calibration["scale_hi"])[None, :] * pred[..., 5])
    return {"open": opn, "high": high, "low": low, "close": close, "close_lo": lo, "close_hi": hi}


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


def _build(
    trained: TrainedModel, data: pd.DataFrame, prices: dict, weights, exchange: str
) -> Forecast:
    from forecasting.calendar import next_sessions

    as_of = data.index[-1].date()
    window = trained.params.window
    dates = next_sessions(as_of, trained.params.horizon, exchange=exchange)
    candles = [
        ForecastCandle(
            date=d,
            horizon=h + 1,
            **{k: float(v[0, h]) for k, v in prices.items()},
        )
        for h, d in enumerate(dates)
    ]
    return Forecast(
        ticker=trained.ticker,
        as_of=as_of,
        candles=candles,
        attention=[float(w) for w in weights],
        attention_dates=[ts.date() for ts in data.index[-window:]],
    )


def forecast(
    trained: TrainedModel,
    candles: pd.DataFrame,
    *,
    as_of: date | None = None,
    exchange: str = "XNYS",
) -> Forecast:
    """Forecast the ``horizon`` sessions after ``as_of`` (default: last row) from rows <= as_of."""
    return forecast_many([(trained, candles)], as_of=as_of, exchange_for=lambda _t: exchange)[0]


def forecast_many(
    items: list[tuple[TrainedModel, pd.DataFrame]],
    *,
    as_of: date | None = None,
    exchange_for: Callable[[str], str] = lambda _t: "XNYS",
) -> list[Forecast]:
    """One forecast per (model, candles) pair; each model is called directly once (fast)."""
    from forecasting import model as M

    out = []
    for trained, candles in items:
        data = _history(trained, candles, as_of)
        x, close0, sigma = prepare_inputs(trained, data, np.array([len(data) - 1]))
        pred, weights = M.infer(trained.model, x)
        prices = decode(pred, close0, sigma, trained.calibration)
        out.append(_build(trained, data, prices, weights[0], exchange_for(trained.ticker)))
    return out
