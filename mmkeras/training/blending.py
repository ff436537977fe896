"""Gradient blending: per-head loss weights from how each head overfits (Wang et al., CVPR 2020).

A multimodal network trained on its fused output alone overfits sooner than
its best unimodal part. Gradient blending trains every head (the fused one and
one per modality, `build_classifier(aux_heads=True)`) with a weighted sum of
their losses, each weight proportional to the head's generalisation gain over
the square of its overfitting gain between two checkpoints, as MultiBench's
online G-Blend does:

    ΔG_k = val_loss_k(before) - val_loss_k(after)
    ΔO_k = O_k(after) - O_k(before),   O_k = val_loss_k - train_loss_k
    w_k ∝ max(ΔG_k, 0) / (ΔO_k² + eps)

`blend_weights` is that formula on numbers; `GradientBlending` is the Keras
callback that applies it every `blend_every` epochs to the per-head losses
`BalancedTrainingView(method="gradient_blending")` logs, and assigns the
result to the view's non-trainable `blend_weights` variable (saved with the
run's backup, so a resumed run goes on with them).
"""
from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from mmkeras.checks import check_positive_int, is_rate

# Every head keeps at least this share of the loss: a head whose validation loss rose in the
# last window still trains a little, and can earn its weight back in the next one.
BLEND_FLOOR = 0.05
# Added to ΔO²: a head whose overfitting did not change at all (ΔO = 0) would otherwise take
# the whole loss; 1e-4 counts every |ΔO| below 0.01 as about 0.01.
BLEND_EPSILON = 1e-4
HEAD_LOSS_PREFIX = "head_loss_"
BLEND_WEIGHT_PREFIX = "blend_weight_"


def blend_weights(
    train_before: Sequence[float],
    validation_before: Sequence[float],
    train_after: Sequence[float],
    validation_after: Sequence[float],
    *,
    previous: Sequence[float] | None = None,
    floor: float = BLEND_FLOOR,
    epsilon: float = BLEND_EPSILON,
    smoothing: float = 0.0,
) -> np.ndarray:
    """Gradient-blending loss weights of K heads from their losses at two checkpoints.

    Each head's raw weight is `max(ΔG, 0) / (ΔO² + epsilon)` (see the module
    docstring). The raw weights are normalised to sum to 1, then squeezed into
    `[floor, 1]`: `w = floor + (1 - K * floor) * raw / sum(raw)`, so they still
    sum to 1 and no head is switched off. When no head generalised better
    (every ΔG <= 0) or a loss is not finite, the window says nothing about
    which head to trust: the previous weights are kept (equal ones if None).

    With `smoothing > 0` the estimate is an exponential moving average,
    `smoothing * previous + (1 - smoothing) * new`: one window's losses on a
    small validation split are noisy, and without it a head can hold most of
    the weight one epoch and sit at the floor the next. The average of two
    weight vectors that sum to 1 and respect the floor does too.

    Args:
      train_before, validation_before: each head's train and validation loss
        at the earlier checkpoint.
      train_after, validation_after: the same at the later checkpoint.
      previous: the weights in use, returned when the window has no signal.
      floor: the smallest weight of any head, in [0, 1/K).
      epsilon: added to ΔO² so that a head with unchanged overfitting gets a
        large, finite weight.
      smoothing: the previous weights' share in the result, in [0, 1); 0
        (no smoothing) returns this window's estimate alone.

    Returns:
      (K,) float64 weights, each >= `floor`, summing to 1.

    Raises:
      ValueError: for losses of different lengths, a floor outside [0, 1/K),
        a smoothing outside [0, 1), or `previous` of another length.

    Example:
      >>> blend_weights([1.0, 1.0], [1.2, 1.2], [0.6, 0.4], [0.9, 1.1], floor=0.0).round(3)
      array([0.987, 0.013])
      >>> blend_weights([1.0, 1.0], [1.2, 1.2], [0.6, 0.4], [0.9, 1.1], floor=0.0,
      ...               previous=[0.5, 0.5], smoothing=0.5).round(3)
      array([0.743, 0.257])
    """
    losses = [np.asarray(values, np.float64).reshape(-1)
              for values in (train_before, validation_before, train_after, validation_after)]
    count = losses[0].size
    if count == 0 or any(values.size != count for values in losses):
        raise ValueError(f"blend_weights needs one loss per head at each checkpoint, got lengths "
                         f"{[values.size for values in losses]}.")
    if not 0.0 <= floor < 1.0 / count:
        raise ValueError(f"The blending floor must be in [0, 1/{count}) for {count} heads, got {floor}.")
    smoothing = _check_smoothing(smoothing)
    previous = np.full(count, 1.0 / count) if previous is None else np.asarray(previous, np.float64).reshape(-1)
    if previous.size != count:
        raise ValueError(f"blend_weights needs one previous weight per head ({count}), got {previous.size}.")
    train_before, validation_before, train_after, validation_after = losses
    gain = validation_before - validation_after
    overfitting_change = (validation_after - train_after) - (validation_before - train_before)
    raw = np.maximum(gain, 0.0) / (overfitting_change**2 + epsilon)
    if not np.all(np.isfinite(raw)) or raw.sum() <= 0.0:
        return previous
    estimate = floor + (1.0 - count * floor) * raw / raw.sum()
    return smoothing * previous + (1.0 - smoothing) * estimate


