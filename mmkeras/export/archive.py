"""The export archive: TF Serving model folders of immutable integer versions, and what lies beside them.

Both exports write through this module: the classifier's `export_for_serving`
(`mmkeras.export.saved_model`) and the alignment towers' `export_tower`
(`mmkeras.alignment.export`). It owns the layout they share:

    base_dir/<name>/
      models.config                    TF Serving model_config_list (docker paths)
      README.md                        written by the exporter, atomically
      1/  2/  ...                      one immutable folder per export
        saved_model.pb  variables/  assets/
        assets.extra/
          mmkeras_export.json          what was exported, with library versions
          tf_serving_warmup_requests   PredictionLog records TF Serving replays on load
          request_instances.json       REST body, row ("instances") form
          request_inputs.json          REST body, columnar ("inputs") form

Each version is written into a hidden temporary folder next to the others
and renamed into place, so TF Serving (which polls the folder) never sees a
half-written version; an existing version is never overwritten.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mmkeras._version import __version__
from mmkeras.checks import check_positive_int
from mmkeras.export import warmup
from mmkeras.wire import DEFAULT_SIGNATURE, resolve_version_dir, to_rest_body, versions

__all__ = [
    "EXTRA_DIR", "KERAS_MODEL_FILE", "METADATA_FILE", "MODEL_CONFIG_FILE", "REST_INPUTS_FILE",
    "REST_INSTANCES_FILE", "library_versions", "model_config_text", "next_version", "read_metadata",
    "resolve_version_dir", "serving_name", "versions", "write_metadata", "write_model_config",
    "write_new_version", "write_new_versions", "write_requests", "write_text_atomically",
]

EXTRA_DIR = "assets.extra"
KERAS_MODEL_FILE = "model.keras"
METADATA_FILE = "mmkeras_export.json"
REST_INSTANCES_FILE = "request_instances.json"
REST_INPUTS_FILE = "request_inputs.json"
MODEL_CONFIG_FILE = "models.config"
# Where TF Serving's docker image looks for models.
DOCKER_MODELS_DIR = "/models"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def serving_name(text: str, fallback: str = "model") -> str:
    """`text` made a valid folder and TF Serving model name: unsafe runs become '_', edges trimmed.

    Example:
      >>> serving_name("tiny picture/caption")
      'tiny_picture_caption'
    """
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.-") or fallback


def next_version(model_dir: str | os.PathLike) -> int:
    """One more than the highest existing version under `model_dir`, or 1.

    The version an export writes when it is given `version=None`.

    Args:
      model_dir: a model folder, `base_dir/<name>` (it need not exist).

    Returns:
      The next free version number.

    Example:
      >>> next_version("saved_models/tiny_concat")
      3
    """
    existing = versions(model_dir)
    return existing[-1] + 1 if existing else 1


def write_new_version(
    base_dir: str | os.PathLike, name: str, version: int | None, write: Callable[[Path, int], None]
) -> Path:
    """Write a new, never-overwritten version folder `base_dir/<name>/<version>` atomically.

    `write(staging, version)` fills a temporary folder beside the versions; it
    is renamed into place only when `write` returns, so TF Serving (which
    watches the folder) never sees half a model, and a failed write leaves nothing.

    Args:
      base_dir: the folder holding exported models.
      name: the model's serving name (letters, digits, '_', '-', '.').
      version: a positive integer, or None for one more than the highest existing.
      write: fills the staging folder.

    Returns:
      The new version folder.

    Raises:
      ValueError: for a bad name or version.
      FileExistsError: if the version exists (also if it appeared while writing).
    """
    return write_new_versions(base_dir, [(name, version, write)])[0]


def write_new_versions(
    base_dir: str | os.PathLike, writes: Sequence[tuple[str, int | None, Callable[[Path, int], None]]]
) -> list[Path]:
    """Write new version folders of several models, publishing all of them or none.

    Each `(name, version, write)` is staged as `write_new_version` stages one;
    the staging folders are renamed into place only once every `write` has
    returned and no target version exists, so models that must be served
    together (the towers of one embedding space) never appear one without the
    other: a failed write publishes nothing. (Only another process racing to
    create the same versions during the renames could publish some of them.)

    Args:
      base_dir: the folder holding exported models.
      writes: `(name, version or None, write)` per model; names must differ.

    Returns:
      The new version folders, in the order of `writes`.

    Raises:
      ValueError: for a bad or repeated name, or a bad version.
      FileExistsError: if a version exists (also if it appeared while writing).

    Example:
      >>> write_new_versions("saved_models", [("a_tower", None, write_a), ("b_tower", None, write_b)])
      [PosixPath('saved_models/a_tower/3'), PosixPath('saved_models/b_tower/3')]
    """
    names = [name for name, _, _ in writes]
    if len(set(names)) != len(names):
        raise ValueError(f"Each model is written once; got the names {names}.")
    for name, version, _ in writes:  # every name and version is checked before anything is written
        if not NAME_PATTERN.match(name):
            raise ValueError(
                f"Model name {name!r} is not a valid folder/serving name; use letters, digits, '_', '-' and '.'."
            )
        if version is not None:
            check_positive_int(version, "version", hint=" or None (next free version)")
    targets = []  # (model folder, version)
    for name, version, _ in writes:
        model_dir = Path(base_dir) / name
        model_dir.mkdir(parents=True, exist_ok=True)
        version = next_version(model_dir) if version is None else int(version)
        _refuse_existing(model_dir, version)
        targets.append((model_dir, version))
    staged = []  # (model folder, version, staging folder)
    try:
        for (model_dir, version), (_, _, write) in zip(targets, writes):
            staged.append((model_dir, version, Path(tempfile.mkdtemp(prefix=f".writing-{version}-", dir=model_dir))))
            write(staged[-1][2], version)
        for model_dir, version, _ in staged:
            _refuse_existing(model_dir, version)
        for model_dir, version, staging in staged:
            os.rename(staging, model_dir / str(version))
    finally:
        for _, _, staging in staged:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return [model_dir / str(version) for model_dir, version, _ in staged]


def _refuse_existing(model_dir: Path, version: int) -> None:
    if (model_dir / str(version)).exists():
        raise FileExistsError(
            f"{model_dir / str(version)} already exists and exported versions are never overwritten. Pass "
            f"version=None to write the next free version ({next_version(model_dir)}), or another name or base_dir."
        )


def write_requests(
    extra_dir: str | os.PathLike,
    warmup_logs: Iterable,
    columns: Mapping[str, np.ndarray],
    signature_name: str = DEFAULT_SIGNATURE,
) -> None:
    """Write the warm-up file and the two example REST bodies (`instances` and `inputs` forms) of a version.

    Args:
      extra_dir: the version's `assets.extra` folder.
      warmup_logs: `PredictionLog` records (see `mmkeras.export.warmup`).
      columns: example inputs, input name -> one row per example.
      signature_name: the signature the REST bodies call.
    """
    extra_dir = Path(extra_dir)
    extra_dir.mkdir(parents=True, exist_ok=True)
    warmup.write_warmup_file(extra_dir / warmup.WARMUP_FILE, warmup_logs)
    for file_name, rest_format in ((REST_INSTANCES_FILE, "instances"), (REST_INPUTS_FILE, "inputs")):
        body = to_rest_body(columns, signature_name, rest_format)
        (extra_dir / file_name).write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")


def library_versions() -> dict[str, str]:
    """The versions of mmkeras, TensorFlow and Keras, as every export's metadata records them."""
    return {"mmkeras": __version__, "tensorflow": tf.__version__, "keras": keras.__version__}


