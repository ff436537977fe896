"""Focal loss and macro-F1 against hand-computed values."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.metrics import f1_score

from mmkeras.training.config import TrainingConfig
from mmkeras.training.losses import SparseCategoricalFocalCrossentropy, make_loss
from mmkeras.training.metrics import SparseMacroF1Score

LABELS = np.array([0, 2])
PROBABILITIES = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype="float32")


def test_focal_loss_matches_the_formula():
    # -(1 - p_true) ** gamma * log(p_true), averaged over the batch.
    expected = np.mean([-(0.3**2) * np.log(0.7), -(0.4**2) * np.log(0.6)])
    loss = SparseCategoricalFocalCrossentropy(gamma=2.0)
    np.testing.assert_allclose(float(loss(LABELS, PROBABILITIES)), expected, rtol=1e-5)


def test_focal_loss_with_gamma_zero_is_crossentropy():
    focal = SparseCategoricalFocalCrossentropy(gamma=0.0)(LABELS, PROBABILITIES)
    crossentropy = keras.losses.SparseCategoricalCrossentropy()(LABELS, PROBABILITIES)
    np.testing.assert_allclose(float(focal), float(crossentropy), rtol=1e-6)


def test_label_smoothing_spreads_the_target():
    smoothing = 0.3
    targets = np.eye(3)[LABELS] * (1 - smoothing) + smoothing / 3
    expected = np.mean(-(targets * np.log(PROBABILITIES)).sum(axis=1))
    loss = SparseCategoricalFocalCrossentropy(gamma=0.0, label_smoothing=smoothing)
    np.testing.assert_allclose(float(loss(LABELS, PROBABILITIES)), expected, rtol=1e-5)


def test_focal_loss_config_round_trip_and_validation():
    loss = SparseCategoricalFocalCrossentropy(gamma=1.5, alpha=0.5, label_smoothing=0.1)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, SparseCategoricalFocalCrossentropy)
    assert (restored.gamma, restored.alpha, restored.label_smoothing) == (1.5, 0.5, 0.1)
    with pytest.raises(ValueError, match="`gamma` must be a number >= 0"):
        SparseCategoricalFocalCrossentropy(gamma=-1)


def test_make_loss_follows_the_training_config():
    plain = make_loss(TrainingConfig(label_smoothing=0.0))
    assert isinstance(plain, keras.losses.SparseCategoricalCrossentropy)
    focal = make_loss(TrainingConfig(loss="focal", focal_gamma=3.0))
    assert isinstance(focal, SparseCategoricalFocalCrossentropy) and focal.gamma == 3.0
    smoothed = make_loss(TrainingConfig())  # smoothed crossentropy by default
    assert isinstance(smoothed, SparseCategoricalFocalCrossentropy)
    assert smoothed.gamma == 0.0 and smoothed.label_smoothing == 0.1


def test_macro_f1_matches_scikit_learn_with_and_without_weights():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=50)
    scores = rng.random((50, 4)).astype("float32")
    weights = rng.random(50).astype("float32")
    for sample_weight in (None, weights):
        metric = SparseMacroF1Score(num_classes=4)
        metric.update_state(labels[:20], scores[:20], None if sample_weight is None else sample_weight[:20])
        metric.update_state(labels[20:], scores[20:], None if sample_weight is None else sample_weight[20:])
        expected = f1_score(labels, scores.argmax(axis=1), average="macro", sample_weight=sample_weight)
        np.testing.assert_allclose(float(metric.result()), expected, rtol=1e-5)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_macro_f1_config_and_validation():
    metric = SparseMacroF1Score(num_classes=3, name="f1")
    restored = SparseMacroF1Score.from_config(metric.get_config())
    assert (restored.num_classes, restored.name) == (3, "f1")
    with pytest.raises(ValueError, match="`num_classes` must be an integer >= 2"):
        SparseMacroF1Score(num_classes=1)
