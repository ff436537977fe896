"""Classification metrics from labels and predictions (NumPy, no extra dependencies)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Count (true class, predicted class) pairs.

    Args:
      labels: (n,) true class ids.
      predictions: (n,) predicted class ids.
      num_classes: number of classes.

    Returns:
      A (num_classes, num_classes) int array; rows are true classes.

    Example:
      >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2).tolist()
      [[1, 0], [1, 1]]
    """
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, int), np.asarray(predictions, int)), 1)
    return matrix


def classification_report(matrix: np.ndarray, class_names: Sequence[str]) -> dict:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support from a confusion matrix.

    A class never predicted has precision 0; a class absent from the labels is
    left out of the macro average (as scikit-learn does with `labels` present).

    Args:
      matrix: a confusion matrix from `confusion_matrix`.
      class_names: the class names, in class-id order.

    Returns:
      `{"accuracy", "macro_f1", "per_class": {name: {"precision", "recall", "f1", "support"}}}`.

    Example:
      >>> classification_report(np.array([[1, 0], [1, 1]]), ["a", "b"])["accuracy"]
      0.6666666666666666
    """
    true_positives = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    precision = np.divide(true_positives, predicted, out=np.zeros_like(true_positives), where=predicted > 0)
    recall = np.divide(true_positives, support, out=np.zeros_like(true_positives), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    seen = support > 0
    return {
        "accuracy": float(true_positives.sum() / max(matrix.sum(), 1)),
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
    }
