"""Attention fusion: a learned, per-example weighted sum of the modalities."""
from __future__ import annotations

import keras
from keras import layers, ops

from mmkeras.fusion.common import (
    check_embedding_shapes,
    check_rate,
    check_units,
    embedding_list,
    masked_softmax,
    presence_or_ones,
)


@keras.saving.register_keras_serializable(package="mmkeras")
class AttentionFusion(layers.Layer):
    """Weights each modality per example and sums the projected embeddings.

    Each embedding is projected to `units`; a small scoring network
    (`tanh` layer, then a vector) rates each projection, and a softmax over
    the modalities, masked by `presence`, turns the ratings into weights.
    Absent modalities get a weight of exactly 0. Use it when modalities differ
    in reliability from example to example; the weights show which modality
    the model relied on (the classifier exposes them as `modality_weights`).

    Args:
      units: width of the projections and of the fused output.
      score_units: width of the scoring network's hidden `tanh` layer.
      dropout_rate: dropout on the fused output during training.

    Call arguments:
      embeddings: list of M (batch, d_i) tensors, one per modality.
      presence: optional (batch, M) tensor, 1.0 where a modality is present
        and 0.0 where it is absent. None means all present.
      sequences: unused; accepted for the common fusion contract.
      training: whether dropout is active.

    Returns:
      A tuple `(fused, weights)`: fused is (batch, units), weights is
      (batch, M) and sums to 1 over the present modalities.

    Raises:
      ValueError: if an argument is out of range, or (at build time) the
        embeddings are not a list of (batch, d) tensors.

    Example:
      >>> fused, weights = AttentionFusion(units=16)([np.ones((2, 8)), np.ones((2, 4))])
      >>> fused.shape, weights.shape
      ((2, 16), (2, 2))
    """

    def __init__(self, units: int = 256, score_units: int = 64, dropout_rate: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        self.units = check_units(units)
        self.score_units = check_units(score_units, "score_units")
        self.dropout_rate = check_rate(dropout_rate)
        self.dropout = layers.Dropout(self.dropout_rate)

    def build(self, embeddings_shape, presence_shape=None, sequences_shape=None):
        shapes = check_embedding_shapes(type(self).__name__, embeddings_shape, presence_shape)
        self.num_modalities = len(shapes)
        self.projections = [layers.Dense(self.units, name=f"projection_{m}") for m in range(len(shapes))]
        for projection, shape in zip(self.projections, shapes):
            projection.build(shape)
        # One scoring network shared by all modalities, so scores are comparable.
        self.score_hidden = layers.Dense(self.score_units, activation="tanh", name="score_hidden")
        self.score_hidden.build((None, None, self.units))
        self.score_vector = layers.Dense(1, use_bias=False, name="score_vector")
        self.score_vector.build((None, None, self.score_units))

    def call(self, embeddings, presence=None, sequences=None, training=None):
        embeddings = embedding_list(self, embeddings)
        presence = presence_or_ones(embeddings, presence)
        projected = ops.stack([dense(x) for dense, x in zip(self.projections, embeddings)], axis=1)
        scores = ops.squeeze(self.score_vector(self.score_hidden(projected)), axis=-1)
        weights = masked_softmax(scores, presence)
        fused = ops.sum(projected * ops.expand_dims(weights, -1), axis=1)
        return self.dropout(fused, training=training), weights

    def compute_output_shape(self, embeddings_shape, presence_shape=None, sequences_shape=None):
        batch = embeddings_shape[0][0]
        return (batch, self.units), (batch, len(embeddings_shape))

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, score_units=self.score_units, dropout_rate=self.dropout_rate)
        return config
