"""Losses on integer labels: focal crossentropy (and smoothed crossentropy) for imbalanced data.

Keras has a categorical focal loss for one-hot targets but none for integer
class ids, which is what the pipeline yields; `SparseCategoricalFocalCrossentropy`
fills that gap. `make_loss` picks the loss a `TrainingConfig` asks for.
"""
from __future__ import annotations

import keras
from keras import ops

from mmkeras.checks import check_number
from mmkeras.training.config import TrainingConfig


@keras.saving.register_keras_serializable(package="mmkeras")
class SparseCategoricalFocalCrossentropy(keras.losses.Loss):
    """Focal crossentropy between integer labels and class probabilities.

    Focal loss (Lin et al., 2017) scales each example's crossentropy by
    `(1 - p_true) ** gamma`, so well-classified examples count less and rare,
    hard classes count more. With `gamma=0` and `alpha=1` it is exactly the
    (optionally label-smoothed) sparse categorical crossentropy.

    For one example with label `y`, probabilities `p` and smoothed targets
    `t = one_hot(y) * (1 - label_smoothing) + label_smoothing / num_classes`:

        loss = -alpha * sum_c t_c * (1 - p_c) ** gamma * log(p_c)

    Args:
      gamma: focusing exponent, >= 0.
      alpha: overall weight of the loss, > 0.
      from_logits: whether `y_pred` holds logits rather than probabilities.
      label_smoothing: share of the target mass spread over all classes, in [0, 1).
      reduction: Keras loss reduction.
      name: the loss's name.

    Call arguments:
      y_true: integer class ids, shape (batch,) or (batch, 1).
      y_pred: probabilities (or logits), shape (batch, num_classes).
      sample_weight: optional per-example weights.

    Returns:
      The reduced loss (a scalar with the default reduction).

    Raises:
      ValueError: for a negative `gamma`, a non-positive `alpha` or a
        `label_smoothing` outside [0, 1).

    Example:
      >>> loss = SparseCategoricalFocalCrossentropy(gamma=2.0)
      >>> float(loss([0], [[0.9, 0.1]]))   # -(0.1 ** 2) * log(0.9)
      0.00105...
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float = 1.0,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        reduction: str = "sum_over_batch_size",
        name: str = "sparse_categorical_focal_crossentropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        check_number(gamma, "gamma", inclusive=True, hint=" (0 gives plain crossentropy)")
        check_number(alpha, "alpha")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"`label_smoothing` must be in [0, 1), got {label_smoothing!r}.")
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        num_classes = ops.shape(y_pred)[-1]
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        targets = ops.one_hot(labels, num_classes, dtype=y_pred.dtype)
        if self.gamma == 0.0 and self.alpha == 1.0:  # smoothed crossentropy: fewer ops in every head's loss
            return keras.losses.categorical_crossentropy(
                targets, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
            )
        return keras.losses.categorical_focal_crossentropy(
            targets,
            y_pred,
            alpha=self.alpha,
            gamma=self.gamma,
            from_logits=self.from_logits,
            label_smoothing=self.label_smoothing,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            gamma=self.gamma, alpha=self.alpha, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )
        return config


def make_loss(config: TrainingConfig) -> keras.losses.Loss:
    """Return the loss a `TrainingConfig` asks for, on class probabilities.

    Args:
      config: uses `loss`, `focal_gamma` and `label_smoothing`.

    Returns:
      `SparseCategoricalCrossentropy` for plain crossentropy, otherwise a
      `SparseCategoricalFocalCrossentropy` (with `gamma=0` for smoothed
      crossentropy, which Keras' sparse loss does not offer).

    Example:
      >>> make_loss(TrainingConfig(loss="focal", focal_gamma=2.0)).gamma
      2.0
    """
    if config.loss == "crossentropy" and config.label_smoothing == 0.0:
        return keras.losses.SparseCategoricalCrossentropy(name="crossentropy")
    gamma = config.focal_gamma if config.loss == "focal" else 0.0
    return SparseCategoricalFocalCrossentropy(
        gamma=gamma, label_smoothing=config.label_smoothing, name=config.loss
    )
