"""The network: stacked LSTMs, additive attention over time, direct multi-horizon candle heads.

Only ``train`` and ``predict`` import this module (lazily), so importing ``forecasting`` stays
free of TensorFlow. Outputs are in volatility units relative to the last close (see
``features``); ``CandleParameterization`` makes every non-negative spread non-negative by
construction (softplus), so decoded candles are always valid without any clipping.
"""

from __future__ import annotations

import keras
from keras import ops

from forecasting.forecast_set import HORIZON

PACKAGE = "candlecast"
# close, open, up-spread, down-spread, then three gaps below the median close (to the 0.25, 0.10
# and 0.05 quantiles) and three above it (0.75, 0.90, 0.95): 10 numbers per horizon.
N_OUTPUTS = 10
LOWER_LEVELS = (0.25, 0.10, 0.05)
UPPER_LEVELS = (0.75, 0.90, 0.95)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TemporalAttention(keras.layers.Layer):
    """Bahdanau-style additive attention over time steps, queried by the last hidden state.

    score_t = v . tanh(W_k h_t + W_q h_T + b); weights = softmax(score); context = sum_t w_t h_t.
    Returns ``[context, weights]`` so the weights can be read out for each forecast.
    """

    def __init__(self, units: int = 16, uniform: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        # uniform=True is the ablation: equal weights (mean pooling over time), nothing learnt
        self.uniform = bool(uniform)

    def build(self, input_shape):
        if self.uniform:  # nothing to learn: no weights (so no "missing gradients" warnings)
            return
        features = int(input_shape[-1])
        self.w_keys = self.add_weight(
            name="w_keys", shape=(features, self.units), initializer="glorot_uniform"
        )
        self.w_query = self.add_weight(
            name="w_query", shape=(features, self.units), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        self.v = self.add_weight(name="v", shape=(self.units, 1), initializer="glorot_uniform")

    def call(self, sequence):
        if self.uniform:
            scores = ops.zeros_like(sequence[..., 0])
        else:
            query = sequence[:, -1, :]
            keys = ops.matmul(sequence, self.w_keys)
            q = ops.expand_dims(ops.matmul(query, self.w_query), 1)
            scores = ops.squeeze(ops.matmul(ops.tanh(keys + q + self.bias), self.v), -1)
        weights = ops.softmax(scores, axis=-1)
        context = ops.sum(sequence * ops.expand_dims(weights, -1), axis=1)
        return [context, weights]

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], input_shape[-1]), (input_shape[0], input_shape[1])]

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "uniform": self.uniform})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class CandleParameterization(keras.layers.Layer):
    """Maps raw head outputs (batch, horizon*6) to (batch, horizon, 6) candle parameters.

    Columns: close and open log-return (free sign), then softplus spreads (>= 0) for the high
    above max(open, close), the low below min(open, close), and the gaps between consecutive
    close quantiles below / above the median close (so the quantiles never cross).
    """

    def __init__(self, horizon: int = HORIZON, **kwargs):
        super().__init__(**kwargs)
        self.horizon = int(horizon)

    def call(self, raw):
        x = ops.reshape(raw, (-1, self.horizon, N_OUTPUTS))
        return ops.concatenate([x[..., :2], ops.softplus(x[..., 2:])], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.horizon, N_OUTPUTS)

    def get_config(self):
        config = super().get_config()
        config.update({"horizon": self.horizon})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class LastStep(keras.layers.Layer):
    """The last time step of a sequence (a serialisable replacement for a Lambda slice)."""

    def call(self, sequence):
        return sequence[:, -1, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


def _pinball(error, q):
    return ops.maximum(q * error, (q - 1.0) * error)


@keras.saving.register_keras_serializable(package=PACKAGE)
def candle_loss(y_true, y_pred):
    """Median (MAE) losses on the candle plus pinball losses for the six close quantiles.

    y_true (batch, horizon, 4): close, open, high, low as log-ratios to the last close / sigma.
    The quantile terms do not push on the median close (stop_gradient).
    """
    close, opn, up, down = (y_pred[..., k] for k in range(4))
    t_close, t_open, t_high, t_low = (y_true[..., k] for k in range(4))
    high = ops.maximum(close, opn) + up
    low = ops.minimum(close, opn) - down
    centre = ops.stop_gradient(close)
    loss = (
        2.0 * ops.abs(t_close - close)
        + ops.abs(t_open - opn)
        + 0.5 * ops.abs(t_high - high)
        + 0.5 * ops.abs(t_low - low)
    )
    below = centre
    for k, q in enumerate(LOWER_LEVELS):
        below = below - y_pred[..., 4 + k]
        loss = loss + _pinball(t_close - below, q)
    above = centre
    for k, q in enumerate(UPPER_LEVELS):
        above = above + y_pred[..., 7 + k]
        loss = loss + _pinball(t_close - above, q)
    return ops.mean(loss, axis=-1)


def build_model(
    window: int, n_features: int, horizon: int, units: int, attention: bool = True
) -> keras.Model:
    """Two-output model: ``[candles (batch, horizon, 6), attention (batch, window)]``.

    The final dense layer is zero-initialised, so an untrained model forecasts exactly the
    last close (the naive forecast) with constant spreads. ``attention=False`` replaces the
    learnt attention by uniform weights (the ablation the backtest measures).
    """
    inputs = keras.Input(shape=(window, n_features), name="features")
    h = keras.layers.LSTM(units, return_sequences=True, name="lstm_1")(inputs)
    h = keras.layers.LSTM(units, return_sequences=True, name="lstm_2")(h)
    context, weights = TemporalAttention(
        max(units // 2, 4), uniform=not attention, name="attention"
    )(h)
    last_step = LastStep(name="last_step")(h)
    merged = keras.layers.Concatenate(name="merge")([context, last_step])
    hidden = keras.layers.Dense(units, activation="tanh", name="hidden")(merged)
    raw = keras.layers.Dense(
        horizon * N_OUTPUTS, kernel_initializer="zeros", bias_initializer="zeros", name="head"
    )(hidden)
    candles = CandleParameterization(horizon, name="candles")(raw)
    return keras.Model(inputs, [candles, weights], name="candlecast")


def training_view(model: keras.Model) -> keras.Model:
    """Single-output view (candles only) sharing weights with ``model``, used for fitting."""
    return keras.Model(model.inputs, model.outputs[0], name="candlecast_train")


def _numpy(tensor):
    """Tensor -> numpy (``.numpy()`` avoids a NumPy 2 copy-keyword warning in convert_to_numpy)."""
    return tensor.numpy() if hasattr(tensor, "numpy") else ops.convert_to_numpy(tensor)


def infer(model: keras.Model, x, batch_size: int = 1024):
    """(candles, attention) as numpy for a batch of windows: direct calls, no predict() overhead."""
    import numpy as np

    candles, weights = [], []
    for start in range(0, len(x), batch_size):
        out = model(x[start : start + batch_size], training=False)
        candles.append(_numpy(out[0]))
        weights.append(_numpy(out[1]))
    return np.concatenate(candles).astype("float64"), np.concatenate(weights).astype("float64")
