"""Keras layers the global network is built from: additive attention over time and the last step.

Imported lazily (TensorFlow is heavy), by ``forecasting.global_layers`` and when a stored model
is loaded. Registered under the ``candlecast`` package so ``.keras`` files load with
``safe_mode=True``.
"""

from __future__ import annotations

import keras
from keras import ops

PACKAGE = "candlecast"


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
class LastStep(keras.layers.Layer):
    """The last time step of a sequence (a serialisable replacement for a Lambda slice)."""

    def call(self, sequence):
        return sequence[:, -1, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


def _numpy(tensor):
    """Tensor -> numpy (``.numpy()`` avoids a NumPy 2 copy-keyword warning in convert_to_numpy)."""
    return tensor.numpy() if hasattr(tensor, "numpy") else ops.convert_to_numpy(tensor)
