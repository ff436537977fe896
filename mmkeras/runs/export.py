"""`export_run`: export a training run folder's best model for TF Serving, what `mmkeras export` runs."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from mmkeras.export.saved_model import export_for_serving
from mmkeras.runs.load import load_run


def export_run(
    run_dir: str | os.PathLike,
    base_dir: str | os.PathLike = "saved_models",
    name: str | None = None,
    version: int | None = None,
    *,
    check_split: str | None = "test",
    check_examples: int = 64,
) -> Path:
    """Export a training run's best model (what `mmkeras export` runs), skew check included.

    Args:
      run_dir: a run folder written by `mmkeras.train`.
      base_dir, name, version: as for `export_for_serving`.
      check_split: the split `check_export` compares on before the version is
        published (None: no check; a split the spec lacks is skipped).
      check_examples: how many examples the check compares.

    Returns:
      The new version folder.

    Raises:
      ExportSkewError: if the check fails (nothing is written).

    Example:
      >>> export_run("runs/tiny")
      PosixPath('saved_models/tiny_concat/1')
    """
    model, spec = load_run(run_dir)
    if check_split is not None and check_split not in spec.splits:
        warnings.warn(f"Spec {spec.name!r} has no {check_split!r} split, so the export is published without a "
                      f"skew check; pass check_split= one of {sorted(spec.splits)}.", stacklevel=2)
        check_split = None
    return export_for_serving(
        model, spec, base_dir, name, version, check_split=check_split, check_examples=check_examples
    )
