"""`evaluate_run`: evaluate a training run folder's best model, what `mmkeras evaluate` runs."""
from __future__ import annotations

import os
from pathlib import Path

from mmkeras.evaluation.report import evaluate
from mmkeras.runs.load import load_run


def evaluation_dir(run_dir: str | os.PathLike, split: str = "test") -> Path:
    """Where `evaluate_run` writes a split's report: `<run_dir>/evaluation/` for test, else `evaluation_<split>/`.

    One folder per split, so evaluating the validation split never overwrites the test report.

    Example:
      >>> evaluation_dir("runs/demo", "validation")
      PosixPath('runs/demo/evaluation_validation')
    """
    return Path(run_dir) / ("evaluation" if split == "test" else f"evaluation_{split}")


def evaluate_run(run_dir: str | os.PathLike, split: str = "test", *, batch_size: int = 64) -> dict:
    """`evaluate` a training run's best model; writes into `evaluation_dir(run_dir, split)`.

    What `mmkeras evaluate` runs on a run folder: the model and spec come from
    `load_run` and the training curves from the run's `history.csv`. The test
    split's report goes to `<run_dir>/evaluation/`, any other split's to
    `<run_dir>/evaluation_<split>/`.

    Args:
      run_dir: a run folder written by `train`.
      split: the split to evaluate.
      batch_size: examples per batch.

    Returns:
      The `evaluate` report, its `files` under `evaluation_dir(run_dir, split)`.

    Raises:
      FileNotFoundError: if the folder has no config or no trained model yet.
      ValueError: if the split is empty or unknown.

    Example:
      >>> evaluate_run("runs/demo")["accuracy"]
      0.93
    """
    model, spec = load_run(run_dir)
    return evaluate(
        model, spec, split, batch_size=batch_size, output_dir=evaluation_dir(run_dir, split),
        history=Path(run_dir) / "history.csv",
    )
