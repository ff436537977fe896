"""`save_run`: write a model that `train` did not make as a run folder, for the run-folder commands."""
from __future__ import annotations

import os
from pathlib import Path

import keras

from mmkeras.spec import DatasetSpec
from mmkeras.training.config import save_run_config
from mmkeras.training.loop import make_run_config
from mmkeras.training.run_dir import RunPaths, save_model


def save_run(model: keras.Model, spec: DatasetSpec, run_dir: str | os.PathLike) -> Path:
    """Write `model` and its spec as a finished run folder: `config.yaml` and `final.keras`.

    Use it for a model that no training run wrote (a zero-shot classifier, a
    classifier calibrated or fine-tuned by hand), so that `mmkeras evaluate`,
    `mmkeras export` and `mmkeras predict` (and `load_run`) take it. The
    config records the spec and its features; its other sections are the
    defaults, since nothing was trained with them.

    Args:
      model: a classifier with the interface of `build_classifier` (inputs
        named after `spec`'s features, a "probabilities" output).
      spec: the spec whose features the model reads, e.g. `spec.with_features(["picture"])`.
      run_dir: the new run folder.

    Returns:
      The run folder.

    Raises:
      FileExistsError: if `run_dir` already holds a run (a `config.yaml`).

    Example:
      >>> save_run(zero_shot, spec.with_features(["picture"]), "runs/zero_shot")
      PosixPath('runs/zero_shot')
    """
    paths = RunPaths(run_dir)
    if paths.config.exists():
        raise FileExistsError(f"{paths.config} exists: {paths.run_dir} already holds a run. Give a new folder.")
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, paths.final_model)
    save_run_config(make_run_config(spec), paths.config)
    return paths.run_dir
