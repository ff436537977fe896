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


def all_present(embeddings: list) -> "keras.KerasTensor":
    """A (batch, M) tensor of ones: the default presence when none is given."""
    batch = ops.shape(embeddings[0])[0]
    return ops.ones((batch, len(embeddings)), dtype=embeddings[0].dtype)


def presence_or_ones(embeddings: list, presence) -> "keras.KerasTensor":
    """Return `presence` cast to the embeddings' dtype, or all ones when None."""
    if presence is None:
        return all_present(embeddings)
    return ops.cast(presence, embeddings[0].dtype)


def masked_softmax(scores, presence):
    """Softmax over the last axis giving zero weight where `presence` is 0.

    If a row has no present entry (never the case after `ModalityDropout`)
    its weights are uniform rather than NaN.
    """
    scores = ops.where(presence > 0, scores, ops.full_like(scores, -1e9))
    return ops.softmax(scores, axis=-1)


def check_units(units: int, name: str = "units") -> int:
    """Validate a positive integer layer width and return it."""
    if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {units!r}.")
    return units


def check_rate(rate: float, name: str = "dropout_rate") -> float:
    """Validate a rate in [0, 1) and return it."""
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1), got {rate!r}.")
    return float(rate)
