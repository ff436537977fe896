"""Building a branch's `KerasHubEncoder` from its "keras_hub:..." arguments."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmkeras.branches.kerashub.encoder import KerasHubEncoder
from mmkeras.branches.kerashub.presets import strip_keras_hub_prefix

# `encoder_options` a branch passes on to `KerasHubEncoder`, by modality.
ENCODER_OPTIONS = {"text": ("sequence_length",), "image": (), "audio": ()}


def make_keras_hub_encoder(
    encoder: str,
    *,
    modality: str,
    trainable: bool | None = None,
    encoder_options: Mapping[str, Any] | None = None,
    name: str = "keras_hub_encoder",
) -> KerasHubEncoder:
    """Build a branch's `KerasHubEncoder` from its "keras_hub:..." arguments.

    Args:
      encoder: "keras_hub:<preset name or local preset folder>".
      modality: the branch's modality ("text", "image" or "audio").
      trainable: whether the pretrained weights train; None means False.
      encoder_options: other `KerasHubEncoder` arguments (text: `sequence_length`).
      name: the layer's name.

    Returns:
      The `KerasHubEncoder`.

    Raises:
      ValueError: for a malformed argument, an unknown option or a modality
        KerasHub encoders do not cover.

    Example:
      >>> make_keras_hub_encoder("keras_hub:/models/tiny_bert", modality="text").trainable
      False
    """
    if modality not in ENCODER_OPTIONS:
        raise ValueError(
            f"KerasHub encoders cover the modalities {sorted(ENCODER_OPTIONS)}, not {modality!r}; use "
            "encoder='hub:<handle-or-path>' or the built-in branch for it."
        )
    options = dict(encoder_options or {})
    allowed = ENCODER_OPTIONS[modality]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"Unknown encoder_options {unknown} for a KerasHub {modality} encoder; allowed keys are {list(allowed)}."
        )
    if trainable is not None and not isinstance(trainable, bool):
        raise ValueError(f"`trainable` must be True, False or None (pretrained: frozen), got {trainable!r}.")
    return KerasHubEncoder(
        strip_keras_hub_prefix(encoder), modality=modality, trainable=bool(trainable), name=name, **options
    )
