"""Temperature scaling inside the classifier: logits divided by fitted temperatures before the softmax.

A network trained to low loss is usually over-confident: it answers 1.0 for a
class it gets wrong now and then. Dividing the logits by one temperature
T > 1, fitted on held-out data (Guo et al., 2017), makes the probabilities
honest without changing any argmax. A model missing a modality is less sure,
so the layer can hold one temperature per presence pattern as well.
"""
from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="mmkeras")
class TemperatureScaling(layers.Layer):
    """Divides logits by a temperature, chosen per example from its modality-presence pattern.

    The temperatures are not trained by `fit` (they are fitted afterwards by
    `mmkeras.calibrate`, see `mmkeras.models.calibration`); they start at 1.0,
    which leaves the logits unchanged. With `per_pattern`, the layer holds
    `1 + num_modalities` temperatures: index 0 for every example that is not
    missing exactly one modality (all present, or several missing), index
    `1 + i` for an example missing only modality `i`.

    Args:
      num_modalities: M, the number of modalities (columns of the presence matrix).
      per_pattern: one temperature per presence pattern instead of one in all.

    Call arguments:
      logits: (batch, num_classes) logits.
      presence: (batch, M) flags, 1.0 present and 0.0 absent.

    Returns:
      The (batch, num_classes) float32 logits divided by each example's temperature.

    Example:
      >>> layer = TemperatureScaling(2)
      >>> layer(np.array([[2.0, 0.0]]), np.ones((1, 2))).numpy()
      array([[2., 0.]], dtype=float32)
    """

    def __init__(self, num_modalities: int, per_pattern: bool = False, **kwargs):
        kwargs.setdefault("dtype", "float32")  # the softmax that follows runs in float32 under mixed precision
        super().__init__(**kwargs)
        if isinstance(num_modalities, bool) or not isinstance(num_modalities, int) or num_modalities < 1:
            raise ValueError(f"`num_modalities` must be a positive integer, got {num_modalities!r}.")
        self.num_modalities = num_modalities
        self.per_pattern = bool(per_pattern)
        self.temperatures = self.add_weight(
            name="temperatures", shape=(self.num_patterns,), initializer="ones", trainable=False
        )

    @property
    def num_patterns(self) -> int:
        """How many temperatures the layer holds: 1, or `1 + num_modalities` with `per_pattern`."""
        return 1 + self.num_modalities if self.per_pattern else 1

    def pattern_indices(self, presence):
        """Each example's temperature index: 0, or `1 + i` when only modality `i` is absent (see the class)."""
        if not self.per_pattern:
            return ops.zeros(ops.shape(presence)[:1], dtype="int32")
        absent = 1.0 - ops.cast(presence, "float32")
        only_one = ops.sum(absent, axis=1) == 1.0
        return ops.where(only_one, 1 + ops.cast(ops.argmax(absent, axis=1), "int32"), 0)

    def call(self, logits, presence):
        temperatures = ops.take(self.temperatures, self.pattern_indices(presence))
        return ops.cast(logits, "float32") / ops.expand_dims(temperatures, -1)

    def compute_output_shape(self, logits_shape, presence_shape=None):
        return logits_shape

    def get_config(self):
        return {**super().get_config(), "num_modalities": self.num_modalities, "per_pattern": self.per_pattern}
