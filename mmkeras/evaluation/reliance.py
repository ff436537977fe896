"""Modality reliance: how much the model's score depends on each modality."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from mmkeras.models.classifier import AUX_PREFIX, MODALITY_WEIGHTS, PROBABILITIES
from mmkeras.spec import DatasetSpec

FULL = "full"


def conditions(spec: DatasetSpec) -> list[tuple[str, str | None, str | None]]:
    """The evaluation conditions: all inputs, then each modality absent and shuffled.

    Returns:
      A list of (condition name, feature name or None, "absent" | "shuffled" | None).
    """
    rows = [(FULL, None, None)]
    for feature in spec.features:
        rows.append((f"{feature.name}_absent", feature.name, "absent"))
        rows.append((f"{feature.name}_shuffled", feature.name, "shuffled"))
    return rows


def perturb(features: dict, feature_name: str | None, how: str | None, rng: np.random.Generator) -> dict:
    """Return a copy of a batch with one modality marked absent or shuffled across the batch.

    "absent" sets the feature's `<name>_present` flag to False (the model then
    uses its learned stand-in); "shuffled" permutes the feature and its flag
    across the examples of the batch, keeping the data real but unrelated to
    the label. A large drop under either means the model relies on that modality.

    Args:
      features: a batch dict as `make_dataset` yields (NumPy arrays).
      feature_name: the modality to perturb; None leaves the batch as is.
      how: "absent" or "shuffled".
      rng: random generator for the permutation.

    Returns:
      The perturbed batch dict (the input is not modified).
    """
    if feature_name is None:
        return features
    features = dict(features)
    flag = f"{feature_name}_present"
    if how == "absent":
        features[flag] = np.zeros_like(features[flag])
    else:
        order = rng.permutation(len(features[feature_name]))
        features[feature_name] = features[feature_name][order]
        features[flag] = features[flag][order]
    return features


def collect_predictions(model, spec: DatasetSpec, batches: Iterable, *, seed: int = 0) -> dict:
    """Run the model on every batch under every condition of `conditions(spec)`.

    Args:
      model: a classifier from `build_classifier`.
      spec: its dataset spec.
      batches: an iterable of (features, labels) NumPy batches.
      seed: seed for the shuffles.

    Returns:
      `{"labels": (n,), "predictions": {condition: (n,) class ids},
      "probabilities": (n, C) under all inputs, "modality_weights": (n, M) or None}`.
    """
    rng = np.random.default_rng(seed)
    plan = conditions(spec)
    labels, probabilities, weights = [], [], []
    predictions = {name: [] for name, _, _ in plan}
    for features, batch_labels in batches:
        labels.append(np.asarray(batch_labels))
        for name, feature_name, how in plan:
            outputs = model.predict_on_batch(perturb(features, feature_name, how, rng))
            predictions[name].append(np.argmax(outputs[PROBABILITIES], axis=-1))
            if name == FULL:
                probabilities.append(outputs[PROBABILITIES])
                if MODALITY_WEIGHTS in outputs:
                    weights.append(outputs[MODALITY_WEIGHTS])
    if not labels:
        raise ValueError(f"Split of spec {spec.name!r} has no examples to evaluate.")
    return {
        "labels": np.concatenate(labels),
        "predictions": {name: np.concatenate(values) for name, values in predictions.items()},
        "probabilities": np.concatenate(probabilities),
        "modality_weights": np.concatenate(weights) if weights else None,
    }


def absence_warnings(reliance: Mapping[str, Mapping[str, float]], full_accuracy: float) -> list[str]:
    """Say which modalities the model scores better without: their absence raised the accuracy.

    A modality whose absence helps has been learned in a way that does not
    generalise (a branch that memorised the training examples, e.g. their
    names), and fusion let it override the others. Retrain with more modality
    dropout, a validation split to stop on, or without that input.

    Args:
      reliance: `{feature: {"absent": accuracy with it marked absent, ...}}`
        as in `evaluate`'s report.
      full_accuracy: the accuracy with every input.

    Returns:
      One message per such modality, largest gain first (empty when none).

    Example:
      >>> absence_warnings({"text": {"absent": 0.35}, "image": {"absent": 0.2}}, 0.285)
      ['Accuracy is higher with text marked absent (0.3500) than with every input (0.2850): ...']
    """
    gains = sorted(((scores["absent"] - full_accuracy, name) for name, scores in reliance.items()), reverse=True)
    return [
        f"Accuracy is higher with {name} marked absent ({full_accuracy + gain:.4f}) than with every input "
        f"({full_accuracy:.4f}): the model does worse for using {name}, which it has probably learned in a way that "
        f"does not generalise. Retrain with a validation split, stronger modality dropout, or without {name}."
        for gain, name in gains if gain > 0
    ]


def generalisation_gaps(model, spec: DatasetSpec, batches: Mapping[str, Iterable]) -> dict:
    """Per-modality generalisation: each auxiliary head's loss on the train and validation splits, and the gap.

    A branch that memorises its training examples (a unique name per example)
    has a small training loss and a large validation loss; one that
    generalises has a small gap. This is the overfitting measure of gradient
    blending (Wang et al., 2020), taken after training from the classifier's
    `aux_<feature>` heads (`build_classifier(aux_heads=True)`, the default
    `balance`). Examples where a modality is absent do not count for it.

    Args:
      model: a classifier with auxiliary heads.
      spec: its dataset spec.
      batches: `{"train": iterable, "validation": iterable}` of (features, labels) NumPy batches.

    Returns:
      `{feature: {"train_loss", "validation_loss", "gap"}}` (mean crossentropy),
      plus `"fused"` for the main output.

    Raises:
      ValueError: if the model has no auxiliary heads, or `batches` lacks a split.

    Example:
      >>> gaps = generalisation_gaps(model, spec, {"train": train_batches, "validation": validation_batches})
      >>> gaps["text"]["gap"]
      1.7
    """
    heads = {feature.name: AUX_PREFIX + feature.name for feature in spec.features}
    if not all(head in model.output for head in heads.values()):
        raise ValueError("generalisation_gaps needs a classifier built with aux_heads=True (balance='aux_heads').")
    heads["fused"] = PROBABILITIES
    losses = {}
    for split in ("train", "validation"):
        if split not in batches:
            raise ValueError(f"generalisation_gaps needs {split!r} batches, got {sorted(batches)}.")
        totals = {name: [0.0, 0] for name in heads}
        for features, labels in batches[split]:
            outputs = model.predict_on_batch(features)
            labels = np.asarray(labels)
            for name, head in heads.items():
                present = np.asarray(features[f"{name}_present"], bool) if name != "fused" else np.ones(len(labels), bool)
                chosen = np.asarray(outputs[head])[np.arange(len(labels)), labels]
                totals[name][0] += float(-np.log(np.clip(chosen[present], 1e-7, 1.0)).sum())
                totals[name][1] += int(present.sum())
        losses[split] = {name: total / max(count, 1) for name, (total, count) in totals.items()}
    return {
        name: {"train_loss": losses["train"][name], "validation_loss": losses["validation"][name],
               "gap": losses["validation"][name] - losses["train"][name]}
        for name in heads
    }
