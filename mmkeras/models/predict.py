"""Predict from raw rows (text inline, image and audio as file paths or bytes)."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from mmkeras.data.decoders import decode_batch
from mmkeras.models.classifier import MODALITY_WEIGHTS, PROBABILITIES
from mmkeras.spec import DatasetSpec


def raw_batch(spec: DatasetSpec, rows: Sequence[Mapping[str, Any]], *, base_dir: str | os.PathLike | None = None) -> dict:
    """Turn rows as a user has them into the raw strings the decoders take.

    A row maps feature names to values: text inline; image and audio as file
    paths (relative to `base_dir`) or bytes. A missing key, None or "" marks
    the modality absent for that row.

    Args:
      spec: the dataset spec.
      rows: the examples.
      base_dir: folder that relative file paths are read from (default: the working directory).

    Returns:
      Feature name -> list of strings/bytes, and `"<name>_present"` -> list of bools.

    Raises:
      ValueError: if a row is not a mapping or names an unknown feature.
      FileNotFoundError: naming the row, feature and path of a missing file.
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    raw = {key: [] for f in spec.features for key in (f.name, f.presence_key)}
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"Row {index}: expected an object of feature values, got {type(row).__name__}.")
        unknown = sorted(set(row) - set(spec.feature_names) - {spec.label.column})
        if unknown:
            raise ValueError(f"Row {index}: unknown features {unknown}; expected {list(spec.feature_names)}.")
        for feature in spec.features:
            value = row.get(feature.name)
            present = value not in (None, "", b"")
            if present and feature.modality != "text" and not isinstance(value, bytes):
                path = base / str(value)
                if not path.is_file():
                    raise FileNotFoundError(f"Row {index}, feature {feature.name!r}: no file {str(path)!r}.")
                value = path.read_bytes()
            raw[feature.name].append(value if present else b"")
            raw[feature.presence_key].append(present)
    return raw


def predict(model: keras.Model, spec: DatasetSpec, rows: Sequence[Mapping[str, Any]], *,
            base_dir: str | os.PathLike | None = None) -> list[dict]:
    """Classify raw rows with a trained classifier.

    Rows go through the same decoders as the training pipeline and the
    serving signature, so the answer is the one the exported model gives.

    Args:
      model: a classifier from `build_classifier` (or loaded from `.keras`).
      spec: its dataset spec.
      rows: examples as in `raw_batch`.
      base_dir: folder that relative file paths are read from.

    Returns:
      One dict per row: `class_name`, `class_id`, `probabilities` (class name ->
      probability) and, for fusions that weight modalities, `modality_weights`.

    Example:
      >>> predict(model, spec, [{"caption": "a red ball", "picture": "ball.png"}])[0]["class_name"]
      'red'
    """
    if not rows:
        return []
    inputs = decode_batch(spec, raw_batch(spec, rows, base_dir=base_dir))
    outputs = model.predict_on_batch(inputs)
    probabilities = np.asarray(outputs[PROBABILITIES])
    results = []
    for i, row_probabilities in enumerate(probabilities):
        class_id = int(np.argmax(row_probabilities))
        result = {
            "class_name": spec.label.class_names[class_id],
            "class_id": class_id,
            "probabilities": dict(zip(spec.label.class_names, map(float, row_probabilities))),
        }
        if MODALITY_WEIGHTS in outputs:
            result[MODALITY_WEIGHTS] = dict(zip(spec.feature_names, map(float, outputs[MODALITY_WEIGHTS][i])))
        results.append(result)
    return results
