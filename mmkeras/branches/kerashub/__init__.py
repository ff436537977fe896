"""Pretrained encoders from KerasHub presets (a preset name or a local preset folder), as one Keras layer.

A branch takes `encoder="keras_hub:<preset-or-folder>"`. `presets` finds the
preset (local folder, or a name through KerasHub's download cache, never
waiting long on the network), `encoder` is the `KerasHubEncoder` layer (the
backbone with its tokenizer or image converter), and `branch` builds it
from a branch's arguments; branches finish it with
`mmkeras.branches.hub.finish_hub_branch`, as for TF Hub encoders.
"""
from __future__ import annotations

from mmkeras.branches.kerashub.branch import make_keras_hub_encoder
from mmkeras.branches.kerashub.encoder import KerasHubEncoder
from mmkeras.branches.kerashub.presets import (
    KERAS_HUB_PREFIX,
    import_keras_hub,
    is_keras_hub_encoder,
    keras_hub_cache_dir,
    resolve_preset,
    strip_keras_hub_prefix,
)

__all__ = [
    "KERAS_HUB_PREFIX",
    "KerasHubEncoder",
    "import_keras_hub",
    "is_keras_hub_encoder",
    "keras_hub_cache_dir",
    "make_keras_hub_encoder",
    "resolve_preset",
    "strip_keras_hub_prefix",
]
