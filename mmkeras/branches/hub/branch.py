"""Building a branch around a pretrained encoder: `make_hub_encoder` from a branch's "hub:..." arguments, `finish_hub_branch` for its outputs."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
from keras import layers

from mmkeras.branches.hub.encoder import EMBEDDING, SEQUENCE, HubEncoder
from mmkeras.branches.hub.handles import strip_hub_prefix
from mmkeras.spec import FeatureSpec


def make_hub_encoder(
    encoder: str,
    *,
    preprocessor: str | None = None,
    trainable: bool | None = None,
    encoder_options: Mapping[str, Any] | None = None,
    name: str = "hub_encoder",
) -> HubEncoder:
    """Build a branch's `HubEncoder` from its "hub:..." arguments.

    Args:
      encoder: "hub:<handle-or-path>".
      preprocessor: None or "hub:<handle-or-path>" of a preprocessing model.
      trainable: whether the pretrained weights train; None means False.
      encoder_options: other `HubEncoder` arguments (`signature`, `output_key`,
        `sequence_key`, `batched`).
      name: the layer's name.

    Returns:
      The `HubEncoder`.

    Raises:
      ValueError: for a malformed argument or an unknown option.

    Example:
      >>> make_hub_encoder("hub:/models/sentence_encoder").trainable
      False
    """
    options = dict(encoder_options or {})
    allowed = ("signature", "output_key", "sequence_key", "batched")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown encoder_options {unknown}; allowed keys are {list(allowed)}.")
    if preprocessor is not None:
        preprocessor = strip_hub_prefix(preprocessor)
    if trainable is not None and not isinstance(trainable, bool):
        raise ValueError(f"`trainable` must be True, False or None (pretrained: frozen), got {trainable!r}.")
    return HubEncoder(
        strip_hub_prefix(encoder), preprocessor=preprocessor, trainable=bool(trainable), name=name, **options
    )


def finish_hub_branch(
    feature: FeatureSpec, inputs, encoded: Mapping[str, Any], *, embed_dim: int, dropout_rate: float
) -> keras.Model:
    """Project a pretrained encoder's outputs to the branch contract and wrap them in the branch model.

    The encoder's pooled output, after dropout and a dense layer, is the
    `embedding`; its per-step output (or the pooled vector as one step),
    projected, is the `sequence`. Layer names match `finish_branch`.

    Args:
      feature: the branch's feature.
      inputs: the branch's `keras.Input`.
      encoded: a `HubEncoder`'s output dict.
      embed_dim: width of both outputs.
      dropout_rate: dropout before the embedding's dense layer.

    Returns:
      A `keras.Model` named `<feature>_branch` with outputs
      `{"embedding": (batch, embed_dim), "sequence": (batch, steps, embed_dim)}`.
    """
    sequence = layers.Dense(embed_dim, name="sequence_projection")(encoded[SEQUENCE])
    pooled = layers.Dropout(dropout_rate)(encoded[EMBEDDING])
    embedding = layers.Dense(embed_dim, activation="relu", name="embedding")(pooled)
    return keras.Model(inputs, {"embedding": embedding, "sequence": sequence}, name=f"{feature.name}_branch")
