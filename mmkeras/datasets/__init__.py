"""Builders for the bundled and known real datasets.

Each builder writes a manifest (and the files it points at) into a folder;
`prepare(spec)` runs the spec's builder once, on first use.
"""
from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from mmkeras.registry import lookup

if TYPE_CHECKING:
    from mmkeras.spec import DatasetSpec

# Dataset name -> "module:function" of its builder, imported only when used.
DATASETS: Mapping[str, str] = {
    "tiny": "mmkeras.datasets.tiny:build",
    "avmnist": "mmkeras.datasets.avmnist:build",
    "tuxpaint": "mmkeras.datasets.tuxpaint:build",
}
READY_MARKER = ".mmkeras-complete"


def get_builder(name: str) -> Callable[..., Path]:
    """Return the builder function registered as `name` in `DATASETS`.

    Raises:
      ValueError: if no dataset of that name is known.
    """
    module_name, function_name = lookup(DATASETS, name, "dataset").split(":")
    return getattr(importlib.import_module(module_name), function_name)


def prepare(spec: DatasetSpec) -> Path:
    """Make sure the spec's data exists on disk, building it on first use.

    Specs with a `source` are written by that builder into `spec.data_dir`. The
    build runs in a temporary folder renamed into place at the end, so a build
    that is killed half-way never leaves a half-written dataset behind. A
    finished build leaves a `READY_MARKER` file. A `data_dir` that holds
    other files is never replaced: the build stops with an error instead.
    Specs without a `source` are left alone.

    Args:
      spec: a `DatasetSpec`.

    Returns:
      The spec's data folder.

    Raises:
      ValueError: if `spec.source` names no dataset in `DATASETS`, or a
        `source_options` value is out of range.
      TypeError: for a `source_options` key the builder does not take.
      FileNotFoundError: if the builder's source files are missing (e.g. the
        Tux Paint stamps are not installed). A failed build leaves nothing behind.
      FileExistsError: if `data_dir` holds files that no mmkeras build wrote.

    Example:
      >>> prepare(load_spec("tiny"))
      PosixPath('/root/.cache/mmkeras/tiny')
    """
    data_dir = Path(spec.data_dir)
    if spec.source is None or (data_dir / READY_MARKER).exists():
        return data_dir
    if data_dir.is_dir() and any(data_dir.iterdir()):
        # A build is renamed into place whole, marker included: these files are not one.
        raise FileExistsError(
            f"Spec {spec.name!r} builds dataset {spec.source!r} into {data_dir}, which holds files mmkeras did not "
            f"build (no {READY_MARKER}). Nothing was changed: point `data_dir` at a new folder, or empty this one."
        )
    builder = get_builder(spec.source)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}-", dir=data_dir.parent))
    try:
        builder(staging, **spec.source_options)
        (staging / READY_MARKER).write_text("built by mmkeras\n")
        if data_dir.exists():
            data_dir.rmdir()  # empty (checked above); a folder of files is never replaced
        os.replace(staging, data_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return data_dir
