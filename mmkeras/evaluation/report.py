"""`evaluate`: one call from a trained model to a JSON report and PNG plots."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np

from mmkeras.data.pipeline import make_dataset
from mmkeras.evaluation import plots
from mmkeras.evaluation.calibration import attribution_shares, calibration_report
from mmkeras.evaluation.metrics import classification_report, confusion_matrix
from mmkeras.evaluation.reliance import FULL, absence_warnings, collect_predictions
from mmkeras.models.calibration import calibrate, temperatures_of
from mmkeras.models.explain import explain
from mmkeras.models.saving import load_classifier
from mmkeras.spec import DatasetSpec, load_spec
from mmkeras.training.run_dir import read_history

LOGGER = logging.getLogger("mmkeras")


def evaluate(
    model: keras.Model | str | os.PathLike,
    spec: DatasetSpec | str | os.PathLike,
    split: str = "test",
    *,
    batch_size: int = 64,
    output_dir: str | os.PathLike | None = None,
    history: Mapping[str, Sequence[float]] | str | os.PathLike | None = None,
    seed: int = 0,
    calibration_split: str | None = "validation",
) -> dict:
    """Score a classifier on a split and say how much each modality matters, and how far to trust it.

    Besides accuracy, macro-F1, per-class precision/recall and the confusion
    matrix, the report measures **modality reliance**: the accuracy with each
    modality marked absent (next to the accuracy with every input), and with
    each modality's inputs shuffled across the batch; `warnings` says (and
    the `mmkeras` logger warns) when marking a modality absent raises the
    accuracy, i.e. the model does worse for using it. With `output_dir`, it writes `report.json` and PNG plots
    (confusion matrix, reliance bars, attention weights when the fusion has
    them, training curves when a history is given).

    **Calibration**: expected calibration error (15 equal-width bins),
    negative log-likelihood and Brier score, before temperature scaling
    (temperature 1) and after (the temperatures inside a calibrated model;
    for an uncalibrated one, temperatures fitted on `calibration_split`),
    with every input and with each modality marked absent, plus a
    reliability diagram. **Attribution**: the mean share of each modality in
    the occlusion scores of `mmkeras.explain` (of the calibrated model when
    there is one), overall and per true class, plus a plot.

    Args:
      model: a classifier from `build_classifier`, or a `.keras` file.
      spec: its `DatasetSpec`, or a spec name or path.
      split: the split to evaluate.
      batch_size: examples per batch.
      output_dir: folder for `report.json` and the plots; None writes nothing.
      history: a Keras history dict, or a path to a `history.csv`, for the training curves.
      seed: seed of the shuffles.
      calibration_split: for a model without a temperature layer, the
        held-out split to fit one on for the "after" figures (skipped when the
        spec lacks it or it is the evaluated split); None: no "after".

    Returns:
      A dict with `accuracy`, `macro_f1`, `per_class`, `confusion_matrix`,
      `class_names`, `num_examples`, `reliance` ({feature: {"absent",
      "shuffled", "absent_drop", "shuffled_drop", "full"}}: "full" is the
      accuracy with every input), `warnings` (see `absence_warnings`),
      `modality_weights` (mean per feature, or None), `calibration` ({"temperatures", "fitted_on",
      "patterns": {"all_inputs" | "<feature>_absent": {"before", "after"}}},
      each with "ece", "nll", "brier", "accuracy" and the reliability bins),
      `attribution` ({"method": "occlusion", "overall", "per_class"}) and
      `files` (written paths).

    Raises:
      ValueError: if the split is empty or unknown.

    Example:
      >>> report = evaluate(result.model, spec, output_dir="runs/tiny/eval")
      >>> report["reliance"]["sound"]["absent"]
      0.61
    """
    spec = spec if isinstance(spec, DatasetSpec) else load_spec(spec)
    if not isinstance(model, keras.Model):
        model = load_classifier(model)
    dataset = make_dataset(spec, split, batch_size=batch_size, training=False, deterministic=True)
    collected = collect_predictions(model, spec, dataset.as_numpy_iterator(), seed=seed)
    labels = collected["labels"]
    names = spec.label.class_names

    def accuracy(predictions):
        return float(np.mean(predictions == labels))

    matrix = confusion_matrix(labels, collected["predictions"][FULL], spec.num_classes)
    report = classification_report(matrix, names)
    full = report["accuracy"]
    reliance = {}
    for feature in spec.features:
        absent = accuracy(collected["predictions"][f"{feature.name}_absent"])
        shuffled = accuracy(collected["predictions"][f"{feature.name}_shuffled"])
        reliance[feature.name] = {
            "full": full,
            "absent": absent,
            "shuffled": shuffled,
            "absent_drop": full - absent,
            "shuffled_drop": full - shuffled,
        }
    weights = collected["modality_weights"]
    warnings = absence_warnings(reliance, full)
    for warning in warnings:
        LOGGER.warning("Split %r of spec %r: %s", split, spec.name, warning)
    calibration, attribution, shares = _trust(model, spec, split, dataset, labels, calibration_split, batch_size)
    report.update(
        split=split,
        num_examples=int(len(labels)),
        class_names=list(names),
        confusion_matrix=matrix.tolist(),
        reliance=reliance,
        warnings=warnings,
        modality_weights=None if weights is None else dict(zip(spec.feature_names, weights.mean(axis=0).tolist())),
        calibration=calibration,
        attribution=attribution,
        files={},
    )
    if output_dir is not None:
        report["files"] = _write(report, {**collected, "attribution_shares": shares}, spec, Path(output_dir), history)
    return report


def _trust(model: keras.Model, spec: DatasetSpec, split: str, dataset, labels: np.ndarray, calibration_split: str | None,
           batch_size: int):
    """The calibration figures, the attribution summary and the per-example shares (with their labels)."""
    fitted, fitted_on = None, None
    if temperatures_of(model) is not None:
        fitted_on = "the model's own temperature layer"
    elif calibration_split in spec.splits and calibration_split != split:
        fitted = calibrate(model, spec, calibration_split, batch_size=batch_size)
        fitted_on = calibration_split
    calibration = calibration_report(model, dataset.as_numpy_iterator(), spec.feature_names, fitted=fitted)
    calibration["fitted_on"] = fitted_on
    explained = fitted or model
    scores = explain(explained, dataset.as_numpy_iterator(), method="occlusion")["scores"]
    summary, shares, share_labels = attribution_shares(scores, labels, spec.feature_names, spec.label.class_names)
    return calibration, {"method": "occlusion", **summary}, (shares, share_labels)


def _write(report: dict, collected: dict, spec: DatasetSpec, output_dir: Path, history) -> dict[str, str]:
    output_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "confusion_matrix": plots.plot_confusion_matrix(
            np.array(report["confusion_matrix"]), spec.label.class_names, output_dir / "confusion_matrix.png"
        ),
        "reliance": plots.plot_reliance(report["reliance"], report["accuracy"], output_dir / "reliance.png"),
    }
    if collected["modality_weights"] is not None:
        files["modality_weights"] = plots.plot_modality_weights(
            collected["modality_weights"], collected["labels"], spec.feature_names, spec.label.class_names,
            output_dir / "modality_weights.png",
        )
    files["reliability"] = plots.plot_reliability(report["calibration"]["patterns"], output_dir / "reliability.png")
    shares, share_labels = collected["attribution_shares"]
    if len(shares):
        files["attribution"] = plots.plot_modality_weights(
            shares, share_labels, spec.feature_names, spec.label.class_names, output_dir / "attribution.png",
            title="Occlusion attribution share by class", ylabel="mean share",
        )
    if isinstance(history, (str, os.PathLike)):
        history = read_history(history) or None  # resumed runs' repeated epochs counted once
    if history:
        files["training_curves"] = plots.plot_training_curves(history, output_dir / "training_curves.png")
    files = {name: str(path) for name, path in files.items()}
    report = {**report, "files": files}
    (output_dir / "report.json").write_text(json.dumps(report, indent=2))
    files["report"] = str(output_dir / "report.json")
    return files
