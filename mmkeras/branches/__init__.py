"""Branch builders: one per modality, each `build_<modality>_branch(feature, **kwargs)`.

Every branch returns a `keras.Model` with outputs `{"embedding", "sequence"}`;
branches know nothing about fusion.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

from mmkeras.branches.audio import build_audio_branch
from mmkeras.branches.image import BACKBONES, build_image_branch
from mmkeras.branches.text import build_text_branch

BRANCHES: Mapping[str, Callable] = {
    "text": build_text_branch,
    "image": build_image_branch,
    "audio": build_audio_branch,
}

__all__ = ["BACKBONES", "BRANCHES", "build_audio_branch", "build_image_branch", "build_text_branch"]
