"""Reading a training run folder back: the trained classifier and the spec it was trained on.

The folder's layout is `mmkeras.training.run_dir.RunPaths`; training writes
it, and everything that starts from a run folder (`evaluate_run`,
`export_run`, `predict_run`, the CLI) loads it through here.
"""
from __future__ import annotations

import os

from mmkeras.data.validation import ValidationSplit
from mmkeras.models.saving import load_classifier
from mmkeras.spec import DatasetSpec, load_spec
from mmkeras.training.config import load_run_config
from mmkeras.training.run_dir import RunPaths

CHECKPOINTS = ("best", "final")


def load_run_spec(run_dir: str | os.PathLike) -> DatasetSpec:
    """Return the dataset spec a run was trained on (its features only), from its `config.yaml`.

    Args:
      run_dir: a run folder written by `train`.

    Returns:
      The `DatasetSpec`, restricted to the features the model reads; when
      training carved a validation split out of the train split, the spec
      has it (and the cut-down train split), read from `validation_split.json`.

    Raises:
      FileNotFoundError: if the folder has no `config.yaml`, or the spec it names is gone.
      ValueError: if the config names no spec, or features the spec lacks.

    Example:
      >>> load_run_spec("runs/tiny-concat").name
      'tiny'
    """
    paths = RunPaths(run_dir)
    if not paths.config.is_file():
        raise FileNotFoundError(
            f"{paths.run_dir} is not a training run folder: it has no config.yaml. "
            "Give the output folder of `mmkeras train` (or of `mmkeras.train(...)`)."
        )
    config = load_run_config(paths.config)
    if config.spec is None:
        raise ValueError(f"{paths.config} names no dataset spec; add `spec: <name or path of the spec YAML>`.")
    spec = load_spec(config.spec)
    if paths.validation_split.is_file() and "validation" not in spec.splits:
        spec = ValidationSplit.load(paths.validation_split).apply(spec)
    return spec.with_features(config.features) if config.features else spec


def load_run(run_dir: str | os.PathLike, *, checkpoint: str = "best"):
    """Load a run's trained classifier and its dataset spec.

    Args:
      run_dir: a run folder written by `train`.
      checkpoint: "best" (`best.keras`, the best monitored epoch; falls back
        to `final.keras` when missing) or "final" (`final.keras`).

    Returns:
      `(model, spec)`: the full classifier (every output) and the `DatasetSpec`.

    Raises:
      FileNotFoundError: if the folder has no config or no trained model yet.
      ValueError: for an unknown `checkpoint`.

    Example:
      >>> model, spec = load_run("runs/tiny-concat")
      >>> sorted(model.output)
      ['probabilities']
    """
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"Unknown checkpoint {checkpoint!r}. Expected one of {list(CHECKPOINTS)}.")
    spec = load_run_spec(run_dir)
    paths = RunPaths(run_dir)
    path = paths.best_model if checkpoint == "best" and paths.best_model.is_file() else paths.final_model
    if not path.is_file():
        raise FileNotFoundError(
            f"{paths.run_dir} holds no trained model yet ({path.name} is missing): the run has not finished. "
            "Run the same training command again to resume it."
        )
    return load_classifier(path), spec
