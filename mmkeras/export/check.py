"""`check_export`: prove that an export answers exactly as the training pipeline + Keras model do.

Training/serving skew (preprocessing in serving that drifts from training) is
the classic failure of model exports. The check takes real raw examples of a
split and runs them two ways: through the SavedModel's raw-input signatures,
and through `make_dataset` (the training pipeline's decoding) into the Keras
model. The probabilities must agree within `tolerance`, and so must the
`serving_explain` attributions with `mmkeras.explain(model, decoded,
method="occlusion")` on the same examples. Running the
pipeline's decoded tensors through `serving_decoded` as well tells the two
possible causes apart: if that signature agrees and the raw ones do not, the
decoders differ; if it disagrees too, the model inside the export differs.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mmkeras.checks import check_positive_int
from mmkeras.data.pipeline import make_dataset, read_split
from mmkeras.export import signatures
from mmkeras.export.archive import EXTRA_DIR, KERAS_MODEL_FILE, resolve_version_dir
from mmkeras.models.explain import explain
from mmkeras.models.saving import load_classifier
from mmkeras.spec import DatasetSpec, load_spec
from mmkeras.wire import ATTRIBUTION_SUFFIX

DEFAULT_TOLERANCE = 1e-5


class ExportSkewError(ValueError):
    """The export's answers differ from the training pipeline's; `report` holds the figures.

    Raised by `check_export` (and so by `export_for_serving` and `export_run`
    when they check before publishing) and by the tower export's
    `check_tower_export`. The message gives each signature's largest
    difference and the likely cause; `report` is the failed `ExportCheck`.
    A `ValueError`, so callers that catch bad inputs catch it too.

    Args:
      message: the error message.
      report: the `ExportCheck` that failed.
    """

    def __init__(self, message: str, report: ExportCheck):
        super().__init__(message)
        self.report = report


@dataclasses.dataclass(frozen=True)
class ExportCheck:
    """What `check_export` measured.

    Attributes:
      path: the checked version folder.
      split: the split the examples came from.
      num_examples: how many examples were compared.
      max_abs_diff: the largest |probability difference| over all signatures.
      diffs: signature name -> its largest |probability difference|.
      tolerance: the largest difference allowed.
    """

    path: Path
    split: str
    num_examples: int
    max_abs_diff: float
    diffs: dict
    tolerance: float

    @property
    def passed(self) -> bool:
        """Whether every signature agreed within the tolerance."""
        return self.max_abs_diff <= self.tolerance

    def __str__(self) -> str:
        verdict = "<=" if self.passed else ">"
        head = (
            f"check_export {self.path} ({self.num_examples} examples of split {self.split!r}): "
            f"max |diff| {self.max_abs_diff:.3g} {verdict} {self.tolerance:g}"
        )
        return "\n".join([head] + [f"  {name}: {diff:.3g}" for name, diff in self.diffs.items()])


def check_export(
    path: str | os.PathLike,
    spec: DatasetSpec | str,
    split: str = "test",
    n: int = 64,
    *,
    model: keras.Model | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    batch_size: int = 32,
    signature_names: tuple[str, ...] | None = None,
) -> ExportCheck:
    """Compare an export with the training pipeline + Keras model on real raw examples; fail on skew.

    The first `n` raw records of the split (`read_split`: the text, the files'
    bytes, the presence flags) go through every signature of the SavedModel;
    the same examples, decoded by `make_dataset`, go through the Keras model.

    Args:
      path: a version folder from `export_for_serving`, or its model folder
        (the latest version is checked).
      spec: the dataset spec (or its name or path) the model was built for.
      split: the split whose examples are used.
      n: how many examples (fewer if the split is smaller).
      model: the Keras model to compare with; default: the `model.keras`
        saved in the export's `assets.extra/`.
      tolerance: the largest allowed |probability difference|.
      batch_size: examples per call on both sides.
      signature_names: the signatures to compare (default: all of them).

    Returns:
      An `ExportCheck` (it passed).

    Raises:
      ExportSkewError: if some probability differs by more than `tolerance`;
        the message gives each signature's difference and the likely cause.
      ValueError: if the export's inputs do not match the spec, the split is
        empty, or a signature name is unknown.
      FileNotFoundError: if `model` is None and the export has no `model.keras`.
      RuntimeError: if `read_split` and `make_dataset` yield the examples in
        different orders (they cannot be paired).

    Example:
      >>> print(check_export("saved_models/tiny_concat/1", "tiny"))
      check_export saved_models/tiny_concat/1 (24 examples of split 'test'): max |diff| 0 <= 1e-05
    """
    if not isinstance(spec, DatasetSpec):
        spec = load_spec(spec)
    n = check_positive_int(n, "n")
    checked_signatures = _signatures_to_check(spec, signature_names)
    version_dir = resolve_version_dir(path)
    loaded = tf.saved_model.load(str(version_dir))
    _check_inputs_match(loaded, spec, version_dir)
    if model is None:
        model = _load_keras_model(version_dir)

    raw_records = list(read_split(spec, split).take(n).as_numpy_iterator())
    if not raw_records:
        raise ValueError(f"Split {split!r} of spec {spec.name!r} has no examples to check the export with.")
    count = len(raw_records)
    raw = {key: _column([record[0][key] for record in raw_records]) for key in raw_records[0][0]}
    decoded, labels = _pipeline_batches(make_dataset(spec, split, batch_size=batch_size, training=False, cache=False),
                                        count)
    _check_alignment(spec, raw, np.array([record[1] for record in raw_records]), decoded, labels)

    expected = _in_chunks(lambda chunk: model(chunk, training=False)["probabilities"], decoded, count, batch_size)
    inputs = {
        signatures.DEFAULT: {f.name: raw[f.name] for f in spec.features},
        signatures.WITH_PRESENCE: raw,
        signatures.EXPLAIN: {f.name: raw[f.name] for f in spec.features},
        signatures.WAVEFORM: {**raw, **{f.name: decoded[f.name] for f in spec.features if f.modality == "audio"}},
        signatures.DECODED: decoded,
    }
    rows = {name: np.arange(count) for name in inputs}
    # An empty value that is present (an empty text from a TFRecord) reads as missing in serving_default.
    rows[signatures.DEFAULT] = np.flatnonzero(~np.any(
        [raw[f.presence_key] & (np.vectorize(len)(raw[f.name]) == 0) for f in spec.features], axis=0
    ))
    rows[signatures.EXPLAIN] = rows[signatures.DEFAULT]
    diffs = {}
    for name in checked_signatures:
        function = loaded.signatures[name]
        picked = {key: value[rows[name]] for key, value in inputs[name].items()}
        got = _in_chunks(lambda chunk, f=function: f(**chunk)["probabilities"], picked, len(rows[name]), batch_size)
        diffs[name] = float(np.max(np.abs(got - expected[rows[name]]))) if len(rows[name]) else 0.0
        if name == signatures.EXPLAIN and len(rows[name]):
            diffs[name] = max(diffs[name], _attribution_diff(spec, model, function, decoded, picked, rows[name],
                                                             batch_size))
    report = ExportCheck(
        path=version_dir, split=split, num_examples=count, max_abs_diff=max(diffs.values()), diffs=diffs,
        tolerance=float(tolerance),
    )
    if not report.passed:
        raise ExportSkewError(f"{report}\n{_diagnosis(report)}", report)
    return report


def _attribution_diff(spec: DatasetSpec, model: keras.Model, function, decoded: dict, raw: dict, rows: np.ndarray,
                      batch_size: int) -> float:
    """The largest |difference| between `serving_explain`'s attributions and `explain`'s occlusion scores."""
    names = list(spec.feature_names)

    def served(chunk):
        outputs = function(**chunk)
        return np.stack([np.asarray(outputs[f"{name}{ATTRIBUTION_SUFFIX}"]) for name in names], axis=1)

    def explained(chunk):
        return np.stack(list(explain(model, chunk, method="occlusion")["scores"].values()), axis=1)

    got = _in_chunks(served, raw, len(rows), batch_size)
    expected = _in_chunks(explained, {key: value[rows] for key, value in decoded.items()}, len(rows), batch_size)
    return float(np.max(np.abs(got - expected)))


def _signatures_to_check(spec: DatasetSpec, names: tuple[str, ...] | None) -> tuple[str, ...]:
    known = signatures.signature_names(spec)
    if names is None:
        return known
    unknown = sorted(set(names) - set(known))
    if unknown or not names:
        raise ValueError(f"Unknown signature names {unknown or list(names)}; expected some of {list(known)}.")
    return tuple(names)


def _check_inputs_match(loaded, spec: DatasetSpec, version_dir: Path) -> None:
    exported = set(loaded.signatures[signatures.DEFAULT].structured_input_signature[1])
    if exported != set(spec.feature_names):
        raise ValueError(
            f"The export {version_dir} takes inputs {sorted(exported)} but spec {spec.name!r} has features "
            f"{sorted(spec.feature_names)}. Check it with the spec it was exported with."
        )


def _load_keras_model(version_dir: Path) -> keras.Model:
    path = version_dir / EXTRA_DIR / KERAS_MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist, so there is no Keras model to compare the export with. Pass model=."
        )
    return load_classifier(path)


def _column(values: list) -> np.ndarray:
    if isinstance(values[0], bytes):
        column = np.empty(len(values), object)
        column[:] = values
        return column
    return np.asarray(values)


def _pipeline_batches(dataset: tf.data.Dataset, count: int) -> tuple[dict, np.ndarray]:
    """The first `count` decoded examples and labels of a batched dataset, as numpy."""
    features, labels, taken = [], [], 0
    for batch, label in dataset.as_numpy_iterator():
        features.append(batch)
        labels.append(label)
        taken += len(label)
        if taken >= count:
            break
    joined = {key: np.concatenate([batch[key] for batch in features])[:count] for key in features[0]}
    return joined, np.concatenate(labels)[:count]


def _check_alignment(spec: DatasetSpec, raw: dict, raw_labels: np.ndarray, decoded: dict, labels: np.ndarray):
    same = len(labels) == len(raw_labels) and np.array_equal(labels, raw_labels) and all(
        np.array_equal(raw[f.presence_key], decoded[f.presence_key]) for f in spec.features
    )
    if not same:
        raise RuntimeError(
            "read_split and make_dataset returned the examples in different orders (labels or presence flags "
            "differ), so the check cannot pair them. Both must be deterministic with training=False."
        )


def _in_chunks(call, inputs: dict, count: int, batch_size: int) -> np.ndarray:
    """Run `call` on slices of the inputs (as tensors) and stack its outputs as numpy."""
    outputs = []
    for start in range(0, count, batch_size):
        chunk = {key: tf.constant(value[start : start + batch_size]) for key, value in inputs.items()}
        outputs.append(np.asarray(call(chunk)))
    return np.concatenate(outputs) if outputs else np.zeros((0,))


def _diagnosis(report: ExportCheck) -> str:
    decoded_ok = report.diffs.get(signatures.DECODED, 0.0) <= report.tolerance
    if decoded_ok:
        return (
            "serving_decoded agrees, so the model is the same and the decoding differs: the export and the "
            "training pipeline decode raw inputs differently (training/serving skew). Both must call "
            "mmkeras.data.decoders; re-export after changing a decoder."
        )
    return (
        "serving_decoded disagrees too, so the model inside the export differs from the Keras model compared "
        "with (another model, changed weights, or a layer whose get_config loses an argument)."
    )
