"""Concatenation (early, feature-level) fusion."""
from __future__ import annotations

import keras
from keras import layers, ops

from mmkeras.fusion.common import check_rate, check_units


@keras.saving.register_keras_serializable(package="mmkeras")
class ConcatFusion(layers.Layer):
    """Concatenates the modality embeddings and mixes them with a dense layer.

    The simplest fusion and a strong baseline: every modality's features are
    visible to one shared layer. Absent modalities arrive as their learned
    "missing" embedding, so concatenation needs no special case for them.

    Args:
      units: width of the fused output.
      dropout_rate: dropout on the concatenated features during training.
      activation: activation of the mixing layer.

    Call arguments:
      embeddings: list of (batch, d_i) tensors, one per modality.
      presence: unused; accepted for the common fusion contract.
      sequences: unused; accepted for the common fusion contract.
      training: whether dropout is active.

    Returns:
      A (batch, units) tensor.

    Example:
      >>> fusion = ConcatFusion(units=16)
      >>> fusion([np.ones((2, 8)), np.ones((2, 4))]).shape
      (2, 16)
    """

    def __init__(self, units: int = 256, dropout_rate: float = 0.3, activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.units = check_units(units)
        self.dropout_rate = check_rate(dropout_rate)
        self.activation = activation
        self.dropout = layers.Dropout(self.dropout_rate)
        self.dense = layers.Dense(self.units, activation=activation)

    def build(self, embeddings_shape, presence_shape=None, sequences_shape=None):
        total = sum(int(shape[-1]) for shape in embeddings_shape)
        self.dense.build((None, total))

    def call(self, embeddings, presence=None, sequences=None, training=None):
        joined = ops.concatenate(list(embeddings), axis=-1)
        return self.dense(self.dropout(joined, training=training))

    def compute_output_shape(self, embeddings_shape, presence_shape=None, sequences_shape=None):
        return (embeddings_shape[0][0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, dropout_rate=self.dropout_rate, activation=self.activation)
        return config
