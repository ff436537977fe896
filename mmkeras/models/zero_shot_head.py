"""`ZeroShotHead`: class logits from an embedding's scaled cosine similarity to fixed class embeddings."""
from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="mmkeras")
class ZeroShotHead(layers.Layer):
    """`logit_scale` x the cosine similarity of each embedding to each class embedding: zero-shot logits.

    The class embeddings (a text tower's embeddings of class prompts, say) are
    computed once and held as a frozen weight, so the model built on them maps
    raw inputs of the other modality to class logits in one call. It gives
    logits, not probabilities, so that a softmax layer named "probabilities"
    follows it as in `build_classifier` and temperature scaling
    (`mmkeras.calibrate`) can go between the two. A zero embedding (the
    stand-in of an absent input) gives zero logits: uniform probabilities.
    It lives with the classifier's layers so that `load_classifier` reloads
    it by name.

    Args:
      class_embeddings: (num_classes, dim) class embeddings (normalised here).
      logit_scale: the multiplier of the cosine similarities (1 / temperature; CLIP's is up to 100).
      **kwargs: base `Layer` arguments (`name`, `dtype`).

    Call arguments:
      embeddings: (batch, dim) embeddings of the examples (normalised here).

    Returns:
      (batch, num_classes) logits.

    Raises:
      ValueError: for class embeddings that are not a non-empty matrix or hold
        a zero row, or a non-positive `logit_scale`.

    Example:
      >>> ZeroShotHead(np.eye(3), logit_scale=10.0)(np.array([[2.0, 0.0, 0.0]])).numpy()
      array([[10.,  0.,  0.]], dtype=float32)
    """

    def __init__(self, class_embeddings: Sequence[Sequence[float]] | np.ndarray, logit_scale: float, **kwargs):
        super().__init__(**kwargs)
        matrix = np.asarray(class_embeddings, dtype="float32")
        if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
            raise ValueError(
                f"ZeroShotHead: `class_embeddings` must be a (num_classes, dim) matrix, got shape {matrix.shape}."
            )
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        if not np.all(norms > 0):
            raise ValueError("ZeroShotHead: a class embedding is all zeros; its cosine similarity is undefined.")
        if isinstance(logit_scale, bool) or not isinstance(logit_scale, (int, float)) or not logit_scale > 0:
            raise ValueError(f"ZeroShotHead: `logit_scale` must be a positive number, got {logit_scale!r}.")
        self.class_embeddings = (matrix / norms).tolist()
        self.logit_scale = float(logit_scale)
        self._matrix = matrix / norms

    def build(self, input_shape):
        self.classes = self.add_weight(
            shape=self._matrix.shape, initializer=keras.initializers.Constant(self._matrix), trainable=False,
            name="class_embeddings",
        )

    def call(self, embeddings):
        unit = embeddings / ops.maximum(ops.norm(embeddings, axis=-1, keepdims=True), 1e-12)
        return self.logit_scale * ops.matmul(unit, ops.transpose(ops.cast(self.classes, unit.dtype)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self._matrix.shape[0])

    def get_config(self):
        return {**super().get_config(), "class_embeddings": self.class_embeddings, "logit_scale": self.logit_scale}
