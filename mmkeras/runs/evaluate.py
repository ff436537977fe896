"""`evaluate_run`: evaluate a training run folder's best model, what `mmkeras evaluate` runs."""
from __future__ import annotations

import os
from pathlib import Path

from mmkeras.evaluation.report import evaluate
from mmkeras.runs.load import load_run


def evaluate_run(run_dir: str | os.PathLike, split: str = "test", *, batch_size: int = 64) -> dict:
    """`evaluate` a training run's best model; writes into `<run_dir>/evaluation/`.

    What `mmkeras evaluate` runs on a run folder: the model and spec come from
    `load_run` and the training curves from the run's `history.csv`.

    Args:
      run_dir: a run folder written by `train`.
      split: the split to evaluate.
      batch_size: examples per batch.

    Returns:
      The `evaluate` report, its `files` under `<run_dir>/evaluation/`.

    Raises:
      FileNotFoundError: if the folder has no config or no trained model yet.
      ValueError: if the split is empty or unknown.

    Example:
      >>> evaluate_run("runs/demo")["accuracy"]
      0.93
    """
    model, spec = load_run(run_dir)
    return evaluate(
        model, spec, split, batch_size=batch_size, output_dir=Path(run_dir) / "evaluation",
        history=Path(run_dir) / "history.csv",
    )
