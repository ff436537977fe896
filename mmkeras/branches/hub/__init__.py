"""Pretrained encoders from TF Hub handles or local SavedModel folders, as one Keras layer.

A branch takes `encoder="hub:<handle-or-path>"`. One file per job:
`handles` finds and loads the SavedModel (local folder, or a TF Hub handle
through `tensorflow_hub` and its cache), `functions` calls a loaded SavedModel
(its callable or signature, declared inputs, outputs, variables), `encoder`
is the `HubEncoder` layer, and `branch` builds a branch around it.

`HubEncoder` records its handles in `get_config`, so a `.keras` file reloads
the encoder from them (with its fine-tuned weights); the exported serving
SavedModel copies the encoder's graph, variables and assets into itself and
needs neither the handle nor the network.
"""
from __future__ import annotations

from mmkeras.branches.hub.branch import finish_hub_branch, make_hub_encoder
from mmkeras.branches.hub.encoder import EMBEDDING, SEQUENCE, HubEncoder
from mmkeras.branches.hub.handles import (
    HUB_PREFIX,
    hub_cache_dir,
    is_hub_encoder,
    is_local_handle,
    load_saved_model,
    resolve_handle,
    strip_hub_prefix,
)

__all__ = [
    "EMBEDDING",
    "HUB_PREFIX",
    "SEQUENCE",
    "HubEncoder",
    "finish_hub_branch",
    "hub_cache_dir",
    "is_hub_encoder",
    "is_local_handle",
    "load_saved_model",
    "make_hub_encoder",
    "resolve_handle",
    "strip_hub_prefix",
]