class GradientBlending(keras.callbacks.Callback):
    """Re-estimate a `BalancedTrainingView`'s gradient-blending weights every `blend_every` epochs.

    The view logs each head's mean training loss over the epoch
    (`head_loss_<head>`, a running mean: no extra pass over the data) and its
    validation loss (`val_head_loss_<head>`). At the end of every
    `blend_every`-th epoch this callback compares them with the previous
    checkpoint's (kept in the view's `blend_reference` variable), assigns
    `blend_weights(...)` to the view's `blend_weights` variable (no retrace:
    the training step reads the variable), and stores the new checkpoint.
    Every epoch's logs get `blend_weight_<head>`: the weights that epoch
    trained with, so they reach `history.csv` and TensorBoard. Place it
    before the loggers and the backup.

    The first checkpoint is taken before training: the validation loss of
    the untrained model, whose overfitting is 0 (it has seen no training
    example), so the first epoch trains with equal weights and the weights
    are estimated from its end on. A resumed run restores both variables from
    its backup and skips that evaluation.

    Args:
      validation_data: the validation dataset `fit` gets.
      blend_every: epochs between two estimates (a positive integer).
      floor: the smallest weight of any head (`blend_weights`).
      smoothing: the previous weights' share in each new estimate, in
        [0, 1) (`blend_weights`; 0: no smoothing).

    Raises:
      ValueError: without validation data, or for a bad `blend_every` or `smoothing`.

    Example:
      >>> trainer.fit(train_data, validation_data=validation_data, epochs=10,
      ...             callbacks=[GradientBlending(validation_data)])
    """

    def __init__(self, validation_data, *, blend_every: int = 1, floor: float = BLEND_FLOOR,
                 smoothing: float = 0.0):
        super().__init__()
        if validation_data is None:
            raise ValueError("Gradient blending needs validation data to measure how each head generalises: give "
                             "`validation_fraction > 0` or a spec with a 'validation' split, or use another `balance`.")
        self.validation_data = validation_data
        self.blend_every = check_positive_int(blend_every, "blend_every")
        self.floor = float(floor)
        self.smoothing = _check_smoothing(smoothing)

    def on_epoch_begin(self, epoch, logs=None):
        if np.isfinite(self.model.blend_reference.numpy()).all():
            return
        results = self.model.evaluate(self.validation_data, verbose=0, return_dict=True)
        self.model.reset_metrics()  # the epoch's training metrics must not start from validation values
        validation = [results[HEAD_LOSS_PREFIX + name] for name in self.model.head_names]
        self.model.blend_reference.assign(np.array([validation, validation], np.float32))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        used = self.model.blend_weights.numpy()
        logs.update({BLEND_WEIGHT_PREFIX + name: float(weight) for name, weight in zip(self.model.head_names, used)})
        if (epoch + 1) % self.blend_every:
            return
        try:
            train = [float(logs[HEAD_LOSS_PREFIX + name]) for name in self.model.head_names]
            validation = [float(logs["val_" + HEAD_LOSS_PREFIX + name]) for name in self.model.head_names]
        except KeyError as missing:
            raise ValueError(f"Gradient blending found no {missing} in the epoch's logs: train a "
                             "BalancedTrainingView(method='gradient_blending') with validation data.") from None
        reference = self.model.blend_reference.numpy()
        weights = blend_weights(reference[0], reference[1], train, validation, previous=used, floor=self.floor,
                                smoothing=self.smoothing)
        self.model.blend_weights.assign(weights.astype(np.float32))
        self.model.blend_reference.assign(np.array([train, validation], np.float32))


def _check_smoothing(smoothing: object) -> float:
    """`smoothing` as a float if it is a number in [0, 1): a share of 1 would never update the weights."""
    if not is_rate(smoothing):
        raise ValueError(f"The blending smoothing must be a number in [0, 1) (0: no smoothing), got {smoothing!r}.")
    return float(smoothing)
