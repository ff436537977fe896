"""The learnable softmax temperature of a contrastive dual encoder, kept on a log scale."""
from __future__ import annotations

import math

import keras
from keras import layers, ops

from mmkeras.alignment.common import check_temperature


@keras.saving.register_keras_serializable(package="mmkeras")
class LearnableTemperature(layers.Layer):
    """Holds `log(temperature)` as a weight; `log_value()` returns it clipped.

    The temperature sets how peaked the contrastive softmax is; learning it
    (CLIP) avoids tuning it by hand. A log scale keeps it positive and makes
    its steps relative; clipping at `min_temperature` (CLIP's logit scale of
    at most 100) keeps the logits from exploding. The weight lives in the
    model, so it is saved, restored and distributed with the other weights.

    Args:
      initial_temperature: the starting temperature (> 0).
      min_temperature: the smallest temperature allowed (> 0, below the initial one).
      learnable: whether the temperature is trained.

    The layer is not called on inputs: it only holds the weight. `log_value()`
    returns the scalar float32 log-temperature clipped at
    `log(min_temperature)`, and `temperature` its exponential.

    Raises:
      ValueError: for a non-positive temperature or `min_temperature` above it.

    Example:
      >>> LearnableTemperature(0.07).temperature
      0.07...
    """

    def __init__(
        self,
        initial_temperature: float = 0.07,
        min_temperature: float = 0.01,
        learnable: bool = True,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")  # a log-temperature in float16 would round the logits
        super().__init__(**kwargs)
        self.initial_temperature = check_temperature(initial_temperature, "initial_temperature")
        self.min_temperature = check_temperature(min_temperature, "min_temperature")
        if self.min_temperature > self.initial_temperature:
            raise ValueError(
                f"`min_temperature` ({min_temperature}) must not exceed `initial_temperature` ({initial_temperature})."
            )
        self.learnable = bool(learnable)
        self.log_temperature = self.add_weight(
            name="log_temperature",
            shape=(),
            initializer=keras.initializers.Constant(math.log(self.initial_temperature)),
            trainable=self.learnable,
        )
        self.built = True

    def log_value(self):
        """The scalar log-temperature, clipped at `log(min_temperature)` (a tensor, differentiable)."""
        return ops.maximum(ops.convert_to_tensor(self.log_temperature), math.log(self.min_temperature))

    @property
    def temperature(self) -> float:
        """The current temperature, as a Python float."""
        return float(ops.convert_to_numpy(ops.exp(self.log_value())))

    def get_config(self):
        return {
            **super().get_config(),
            "initial_temperature": self.initial_temperature,
            "min_temperature": self.min_temperature,
            "learnable": self.learnable,
        }
