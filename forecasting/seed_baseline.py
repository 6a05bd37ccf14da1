"""The seed project's recipe, reimplemented faithfully, only to compare against in backtests.

Close prices only, MinMax-scaled with min/max fitted on the training window, 60-step windows,
two LSTM(50) layers with return_sequences, Keras ``AdditiveAttention`` over the sequence
(query = value = the LSTM output) multiplied back into it, Flatten, Dense(1), Dropout(0.2),
BatchNormalization, MSE loss, Adam, 50 epochs, batch 32, 20% validation split with early
stopping; four steps predicted recursively (each prediction is appended to the window).
The scaler is kept as two floats (no pickle). No interval: close_lo/close_hi are NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forecasting.forecaster import CandlePaths, Forecaster
from forecasting.quantiles import QUANTILE_LEVELS

WINDOW = 60
SEED_EPOCHS = 50
BATCH_SIZE = 32


@dataclass
class SeedModel:
    model: Any
    scale_min: float
    scale_max: float

    def scale(self, values: np.ndarray) -> np.ndarray:
        return (values - self.scale_min) / (self.scale_max - self.scale_min)

    def unscale(self, values: np.ndarray) -> np.ndarray:
        return values * (self.scale_max - self.scale_min) + self.scale_min


def build_seed_model(window: int = WINDOW):
    import keras

    inputs = keras.Input(shape=(window, 1))
    x = keras.layers.LSTM(50, return_sequences=True)(inputs)
    x = keras.layers.LSTM(50, return_sequences=True)(x)
    attention = keras.layers.AdditiveAttention(name="attention_weight")([x, x])
    x = keras.layers.Multiply()([x, attention])
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(1)(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, outputs, name="seed")
    model.compile(optimizer="adam", loss="mean_squared_error")
    return model


def train_seed(close: pd.Series, *, seed: int = 42, epochs: int = SEED_EPOCHS) -> SeedModel:
    """Fit the seed model on one training window of closes (oldest first)."""
    import keras

    values = close.to_numpy(dtype="float64")
    if len(values) <= WINDOW + 10:
        raise ValueError(f"seed baseline needs more than {WINDOW + 10} closes, got {len(values)}")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + 1.0
    seed_model = SeedModel(model=None, scale_min=lo, scale_max=hi)
    scaled = seed_model.scale(values)
    idx = np.arange(WINDOW, len(scaled))
    x = np.stack([scaled[i - WINDOW : i] for i in idx])[..., None].astype("float32")
    y = scaled[idx].astype("float32")
    keras.utils.set_random_seed(seed)
    model = build_seed_model()
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True)
    model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        validation_split=0.2,
        callbacks=[stop],
        verbose=0,
    )
    seed_model.model = model
    return seed_model


def predict_recursive(seed_model: SeedModel, windows: np.ndarray, horizon: int) -> np.ndarray:
    """(n, WINDOW) closes -> (n, horizon) predicted closes, one step at a time."""
    from forecasting.model import _numpy

    current = seed_model.scale(np.asarray(windows, dtype="float64")).astype("float32")
    out = np.empty((len(current), horizon))
    for h in range(horizon):
        step = _numpy(seed_model.model(current[..., None], training=False))[:, 0]
        out[:, h] = seed_model.unscale(step.astype("float64"))
        current = np.concatenate([current[:, 1:], step[:, None]], axis=1)
    return out


class SeedRecipe(Forecaster):
    """The seed recipe as a Forecaster: refitted at each refit date, close only, no interval."""

    name = "seed"

    def __init__(self, seed: int = 0, epochs: int | None = None) -> None:
        self.seed, self.epochs = seed, epochs

    def fit(self, history: pd.DataFrame) -> SeedModel:
        epochs = SEED_EPOCHS if self.epochs is None else self.epochs
        return train_seed(history["close"], seed=self.seed, epochs=epochs)

    def predict_rows(
        self, fitted: SeedModel, candles: pd.DataFrame, rows: np.ndarray
    ) -> CandlePaths:
        closes = candles["close"].to_numpy(dtype="float64")
        windows = np.stack([closes[r - WINDOW + 1 : r + 1] for r in rows])
        close = predict_recursive(fitted, windows, self.horizon)
        nan = np.full((*close.shape, len(QUANTILE_LEVELS)), np.nan)
        return CandlePaths(open=close, high=close, low=close, close=close, quantiles=nan)
