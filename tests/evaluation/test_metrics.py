import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from mmkeras.evaluation.metrics import classification_report, confusion_matrix


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    predictions = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 4, 200))
    predictions[predictions == 3] = 2  # class 3 is never predicted: precision 0, not NaN
    matrix = confusion_matrix(labels, predictions, 4)
    report = classification_report(matrix, ["a", "b", "c", "d"])
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=range(4), zero_division=0)
    assert report["accuracy"] == accuracy_score(labels, predictions)
    np.testing.assert_allclose(report["macro_f1"], f1_score(labels, predictions, average="macro", zero_division=0))
    for i, name in enumerate("abcd"):
        assert report["per_class"][name]["support"] == support[i]
        np.testing.assert_allclose(
            [report["per_class"][name][k] for k in ("precision", "recall", "f1")], [precision[i], recall[i], f1[i]]
        )


def test_confusion_matrix_rows_are_true_classes():
    assert confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2).tolist() == [[1, 0], [1, 1]]
