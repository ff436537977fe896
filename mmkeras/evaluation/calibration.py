"""Calibration and attribution figures of an evaluation: ECE, NLL, Brier, reliability bins, modality shares.

`evaluate` runs the split once as given and once with each modality marked
absent (the presence patterns), takes the raw logits, and scores the
probabilities before calibration (temperature 1) and after (the temperatures
inside a calibrated model, or fitted on a held-out split for one that is not).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import keras
import numpy as np

from mmkeras.models.calibration import collect_logits, temperatures_of, with_temperature

NUM_BINS = 15
ALL_INPUTS = "all_inputs"


def calibration_metrics(probabilities: np.ndarray, labels: np.ndarray, num_bins: int = NUM_BINS) -> dict:
    """Expected calibration error, negative log-likelihood and Brier score of predicted probabilities.

    ECE (Guo et al., 2017) splits the confidences (the top probability) into
    `num_bins` equal-width bins over [0, 1] and averages |accuracy -
    confidence| over the bins, weighted by their share of the examples.

    Args:
      probabilities: (n, C) predicted probabilities.
      labels: (n,) true class ids.
      num_bins: the number of equal-width confidence bins.

    Returns:
      `{"ece", "nll", "brier", "accuracy", "num_examples", "bins": {"count",
      "confidence", "accuracy"}}` (per-bin lists; empty bins have count 0 and None).

    Example:
      >>> calibration_metrics(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([0, 1]))["ece"]
      0.35
    """
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels, int)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, num_bins - 1)
    counts = np.bincount(which, minlength=num_bins)
    bin_confidence = np.bincount(which, confidence, minlength=num_bins) / np.maximum(counts, 1)
    bin_accuracy = np.bincount(which, correct.astype(float), minlength=num_bins) / np.maximum(counts, 1)
    n = max(len(labels), 1)
    one_hot = np.eye(probabilities.shape[1])[labels]
    picked = probabilities[np.arange(len(labels)), labels]
    return {
        "ece": float(np.sum(counts / n * np.abs(bin_accuracy - bin_confidence))),
        "nll": float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0)))) if len(labels) else 0.0,
        "brier": float(np.mean(np.sum((probabilities - one_hot) ** 2, axis=1))) if len(labels) else 0.0,
        "accuracy": float(np.mean(correct)) if len(labels) else 0.0,
        "num_examples": len(labels),
        "bins": {
            "count": counts.tolist(),
            "confidence": [float(c) if k else None for c, k in zip(bin_confidence, counts)],
            "accuracy": [float(a) if k else None for a, k in zip(bin_accuracy, counts)],
        },
    }


def calibration_report(model: keras.Model, batches: Iterable, feature_names: Sequence[str],
                       fitted: keras.Model | None = None) -> dict:
    """Calibration figures per presence pattern, before and after temperature scaling.

    Args:
      model: the classifier (calibrated or not).
      batches: (features, labels) batches of the evaluated split.
      feature_names: the model's features, in its presence-matrix order.
      fitted: for an uncalibrated `model`, the same model calibrated on a
        held-out split (its temperatures give "after"); None: no "after".

    Returns:
      `{"temperatures": list or None, "patterns": {pattern: {"before": metrics,
      "after": metrics or None}}}` with patterns "all_inputs" (the split as
      given) and "<feature>_absent" (that modality's flag set to False).
    """
    calibrated = model if temperatures_of(model) is not None else fitted
    probe = with_temperature(model)
    logits, presence, labels = collect_logits(probe, batches, per_pattern=True)
    layer = (calibrated or probe).get_layer("temperature")
    temperatures = None if calibrated is None else np.asarray(temperatures_of(calibrated))
    scaled = None
    if temperatures is not None:
        scaled = logits / temperatures[np.asarray(layer.pattern_indices(presence))][:, None]
    count = len(labels) // (1 + len(feature_names))
    patterns = {}
    for index, pattern in enumerate([ALL_INPUTS] + [f"{name}_absent" for name in feature_names]):
        rows = slice(index * count, (index + 1) * count)
        patterns[pattern] = {
            "before": calibration_metrics(_softmax(logits[rows]), labels[rows]),
            "after": None if scaled is None else calibration_metrics(_softmax(scaled[rows]), labels[rows]),
        }
    return {"temperatures": None if temperatures is None else temperatures.tolist(), "patterns": patterns}


def attribution_shares(scores: dict, labels: np.ndarray, feature_names: Sequence[str],
                       class_names: Sequence[str]) -> tuple[dict, np.ndarray, np.ndarray]:
    """Each modality's share of the attribution, overall and per true class.

    An example's share of modality i is |score_i| / sum_j |score_j|;
    examples whose scores are all zero are left out.

    Args:
      scores: feature name -> (n,) attribution scores (from `explain`).
      labels: (n,) true class ids.
      feature_names: the features, in order.
      class_names: class names in id order.

    Returns:
      `(summary, shares, kept_labels)`: summary `{"overall": {feature: share},
      "per_class": {class: {feature: share} or None}, "num_examples"}`, the
      (k, M) per-example shares and their labels.
    """
    magnitudes = np.abs(np.stack([np.asarray(scores[name], np.float64) for name in feature_names], axis=1))
    totals = magnitudes.sum(axis=1)
    kept = totals > 0
    shares = magnitudes[kept] / totals[kept, None]
    kept_labels = np.asarray(labels)[kept]

    def mean(rows):
        return dict(zip(feature_names, shares[rows].mean(axis=0).tolist())) if rows.any() else None

    summary = {
        "overall": mean(np.ones(len(shares), bool)),
        "per_class": {name: mean(kept_labels == k) for k, name in enumerate(class_names)},
        "num_examples": int(kept.sum()),
    }
    return summary, shares, kept_labels


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=1, keepdims=True)
