"""Training: configs, the distribution strategy, the loop and its callbacks.

Names are imported on first use, so reading a run config
(`mmkeras.training.config`) does not import TensorFlow. `mmkeras.train(spec, ...)`
is `mmkeras.training.loop.train`.
"""
from __future__ import annotations

from mmkeras._lazy import lazy_attributes

# Public name -> module that defines it. Written out once; read-only.
_EXPORTS = {
    "train": "mmkeras.training.loop",
    "TrainResult": "mmkeras.training.loop",
    "make_run_config": "mmkeras.training.loop",
    "make_optimizer": "mmkeras.training.loop",
    "effective_learning_rate": "mmkeras.training.loop",
    "build_and_compile": "mmkeras.training.loop",
    "ModelConfig": "mmkeras.training.config",
    "TrainingConfig": "mmkeras.training.config",
    "RuntimeConfig": "mmkeras.training.config",
    "RunConfig": "mmkeras.training.config",
    "load_run_config": "mmkeras.training.config",
    "save_run_config": "mmkeras.training.config",
    "make_strategy": "mmkeras.training.strategy",
    "resolve_runtime": "mmkeras.training.strategy",
    "ResolvedRuntime": "mmkeras.training.strategy",
    "RunPaths": "mmkeras.training.run_dir",
    "read_history": "mmkeras.training.run_dir",
    "save_run": "mmkeras.training.save_run",
    "balanced_class_weights": "mmkeras.training.class_weights",
    "SparseCategoricalFocalCrossentropy": "mmkeras.training.losses",
    "SparseMacroF1Score": "mmkeras.training.metrics",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 - the export table is the one list of names


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