def write_metadata(extra_dir: str | os.PathLike, metadata: Mapping) -> Path:
    """Write `assets.extra/mmkeras_export.json`: `metadata` followed by the library versions.

    Returns:
      The metadata file's path.
    """
    extra_dir = Path(extra_dir)
    extra_dir.mkdir(parents=True, exist_ok=True)
    path = extra_dir / METADATA_FILE
    path.write_text(json.dumps({**metadata, "versions": library_versions()}, indent=1) + "\n", encoding="utf-8")
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """Read `assets.extra/mmkeras_export.json` of a version folder (or a model folder's latest version).

    The metadata the exporter recorded: for a classifier its name, version,
    spec, features, class names, signatures' inputs, the `saved_model_cli`
    command and library versions.

    Args:
      path: a version folder, or a model folder (its latest version is read).

    Returns:
      The metadata as a dict.

    Raises:
      FileNotFoundError: if `path` is not an export, or the version has no metadata file.

    Example:
      >>> read_metadata("saved_models/tiny_concat")["class_names"]
      ['red', 'green', 'blue']
    """
    version_dir = resolve_version_dir(path)
    return json.loads((version_dir / EXTRA_DIR / METADATA_FILE).read_text(encoding="utf-8"))


def model_config_text(name: str) -> str:
    """TF Serving's `model_config_list` for one model, with the docker image's path `/models/<name>`."""
    return (
        "model_config_list {\n"
        "  config {\n"
        f'    name: "{name}"\n'
        f'    base_path: "{DOCKER_MODELS_DIR}/{name}"\n'
        '    model_platform: "tensorflow"\n'
        "  }\n"
        "}\n"
    )


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` through a hidden file and a rename, so a reader never sees half of it."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.writing")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)
    return path


def write_model_config(model_dir: str | os.PathLike, name: str) -> Path:
    """Write `model_dir/models.config` (see `model_config_text`) and return its path."""
    return write_text_atomically(Path(model_dir) / MODEL_CONFIG_FILE, model_config_text(name))
