"""Late (decision-level) fusion: one classifier per modality, logits averaged."""
from __future__ import annotations

import keras
from keras import layers, ops

from mmkeras.fusion.common import (
    check_embedding_shapes,
    check_rate,
    check_units,
    embedding_list,
    presence_or_ones,
)


@keras.saving.register_keras_serializable(package="mmkeras")
class LateFusion(layers.Layer):
    """Classifies each modality on its own and averages the logits of the present ones.

    Each modality gets its own classifier (an optional hidden `relu` layer,
    dropout, then `Dense(units)`), and the output is the mean of the
    per-modality logits over the modalities that are present for that
    example. Absent modalities get a weight of exactly 0; an example with no
    modality present gets all-zero logits (a uniform prediction) instead of
    NaN. Use it as a robust baseline when modalities are often missing, or to
    compare how well each modality classifies alone.

    The output is already class logits (`produces_logits = True`), so the
    classifier adds no head after it.

    Args:
      units: the number of classes.
      hidden_units: width of a hidden `relu` layer in each modality's
        classifier, or None for a linear classifier.
      dropout_rate: dropout before each classifier's output layer during
        training.

    Call arguments:
      embeddings: list of M (batch, d_i) tensors, one per modality.
      presence: optional (batch, M) tensor, 1.0 where a modality is present
        and 0.0 where it is absent. None means all present.
      sequences: unused; accepted for the common fusion contract.
      training: whether dropout is active.

    Returns:
      A (batch, units) tensor of class logits.

    Raises:
      ValueError: if an argument is out of range, or (at build time) the
        embeddings are not a list of (batch, d) tensors.

    Example:
      >>> LateFusion(units=3)([np.ones((2, 8)), np.ones((2, 4))]).shape
      (2, 3)
    """

    produces_logits = True

    def __init__(self, units: int, hidden_units: int | None = None, dropout_rate: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        self.units = check_units(units)
        self.hidden_units = None if hidden_units is None else check_units(hidden_units, "hidden_units")
        self.dropout_rate = check_rate(dropout_rate)
        self.dropout = layers.Dropout(self.dropout_rate)

    def build(self, embeddings_shape, presence_shape=None, sequences_shape=None):
        shapes = check_embedding_shapes(type(self).__name__, embeddings_shape, presence_shape)
        self.num_modalities = len(shapes)
        if self.hidden_units is not None:
            self.hidden = [
                layers.Dense(self.hidden_units, activation="relu", name=f"hidden_{m}") for m in range(len(shapes))
            ]
            for hidden, shape in zip(self.hidden, shapes):
                hidden.build(shape)
            shapes = [(None, self.hidden_units)] * len(shapes)
        self.classifiers = [layers.Dense(self.units, name=f"classifier_{m}") for m in range(len(shapes))]
        for classifier, shape in zip(self.classifiers, shapes):
            classifier.build(shape)

    def call(self, embeddings, presence=None, sequences=None, training=None):
        embeddings = embedding_list(self, embeddings)
        presence = presence_or_ones(embeddings, presence)
        logits = []
        for m, x in enumerate(embeddings):
            if self.hidden_units is not None:
                x = self.hidden[m](x)
            logits.append(self.classifiers[m](self.dropout(x, training=training)))
        logits = ops.stack(logits, axis=1)
        count = ops.sum(presence, axis=-1, keepdims=True)
        weights = presence / ops.where(count > 0, count, ops.ones_like(count))
        return ops.sum(logits * ops.expand_dims(weights, -1), axis=1)

    def compute_output_shape(self, embeddings_shape, presence_shape=None, sequences_shape=None):
        return (embeddings_shape[0][0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, hidden_units=self.hidden_units, dropout_rate=self.dropout_rate)
        return config
