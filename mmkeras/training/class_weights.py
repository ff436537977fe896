"""Class weights for imbalanced data, counted on the training split."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from mmkeras.data.pipeline import read_split
from mmkeras.data.scan import check_split
from mmkeras.spec import DatasetSpec


def balanced_class_weights(labels: Iterable[int], num_classes: int, *, power: float = 1.0) -> dict[int, float]:
    """Weight each class inversely to its frequency ("balanced", as in scikit-learn).

    `weight[c] = n_examples / (num_classes * n_examples_of_c)`, so every class
    contributes the same total weight to the loss and the mean weight per
    example is 1. With `power` p < 1 each weight is raised to p and the
    weights are rescaled so that the mean weight per example stays 1: p = 0.5
    (`class_weight="sqrt"`) weights a class 4 times rarer twice as much, not 4
    times. A class with no examples gets weight 1.0 (it never occurs, so its
    weight does not matter, but it stays finite).

    Args:
      labels: the training labels, class ids in `[0, num_classes)`.
      num_classes: number of classes.
      power: the exponent p in (0, 1]; 1 is scikit-learn's "balanced".

    Returns:
      `{class_id: weight}` for every class, the form Keras' `fit(class_weight=...)` takes.

    Raises:
      ValueError: if there are no labels, or a label is outside `[0, num_classes)`.

    Example:
      >>> balanced_class_weights([0, 0, 0, 1], num_classes=2)
      {0: 0.666..., 1: 2.0}
    """
    labels = np.asarray(list(labels), dtype=np.int64)
    if labels.size == 0:
        raise ValueError("Cannot balance class weights without labels: the training split is empty.")
    if labels.min() < 0 or labels.max() >= num_classes:
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise ValueError(f"Label {int(bad)} is outside the {num_classes} classes [0, {num_classes - 1}].")
    if not 0.0 < power <= 1.0:
        raise ValueError(f"The class-weight power must be in (0, 1]; got {power!r}.")
    counts = np.bincount(labels, minlength=num_classes)
    seen = counts > 0
    weights = np.ones(num_classes)
    weights[seen] = (labels.size / (num_classes * counts[seen])) ** power
    weights[seen] *= labels.size / np.sum(counts * weights)  # mean weight per example: 1
    return {class_id: float(weight) for class_id, weight in enumerate(weights)}


def split_labels(spec: DatasetSpec, split: str = "train") -> np.ndarray:
    """Return the class ids of a split's examples (those the pipeline keeps).

    A manifest split is read from its checked rows without touching any file;
    a TFRecord split is read record by record, without decoding.

    Args:
      spec: the dataset spec.
      split: the split's name.

    Returns:
      An int64 array of class ids, in the split's order.

    Example:
      >>> np.bincount(split_labels(load_spec("tiny")), minlength=3)
      array([19, 23, 18])
    """
    checked = check_split(spec, split)
    if checked.rows is not None:
        return np.asarray([row.label for row in checked.rows], dtype=np.int64)
    labels = read_split(spec, split).map(lambda raw, label: label)
    return np.fromiter(labels.as_numpy_iterator(), dtype=np.int64)
