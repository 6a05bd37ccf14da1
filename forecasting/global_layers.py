"""The global network: one LSTM with attention over every ticker's windows, a zero-start
correction to HAR-range.

Imported lazily (TensorFlow is heavy). The network reads a window of per-session inputs and the
static inputs of the as-of session (``forecasting.global_inputs``) and outputs, per horizon, two
log-variance corrections: one for the close quantiles and one for the high/low distances. The
output layer starts at zero, so an untrained network serves exactly HAR-range; training moves it
only where the data say HAR-range is wrong (HARNet's idea).
"""

from __future__ import annotations

import keras
from keras import ops

from forecasting.forecast_set import HORIZON
from forecasting.model import PACKAGE, LastStep, TemporalAttention, _numpy
from forecasting.quantiles import QUANTILE_LEVELS

LIMIT = 2.0  # corrections are soft-limited to +-LIMIT in log variance (a factor e of the scale)
N_Z = len(QUANTILE_LEVELS)
# y_true columns per horizon: the return / s_close, high / s_range, low / s_range, the ticker's
# seven standardised quantiles, its up and down distances, and the row's weight (s_close).
Y_COLUMNS = 3 + N_Z + 3
HL_WEIGHT = 0.25


@keras.saving.register_keras_serializable(package=PACKAGE)
class SoftLimit(keras.layers.Layer):
    """(batch, horizon * 2) -> (batch, horizon, 2) corrections ``LIMIT * tanh(raw / LIMIT)``:
    zero at zero with slope one, never beyond +-LIMIT."""

    def __init__(self, horizon: int = HORIZON, **kwargs):
        super().__init__(**kwargs)
        self.horizon = int(horizon)

    def call(self, raw):
        x = ops.reshape(raw, (-1, self.horizon, 2))
        return LIMIT * ops.tanh(x / LIMIT)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.horizon, 2)

    def get_config(self):
        return {**super().get_config(), "horizon": self.horizon}


def _pinball(error, q):
    return ops.maximum(q * error, (q - 1.0) * error)


@keras.saving.register_keras_serializable(package=PACKAGE)
def correction_loss(y_true, y_pred):
    """Pinball loss of the served close quantiles (seven levels) plus HL_WEIGHT times the
    absolute error of the served high and low, in HAR-range's units, weighted by s_close so the
    loss weighs rows as the interval score in price terms does."""
    scale = ops.exp(0.5 * y_pred[..., 0])
    scale_hl = ops.exp(0.5 * y_pred[..., 1])
    ret, up, down = y_true[..., 0], y_true[..., 1], y_true[..., 2]
    loss = 0.0
    for k, q in enumerate(QUANTILE_LEVELS):
        loss = loss + _pinball(ret - scale * y_true[..., 3 + k], q)
    loss = loss / N_Z
    u, d = y_true[..., 3 + N_Z], y_true[..., 4 + N_Z]
    hl = ops.abs(up - scale_hl * u) + ops.abs(down - scale_hl * d)
    weight = y_true[..., 5 + N_Z]
    return ops.mean(weight * (loss + HL_WEIGHT * hl), axis=-1)


def build_network(
    window: int, n_seq: int, n_static: int, horizon: int, units: int, attention: bool = True
) -> keras.Model:
    """Inputs ``[sequence (batch, window, n_seq), static (batch, n_static)]``; outputs
    ``[corrections (batch, horizon, 2), attention (batch, window)]``."""
    seq = keras.Input(shape=(window, n_seq), name="sequence")
    static = keras.Input(shape=(n_static,), name="static")
    h = keras.layers.LSTM(units, return_sequences=True, name="lstm")(seq)
    context, weights = TemporalAttention(
        max(units // 2, 4), uniform=not attention, name="attention"
    )(h)
    last = LastStep(name="last_step")(h)
    merged = keras.layers.Concatenate(name="merge")([context, last, static])
    hidden = keras.layers.Dense(units, activation="tanh", name="hidden")(merged)
    raw = keras.layers.Dense(
        horizon * 2, kernel_initializer="zeros", bias_initializer="zeros", name="correction"
    )(hidden)
    # a linear path from the static inputs (HAR-range's forecast, the universe's state, the
    # calendar): what a linear HAR extension would learn, learnt first; zero at the start too
    linear = keras.layers.Dense(
        horizon * 2, kernel_initializer="zeros", use_bias=False, name="linear_correction"
    )(static)
    raw = keras.layers.Add(name="corrections_raw")([raw, linear])
    corrections = SoftLimit(horizon, name="corrections")(raw)
    return keras.Model([seq, static], [corrections, weights], name="candlecast_global")


def training_view(model: keras.Model) -> keras.Model:
    """The corrections output alone, sharing weights with ``model``."""
    return keras.Model(model.inputs, model.outputs[0], name="candlecast_global_train")


def infer(model: keras.Model, seq, static, batch_size: int = 4096):
    """(corrections, attention) as float64 numpy arrays, by direct calls."""
    import numpy as np

    out_c, out_w = [], []
    for start in range(0, len(seq), batch_size):
        c, w = model([seq[start : start + batch_size], static[start : start + batch_size]])
        out_c.append(_numpy(c).astype("float64"))
        out_w.append(_numpy(w).astype("float64"))
    if not out_c:
        return np.zeros((0, model.outputs[0].shape[1], 2)), np.zeros((0, seq.shape[1]))
    return np.concatenate(out_c), np.concatenate(out_w)
