"""What every fusion layer shares: the call contract and small helpers.

Call contract (every layer in `mmkeras.fusion`):

    layer(embeddings, presence=None, sequences=None, training=None)

- `embeddings`: a list of M tensors of shape (batch, d_i), one per modality,
  in the spec's feature order. Fusion knows nothing about modalities.
- `presence`: (batch, M) float tensor, 1.0 where modality m is present for
  that example and 0.0 where it is absent (its embedding is then the learned
  "missing" embedding). None means all present. Layers that weight
  modalities give absent ones no weight.
- `sequences`: a list of M tensors (batch, t_i, d) of per-step outputs; only
  `CrossAttentionFusion` reads them, the others ignore them.

Returns a (batch, units) tensor of fused features, except:
- `AttentionFusion` returns `(fused, weights)`, weights (batch, M) summing to 1;
- layers with `produces_logits = True` (`LateFusion`) return (batch, units)
  class logits, `units` being the number of classes.
"""
from __future__ import annotations

import keras
from keras import ops

from mmkeras.checks import check_positive_int


def all_present(embeddings: list) -> keras.KerasTensor:
    """A (batch, M) tensor of ones: the default presence when none is given."""
    batch = ops.shape(embeddings[0])[0]
    return ops.ones((batch, len(embeddings)), dtype=embeddings[0].dtype)


def presence_or_ones(embeddings: list, presence) -> keras.KerasTensor:
    """Return `presence` cast to the embeddings' dtype, or all ones when None."""
    if presence is None:
        return all_present(embeddings)
    return ops.cast(presence, embeddings[0].dtype)


def masked_softmax(scores, presence):
    """Softmax over the last axis giving zero weight where `presence` is 0.

    If a row has no present entry (never the case after `ModalityDropout`)
    its weights are uniform rather than NaN.
    """
    dtype = scores.dtype
    # In float32 even under mixed precision: -1e9 overflows float16 to -inf,
    # and a row of -inf would give NaN instead of uniform weights.
    scores = ops.cast(scores, "float32")
    scores = ops.where(ops.cast(presence, "float32") > 0, scores, ops.full_like(scores, -1e9))
    return ops.cast(ops.softmax(scores, axis=-1), dtype)


def check_units(units: int, name: str = "units") -> int:
    """Validate a positive integer layer width and return it."""
    return check_positive_int(units, name)


def check_rate(rate: float, name: str = "dropout_rate") -> float:
    """Validate a rate in [0, 1) and return it."""
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1), got {rate!r}.")
    return float(rate)


def check_activation(activation, name: str = "activation"):
    """Validate an activation name (or None) by resolving it; return it unchanged."""
    try:
        keras.activations.get(activation)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"`{name}` must be a Keras activation name such as 'relu' or None, got {activation!r}."
        ) from error
    return activation


def check_embedding_shapes(layer_name: str, embeddings_shape, presence_shape=None) -> list:
    """Validate the build-time shapes of `embeddings` and `presence`.

    Args:
      layer_name: the fusion layer's class name, for the messages.
      embeddings_shape: the shapes of the M embeddings, each (batch, d_i).
      presence_shape: the shape of `presence`, (batch, M), or None.

    Returns:
      The embedding shapes as a list of tuples.

    Raises:
      ValueError: if `embeddings` is not a non-empty list of 2D tensors with a
        known last axis, or `presence` does not have one column per embedding.
    """
    if not isinstance(embeddings_shape, (list, tuple)) or not embeddings_shape or not all(
        isinstance(shape, (list, tuple)) for shape in embeddings_shape
    ):
        raise ValueError(
            f"{layer_name} expects a non-empty list of (batch, d) embeddings, one per modality, "
            f"got shape {embeddings_shape!r}. Wrap a single tensor in a list: `fusion([x])`."
        )
    shapes = [tuple(shape) for shape in embeddings_shape]
    for index, shape in enumerate(shapes):
        if len(shape) != 2 or shape[-1] is None:
            raise ValueError(
                f"{layer_name}: embedding {index} must have shape (batch, d) with a known d, got {shape}. "
                "Pool or flatten per-step outputs before fusion (sequences go in `sequences=`)."
            )
    if presence_shape is not None:
        presence_shape = tuple(presence_shape)
        if len(presence_shape) != 2 or presence_shape[-1] not in (None, len(shapes)):
            raise ValueError(
                f"{layer_name}: `presence` must have shape (batch, {len(shapes)}) (one column per "
                f"embedding), got {presence_shape}."
            )
    return shapes


def present_column(presence, index: int):
    """Return column `index` of a (batch, M) presence tensor as (batch, 1)."""
    return presence[:, index : index + 1]


def embedding_list(layer, embeddings) -> list:
    """Return `embeddings` as a list, checking there is one per modality the layer was built for.

    Raises:
      ValueError: if a built layer is called on a different number of
        modalities than it has weights for.
    """
    embeddings = list(embeddings)
    if len(embeddings) != layer.num_modalities:
        raise ValueError(
            f"{type(layer).__name__} {layer.name!r} was built for {layer.num_modalities} modalities but got "
            f"{len(embeddings)} embeddings. Create a new fusion layer for a different set of modalities."
        )
    return embeddings
