"""Fusion layers: each turns a list of modality embeddings into one vector.

`FUSIONS` maps each fusion's name to its layer class; see `fusion/common.py`
for the call contract they all share.
"""
from __future__ import annotations

from collections.abc import Mapping

from mmkeras.fusion.attention import AttentionFusion
from mmkeras.fusion.concat import ConcatFusion
from mmkeras.fusion.cross_attention import CrossAttentionFusion
from mmkeras.fusion.gated import GatedFusion
from mmkeras.fusion.late import LateFusion
from mmkeras.fusion.low_rank_tensor import LowRankTensorFusion
from mmkeras.fusion.tensor import TensorFusion

FUSIONS: Mapping[str, type] = {
    "concat": ConcatFusion,
    "attention": AttentionFusion,
    "cross_attention": CrossAttentionFusion,
    "gated": GatedFusion,
    "late": LateFusion,
    "tensor": TensorFusion,
    "low_rank_tensor": LowRankTensorFusion,
}

__all__ = [
    "FUSIONS",
    "AttentionFusion",
    "ConcatFusion",
    "CrossAttentionFusion",
    "GatedFusion",
    "LateFusion",
    "LowRankTensorFusion",
    "TensorFusion",
]
