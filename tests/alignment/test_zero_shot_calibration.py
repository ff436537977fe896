"""Generalised zero-shot: K-exemplar prototypes, the seen-class penalty and the "unknown" threshold."""
from __future__ import annotations

import numpy as np
import pytest

from mmkeras.alignment.zero_shot import (
    UNKNOWN,
    calibrate_zero_shot,
    classify_scores,
    exemplar_prototypes,
)


def test_exemplar_prototypes_average_k_exemplars_per_class_into_unit_vectors():
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 4.0]])
    labels = np.array([0, 0, 1, 1])
    every = exemplar_prototypes(embeddings, labels, 2)
    np.testing.assert_allclose(every[0], [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(every, axis=1), 1.0, rtol=1e-6)
    one = exemplar_prototypes(embeddings, labels, 2, num_exemplars=1, seed=0)
    assert any(np.allclose(one[0], row) for row in ([1.0, 0.0], [0.0, 1.0]))
    with pytest.raises(ValueError, match=r"Classes \[2\] have no exemplar"):
        exemplar_prototypes(embeddings, labels, 3)


def test_seen_classes_swallow_unseen_examples_until_calibrated():
    rng = np.random.default_rng(0)
    seen = np.array([True, True, False])
    # Seen classes score 0.35 higher across the board (more than a class's own 0.3): the bias of a space
    # trained on them.
    def scores_of(labels):
        base = 0.4 + 0.05 * rng.normal(size=(len(labels), 3))
        base[np.arange(len(labels)), labels] += 0.3
        base[:, seen] += 0.35
        return base
    validation_labels = rng.integers(0, 2, 200)  # seen classes only
    calibration = calibrate_zero_shot(scores_of(validation_labels), validation_labels, seen, max_seen_drop=0.05)
    assert calibration["calibrated_seen_accuracy"] >= calibration["seen_accuracy"] - 0.05
    assert 0.3 < calibration["calibration"] < 0.7
    test_labels = np.array([2] * 100 + [0] * 50 + [1] * 50)
    test_scores = scores_of(test_labels)
    plain = classify_scores(test_scores).predictions
    calibrated = classify_scores(test_scores, seen=seen, calibration=calibration["calibration"]).predictions
    unseen = test_labels == 2
    assert np.mean(plain[unseen] == 2) < 0.2  # swallowed by the seen classes
    assert np.mean(calibrated[unseen] == 2) > np.mean(plain[unseen] == 2) + 0.3
    assert np.mean(calibrated[~unseen] == test_labels[~unseen]) > 0.8
    # "Unknown": a threshold accepting 95% of seen validation examples.
    assert np.mean(calibrated == UNKNOWN) == 0
    flagged = classify_scores(test_scores, seen=seen, calibration=calibration["calibration"],
                              unknown_threshold=calibration["unknown_threshold"]).predictions == UNKNOWN
    assert 0 < np.mean(flagged[~unseen]) < 0.2


def test_calibration_refuses_unseen_examples_and_bad_arguments():
    scores = np.zeros((2, 3))
    with pytest.raises(ValueError, match="unseen classes"):
        calibrate_zero_shot(scores, np.array([0, 2]), [True, True, False])
    with pytest.raises(ValueError, match="flag each of the 3"):
        calibrate_zero_shot(scores, np.array([0, 1]), [True, True])
    with pytest.raises(ValueError, match="pass `seen`"):
        classify_scores(scores, calibration=0.1)
