"""Calibration metrics (ECE, NLL, Brier) and attribution shares, on hand-computed examples."""
from __future__ import annotations

import numpy as np
import pytest

from mmkeras.evaluation.calibration import attribution_shares, calibration_metrics


def test_metrics_match_hand_computed_values():
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    labels = np.array([0, 1, 1, 0])
    metrics = calibration_metrics(probabilities, labels)
    # Confidences 0.9, 0.6, 0.8, 0.7 fall in four bins; correct: yes, no, yes, yes.
    assert metrics["ece"] == pytest.approx((0.1 + 0.6 + 0.2 + 0.3) / 4)
    assert metrics["nll"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.8, 0.7])))
    assert metrics["brier"] == pytest.approx(np.mean([2 * 0.1**2, 2 * 0.6**2, 2 * 0.2**2, 2 * 0.3**2]))
    assert metrics["accuracy"] == 0.75 and sum(metrics["bins"]["count"]) == 4
    assert metrics["bins"]["accuracy"][13] == 1.0 and metrics["bins"]["confidence"][0] is None  # 0.9 in bin 13


def test_a_calibrated_predictor_has_near_zero_ece():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 20000)
    labels = (rng.uniform(size=20000) > confidence).astype(int)  # class 0 right with probability `confidence`
    metrics = calibration_metrics(np.stack([confidence, 1 - confidence], axis=1), labels)
    assert metrics["ece"] < 0.02
    over_confident = calibration_metrics(np.stack([np.full(20000, 0.99), np.full(20000, 0.01)], axis=1), labels)
    assert over_confident["ece"] > 0.2


def test_attribution_shares_average_per_class_and_skip_all_zero_rows():
    scores = {"a": np.array([0.3, -0.1, 0.0, 0.2]), "b": np.array([0.1, 0.3, 0.0, 0.2])}
    summary, shares, labels = attribution_shares(scores, np.array([0, 1, 1, 0]), ["a", "b"], ["x", "y", "z"])
    assert summary["num_examples"] == 3 and labels.tolist() == [0, 1, 0]
    assert summary["per_class"]["x"] == pytest.approx({"a": 0.625, "b": 0.375})
    assert summary["per_class"]["y"] == pytest.approx({"a": 0.25, "b": 0.75})
    assert summary["per_class"]["z"] is None
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
