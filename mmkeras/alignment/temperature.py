"""The learnable softmax temperature of a contrastive dual encoder, kept on a log scale within bounds."""
from __future__ import annotations

import math

import keras
from keras import layers, ops

from mmkeras.alignment.common import check_temperature

# CLIP clamps its logit scale at 100: a temperature of at least 0.01.
CLIP_MIN_TEMPERATURE = 0.01


@keras.saving.register_keras_serializable(package="mmkeras")
class LogTemperatureBounds(keras.constraints.Constraint):
    """Clip a log-temperature weight to `[log(min_temperature), log(max_temperature)]` after each update.

    Why a constraint and not only a clipped read: clipping the read alone has
    zero gradient outside the range, so a weight that wandered past a bound
    would stay stuck there; projecting the weight itself keeps it trainable.

    Args:
      min_temperature: the lower bound (> 0), or None for none.
      max_temperature: the upper bound (> 0), or None for none.
    """

    def __init__(self, min_temperature: float | None = None, max_temperature: float | None = None):
        self.min_temperature = min_temperature
        self.max_temperature = max_temperature

    def __call__(self, log_temperature):
        return clip_log_temperature(log_temperature, self.min_temperature, self.max_temperature)

    def get_config(self):
        return {"min_temperature": self.min_temperature, "max_temperature": self.max_temperature}


def clip_log_temperature(log_temperature, min_temperature: float | None, max_temperature: float | None):
    """Clip a log-temperature tensor to the log of the bounds (None: unbounded on that side)."""
    if min_temperature is not None:
        log_temperature = ops.maximum(log_temperature, math.log(min_temperature))
    if max_temperature is not None:
        log_temperature = ops.minimum(log_temperature, math.log(max_temperature))
    return log_temperature


def check_temperature_bounds(
    initial_temperature: float, min_temperature: float | None, max_temperature: float | None
) -> tuple[float, float | None, float | None]:
    """Validate a temperature and its optional bounds, `min <= initial <= max`; return them as floats.

    Raises:
      ValueError: for a non-positive value or bounds that do not hold the initial temperature.

    Example:
      >>> check_temperature_bounds(0.07, 0.01, None)
      (0.07, 0.01, None)
    """
    initial_temperature = check_temperature(initial_temperature, "initial_temperature")
    if min_temperature is not None:
        min_temperature = check_temperature(min_temperature, "min_temperature")
    if max_temperature is not None:
        max_temperature = check_temperature(max_temperature, "max_temperature")
    if not (min_temperature or 0.0) <= initial_temperature <= (max_temperature or math.inf):
        raise ValueError(
            f"The temperature bounds must hold the initial temperature: min_temperature ({min_temperature}) <= "
            f"initial_temperature ({initial_temperature}) <= max_temperature ({max_temperature}); None is unbounded."
        )
    return initial_temperature, min_temperature, max_temperature


@keras.saving.register_keras_serializable(package="mmkeras")
class LearnableTemperature(layers.Layer):
    """Holds `log(temperature)` as a weight kept within `[min_temperature, max_temperature]`.

    The temperature sets how peaked the contrastive softmax is; learning it
    (CLIP) avoids tuning it by hand. A log scale keeps it positive and makes
    its steps relative. The bounds keep it sane: the default floor of 0.01 is
    CLIP's logit scale of at most 100, which keeps the logits from exploding;
    a ceiling keeps the softmax from going flat. They are applied twice: the
    weight is projected back into range after every optimizer step (a Keras
    weight constraint), and `log_value()` clips what it reads (so a value
    assigned by hand is never used out of range either). The weight lives in
    the model, so it is saved, restored and distributed with the other weights.

    Args:
      initial_temperature: the starting temperature (> 0, within the bounds).
      min_temperature: the smallest temperature allowed (> 0), or None for no floor.
      learnable: whether the temperature is trained.
      max_temperature: the largest temperature allowed (> 0), or None for no ceiling.

    The layer is not called on inputs: it only holds the weight. `log_value()`
    returns the scalar float32 log-temperature clipped to the log of the
    bounds, and `temperature` its exponential.

    Raises:
      ValueError: for a non-positive temperature or bound, or bounds that do
        not hold the initial temperature.

    Example:
      >>> LearnableTemperature(0.07).temperature
      0.07...
      >>> LearnableTemperature(0.07, min_temperature=0.05, max_temperature=0.5).temperature
      0.07...
    """

    def __init__(
        self,
        initial_temperature: float = 0.07,
        min_temperature: float | None = CLIP_MIN_TEMPERATURE,
        learnable: bool = True,
        max_temperature: float | None = None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")  # a log-temperature in float16 would round the logits
        super().__init__(**kwargs)
        self.initial_temperature, self.min_temperature, self.max_temperature = check_temperature_bounds(
            initial_temperature, min_temperature, max_temperature
        )
        self.learnable = bool(learnable)
        self.log_temperature = self.add_weight(
            name="log_temperature",
            shape=(),
            initializer=keras.initializers.Constant(math.log(self.initial_temperature)),
            constraint=LogTemperatureBounds(self.min_temperature, self.max_temperature),
            trainable=self.learnable,
        )
        self.built = True

    def log_value(self):
        """The scalar log-temperature, clipped to the log of the bounds (a tensor, differentiable inside them)."""
        return clip_log_temperature(
            ops.convert_to_tensor(self.log_temperature), self.min_temperature, self.max_temperature
        )

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
            "max_temperature": self.max_temperature,
        }
