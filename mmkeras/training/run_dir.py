"""A training run's folder: where each artefact lives, and reading its history back.

    <run_dir>/
      config.yaml     spec + model/training/runtime configs (`load_run_config` reads it)
      backup/         BackupAndRestore state while a run is unfinished (removed at the end)
      best.keras      the full classifier at its best monitored epoch
      final.keras     the full classifier when training ended
      history.csv     one row per epoch, appended across resumes
      history.json    the same history as {metric: [value per epoch]}, written at the end
      summary.json    what happened: epochs, resumption, best epoch, resolved runtime
      calibration.json  the temperatures fitted on the validation data (and the NLL before/after)
      validation_split.json  the train rows held out for validation when the spec has
                      no validation split (`mmkeras.data.validation`); resumes and
                      `evaluate` reuse them
      tensorboard/    TensorBoard logs
      workers/<task>/ the same files from non-chief workers of a multi-worker run

Training writes these; the run-folder adapters (`mmkeras.runs`) and the CLI
read them back through `load_run` (the trained model and its spec) and
`read_history`.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """The artefact paths of a run folder.

    Args:
      run_dir: the run's folder.

    Example:
      >>> RunPaths("runs/tiny-concat").final_model
      PosixPath('runs/tiny-concat/final.keras')
    """

    run_dir: Path

    def __post_init__(self):
        object.__setattr__(self, "run_dir", Path(self.run_dir))

    @property
    def config(self) -> Path:
        """`config.yaml`: the spec and model/training/runtime configs the run was started with."""
        return self.run_dir / "config.yaml"

    @property
    def backup(self) -> Path:
        """`backup/`: BackupAndRestore state while the run is unfinished (removed at the end)."""
        return self.run_dir / "backup"

    @property
    def best_model(self) -> Path:
        """`best.keras`: the full classifier at its best monitored epoch."""
        return self.run_dir / "best.keras"

    @property
    def final_model(self) -> Path:
        """`final.keras`: the full classifier when training ended."""
        return self.run_dir / "final.keras"

    @property
    def history_csv(self) -> Path:
        """`history.csv`: one row per epoch, appended across resumes."""
        return self.run_dir / "history.csv"

    @property
    def history_json(self) -> Path:
        """`history.json`: the history as `{metric: [value per epoch]}`, written at the end."""
        return self.run_dir / "history.json"

    @property
    def summary(self) -> Path:
        """`summary.json`: epochs, resumption, best epoch and resolved runtime."""
        return self.run_dir / "summary.json"

    @property
    def calibration(self) -> Path:
        """`calibration.json`: the temperatures fitted on the validation data, per saved model."""
        return self.run_dir / "calibration.json"

    @property
    def validation_split(self) -> Path:
        """`validation_split.json`: the train rows held out for validation, when the spec has no validation split."""
        return self.run_dir / "validation_split.json"

    @property
    def tensorboard(self) -> Path:
        """`tensorboard/`: the TensorBoard logs."""
        return self.run_dir / "tensorboard"

    def worker(self, task_name: str) -> RunPaths:
        """The folder a non-chief worker of a multi-worker run writes to."""
        return RunPaths(self.run_dir / "workers" / task_name)

    def can_resume(self) -> bool:
        """Whether an unfinished run's backup is waiting here."""
        return self.backup.is_dir() and any(self.backup.iterdir())


# The kinds of object whose attribute skip set Keras' saving code computes (`saving_lib.get_attr_skipset`).
SAVEABLE_KINDS = ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer", "Loss")


def fill_keras_save_cache() -> None:
    """Store Keras' attribute skip sets under the key its saving code reads, so that saves stop rebuilding them.

    Keras 3.15's `saving_lib.get_attr_skipset(kind)` caches each set under
    "saving_attr_skipset_<kind>" but looks it up under
    "saving_attr_skiplist_<kind>": the lookup never hits, and every save
    builds a throwaway `Layer` (or `Metric`, `Optimizer`) for each object it
    walks. On avmnist's default classifier that was a quarter of a save
    (`save_model` 120 -> 90 ms, `save_weights` 100 -> 70 ms), and a run
    saves twice per epoch (the best model and the backup). The sets stored
    are the ones Keras computes; only where they are kept changes. Keras
    keeps them per thread and `keras.utils.clear_session` drops them, so
    this is called before each save (a dictionary lookup once filled). With
    a Keras without these private modules it does nothing.
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving.saving_lib import get_attr_skipset
    except ImportError:
        return
    for kind in SAVEABLE_KINDS:
        key = f"saving_attr_skiplist_{kind}"
        if global_state.get_global_attribute(key) is None:
            global_state.set_global_attribute(key, get_attr_skipset(kind))


def save_model(model, path: str | os.PathLike) -> Path:
    """Save a Keras model to `path` (a `.keras` file) atomically.

    The model is written beside the target and renamed into place, so a run
    killed while saving leaves the previous file, never half of a new one.

    Returns:
      The file's path.
    """
    fill_keras_save_cache()
    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial.keras")
    model.save(partial)
    os.replace(partial, path)
    return path


def read_history(path: str | os.PathLike) -> dict[str, list[float]]:
    """Read a `history.csv` into `{column: [value per epoch]}`, epochs in order.

    A run killed and resumed may have written an epoch twice (killed between
    logging an epoch and backing it up); the last row of each epoch wins.

    Args:
      path: the CSV file (a missing file reads as an empty history).

    Returns:
      A dict with an "epoch" list (0-based ints) and one float list per metric.

    Example:
      >>> read_history("runs/tiny-concat/history.csv")["epoch"]
      [0, 1, 2]
    """
    path = Path(path)
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as stream:
        rows = {int(row["epoch"]): row for row in csv.DictReader(stream) if row.get("epoch", "") != ""}
    columns = [name for name in next(iter(rows.values()), {}) if name != "epoch"]
    history: dict[str, list] = {"epoch": sorted(rows)}
    for name in columns:
        history[name] = [_number(rows[epoch].get(name)) for epoch in history["epoch"]]
    return history


def _number(text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan
