"""Pieces every branch shares: its input, its outputs and sequence pooling."""
from __future__ import annotations

import keras
from keras import layers, ops

from mmkeras.checks import check_positive_int
from mmkeras.spec import FeatureSpec

# Batch-norm moving statistics follow the weights at this rate. Keras's 0.99
# suits long runs; small datasets have few steps per epoch (avmnist: 78), and
# with 0.99 the statistics used at inference lagged the trained weights for
# several epochs (image branch alone, seed 0: validation accuracy 0.114 with
# 0.99 vs 0.525 with 0.9 after 4 epochs; benchmarks/results/avmnist_fusion.md).
BATCH_NORM_MOMENTUM = 0.9


def make_input(feature: FeatureSpec) -> keras.KerasTensor:
    """Return the `keras.Input` for a feature: named after it, with its decoded shape and dtype.

    Example:
      >>> make_input(spec.feature("picture")).shape
      (None, 16, 16, 3)
    """
    return keras.Input(shape=feature.shape, dtype=feature.dtype, name=feature.name)


def make_presence_input(feature: FeatureSpec) -> keras.KerasTensor:
    """Return the optional boolean `<name>_present` input of a feature (None = present).

    The classifier takes one per feature, so a caller can say per example
    whether a modality is there; being optional, it may be left out by callers
    that never miss a modality.

    Args:
      feature: the feature whose presence the input flags.

    Returns:
      A scalar-per-example bool `keras.Input` named `<name>_present`.

    Example:
      >>> make_presence_input(spec.feature("sound")).name
      'sound_present'
    """
    return keras.Input(shape=(), dtype="bool", name=feature.presence_key, optional=True)


def finish_branch(
    feature: FeatureSpec,
    inputs: keras.KerasTensor,
    sequence: keras.KerasTensor,
    *,
    embed_dim: int,
    dropout_rate: float,
    mask: keras.KerasTensor | None = None,
) -> keras.Model:
    """Project a branch's per-step features and wrap them in the branch model.

    Every branch ends the same way: the per-step features become the
    `sequence` output (batch, steps, embed_dim) used by cross-attention, and
    their masked mean, after dropout and a dense layer, the `embedding`.

    Args:
      feature: the branch's feature.
      inputs: the branch's `keras.Input`.
      sequence: (batch, steps, channels) per-step features.
      embed_dim: width of both outputs.
      dropout_rate: dropout before the embedding's dense layer.
      mask: optional (batch, steps) boolean mask of valid steps (text padding).

    Returns:
      A `keras.Model` named `<feature>_branch` with outputs
      `{"embedding": (batch, embed_dim), "sequence": (batch, steps, embed_dim)}`.
    """
    sequence = layers.Dense(embed_dim, name="sequence_projection")(sequence)
    pooled = SequencePooling(name="pooling")(sequence, mask=mask)
    pooled = layers.Dropout(dropout_rate)(pooled)
    embedding = layers.Dense(embed_dim, activation="relu", name="embedding")(pooled)
    return keras.Model(
        inputs, {"embedding": embedding, "sequence": sequence}, name=f"{feature.name}_branch"
    )


def check_positive(value: object, name: str) -> None:
    """Raise a ValueError unless `value` is a positive integer.

    Builders validate their size arguments with it at the edge, so a bad size
    fails with its name instead of deep inside Keras. Bools are refused.

    Args:
      value: the value to check.
      name: the argument's name, for the message.

    Raises:
      ValueError: if `value` is not an `int` (or is a bool) or is not above 0.

    Example:
      >>> check_positive(0, "embed_dim")
      Traceback (most recent call last):
      ValueError: `embed_dim` must be a positive integer, got 0.
    """
    check_positive_int(value, name)


@keras.saving.register_keras_serializable(package="mmkeras")
class SequencePooling(layers.Layer):
    """Mean over the valid steps of a sequence; zeros when no step is valid.

    Keras' `GlobalAveragePooling1D` divides by the number of valid steps and
    returns NaN for an all-padding sequence (an empty text); this layer
    divides by at least one.

    Call arguments:
      sequence: (batch, steps, channels) tensor.
      mask: optional (batch, steps) boolean tensor of valid steps.

    Returns:
      A (batch, channels) tensor.

    Example:
      >>> SequencePooling()(np.ones((2, 5, 3)), mask=np.array([[1, 1, 0, 0, 0]] * 2, bool)).shape
      (2, 3)
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, sequence, mask=None):
        if mask is None:
            return ops.mean(sequence, axis=1)
        weights = ops.expand_dims(ops.cast(mask, sequence.dtype), -1)
        total = ops.sum(sequence * weights, axis=1)
        return total / ops.maximum(ops.sum(weights, axis=1), 1.0)

    def compute_mask(self, sequence, mask=None):
        return None

    def compute_output_shape(self, sequence_shape, mask_shape=None):
        return (sequence_shape[0], sequence_shape[-1])
