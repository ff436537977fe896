"""Macro-F1 on integer labels, tracked during training.

`keras.metrics.F1Score` wants one-hot targets and creates its variables on
first use, which a distribution strategy does not allow inside the training
step. `SparseMacroF1Score` takes class ids and creates its counts up front.
"""
from __future__ import annotations

import keras
from keras import ops

from mmkeras.checks import check_int_at_least


@keras.saving.register_keras_serializable(package="mmkeras")
class SparseMacroF1Score(keras.metrics.Metric):
    """Macro-averaged F1 between integer labels and predicted probabilities.

    The predicted class is the argmax of `y_pred`. Per class
    `F1 = 2 TP / (2 TP + FP + FN)` (0 for a class never seen nor predicted),
    averaged with equal weight per class, so rare classes count as much as
    common ones: the score to watch on imbalanced data.

    Args:
      num_classes: number of classes.
      name: the metric's name (its key in the training logs).
      dtype: the dtype of the counts.

    Call arguments:
      y_true: integer class ids, shape (batch,) or (batch, 1).
      y_pred: class scores, shape (batch, num_classes).
      sample_weight: optional per-example weights (weighted counts).

    Returns:
      The macro F1, a scalar in [0, 1].

    Raises:
      ValueError: if `num_classes` is not an integer >= 2.

    Example:
      >>> metric = SparseMacroF1Score(num_classes=2)
      >>> metric.update_state([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
      >>> float(metric.result())   # class 0: 2/3, class 1: 2/3
      0.666...
    """

    def __init__(self, num_classes: int, name: str = "macro_f1", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = num_classes = check_int_at_least(num_classes, "num_classes", 2)
        self.true_positives = self.add_variable((num_classes,), initializer="zeros", name="true_positives")
        self.false_positives = self.add_variable((num_classes,), initializer="zeros", name="false_positives")
        self.false_negatives = self.add_variable((num_classes,), initializer="zeros", name="false_negatives")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        truth = ops.one_hot(labels, self.num_classes, dtype=self.dtype)
        predicted = ops.one_hot(ops.argmax(y_pred, axis=-1), self.num_classes, dtype=self.dtype)
        hits = truth * predicted
        if sample_weight is not None:
            weight = ops.reshape(ops.cast(sample_weight, self.dtype), (-1, 1))
            truth, predicted, hits = truth * weight, predicted * weight, hits * weight
        self.true_positives.assign_add(ops.sum(hits, axis=0))
        self.false_positives.assign_add(ops.sum(predicted - hits, axis=0))
        self.false_negatives.assign_add(ops.sum(truth - hits, axis=0))

    def result(self):
        denominator = 2.0 * self.true_positives + self.false_positives + self.false_negatives
        scores = ops.divide_no_nan(2.0 * self.true_positives, denominator)
        return ops.mean(scores)

    def reset_state(self):
        for variable in (self.true_positives, self.false_positives, self.false_negatives):
            variable.assign(ops.zeros_like(variable))

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes)
        return config
