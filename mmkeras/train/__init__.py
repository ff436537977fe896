"""Training: configs, the distribution strategy, the loop and its callbacks.

Names are imported on first use, so reading a run config
(`mmkeras.train.config`) does not import TensorFlow. The package itself is
callable: `mmkeras.train(spec, ...)` runs `mmkeras.train.loop.train`.
"""
from __future__ import annotations

import importlib

from mmkeras._callable import make_module_callable

# Public name -> module that defines it. Written out once; read-only.
_EXPORTS = {
    "train": "mmkeras.train.loop",
    "TrainResult": "mmkeras.train.loop",
    "make_run_config": "mmkeras.train.loop",
    "make_optimizer": "mmkeras.train.loop",
    "effective_learning_rate": "mmkeras.train.loop",
    "build_and_compile": "mmkeras.train.loop",
    "ModelConfig": "mmkeras.train.config",
    "TrainingConfig": "mmkeras.train.config",
    "RuntimeConfig": "mmkeras.train.config",
    "RunConfig": "mmkeras.train.config",
    "load_run_config": "mmkeras.train.config",
    "load_run": "mmkeras.train.run_dir",
    "load_run_spec": "mmkeras.train.run_dir",
    "save_run_config": "mmkeras.train.config",
    "make_strategy": "mmkeras.train.strategy",
    "resolve_runtime": "mmkeras.train.strategy",
    "ResolvedRuntime": "mmkeras.train.strategy",
    "RunPaths": "mmkeras.train.run_dir",
    "read_history": "mmkeras.train.run_dir",
    "balanced_class_weights": "mmkeras.train.class_weights",
    "SparseCategoricalFocalCrossentropy": "mmkeras.train.losses",
    "SparseMacroF1Score": "mmkeras.train.metrics",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 - the export table is the one list of names


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mmkeras.train' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return sorted(set(globals()) | set(__all__))


def _train(*args, **kwargs):
    """Train a multimodal classifier into a run folder: see `mmkeras.train.loop.train`."""
    from mmkeras.train.loop import train

    return train(*args, **kwargs)


make_module_callable(__name__, _train)
