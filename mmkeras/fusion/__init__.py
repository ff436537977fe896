"""Fusion layers: each turns a list of modality embeddings into one vector.

`FUSIONS` maps each fusion's name to its layer class; see `fusion/common.py`
for the call contract they all share.
"""
from __future__ import annotations

from typing import Mapping

from mmkeras.fusion.concat import ConcatFusion

FUSIONS: Mapping[str, type] = {
    "concat": ConcatFusion,
}

__all__ = ["FUSIONS", "ConcatFusion"]
