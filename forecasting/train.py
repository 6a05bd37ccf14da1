"""The trained model type and the history rules every fit uses.

A ``TrainedModel`` is one ticker's view of a night's global fit (``forecasting.global_serve``):
the shared network, its normalisation, and the ticker's calibration (its HAR-range fit, the gate,
the universe). ``history_slice`` is the history_years window a fit sees up to its as-of date.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from forecasting.params import ModelParams


class InsufficientHistoryError(ValueError):
    """Too few sessions to build the input windows (and, for training, the time-ordered blocks)."""


@dataclass
class TrainedModel:
    ticker: str
    model: Any  # the global keras.Model with outputs [corrections, attention]
    params: ModelParams
    normalization: dict
    calibration: dict
    train_start: date
    train_end: date
    metrics: dict = field(default_factory=dict)
    val_loss: float = float("nan")


def history_slice(candles: pd.DataFrame, as_of: date | None, history_years: int) -> pd.DataFrame:
    """Rows <= as_of (default: last row) and after as_of - history_years."""
    if as_of is not None:
        candles = candles.loc[candles.index <= pd.Timestamp(as_of)]
    if len(candles) == 0:
        return candles
    end = candles.index[-1]
    return candles.loc[candles.index > end - pd.DateOffset(years=history_years)]


def attention_entropy(weights: np.ndarray) -> float:
    """Mean entropy of attention rows divided by log(window): 1.0 is uniform attention."""
    w = np.clip(weights, 1e-12, None)
    return float(np.mean(-(w * np.log(w)).sum(axis=1)) / math.log(weights.shape[1]))
