"""Balanced class weights and reading a run's history."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from mmkeras.training.class_weights import balanced_class_weights, split_labels
from mmkeras.training.run_dir import RunPaths, read_history


def test_balanced_weights_on_a_toy_label_list():
    weights = balanced_class_weights([0, 0, 0, 1, 2, 2], num_classes=3)
    assert weights == pytest.approx({0: 6 / 9, 1: 2.0, 2: 1.0})
    expected = compute_class_weight("balanced", classes=np.arange(3), y=[0, 0, 0, 1, 2, 2])
    np.testing.assert_allclose([weights[c] for c in range(3)], expected)


def test_square_root_weights_halve_the_balanced_contrast_and_keep_the_mean():
    labels = [0] * 16 + [1] * 4 + [2] * 1
    weights = balanced_class_weights(labels, num_classes=4, power=0.5)  # class 3 never occurs
    assert weights[1] / weights[0] == pytest.approx(2.0) and weights[2] / weights[0] == pytest.approx(4.0)
    assert np.mean([weights[label] for label in labels]) == pytest.approx(1.0)
    assert weights[3] == 1.0
    with pytest.raises(ValueError, match=r"power must be in \(0, 1\]"):
        balanced_class_weights(labels, num_classes=4, power=0.0)


def test_a_class_without_examples_gets_weight_one():
    assert balanced_class_weights([0, 0, 1], num_classes=3)[2] == 1.0


def test_bad_labels_are_named():
    with pytest.raises(ValueError, match=r"Label 3 is outside the 3 classes"):
        balanced_class_weights([0, 3], num_classes=3)
    with pytest.raises(ValueError, match="without labels"):
        balanced_class_weights([], num_classes=3)


def test_split_labels_reads_the_tiny_train_split(tiny_spec):
    labels = split_labels(tiny_spec, "train")
    assert labels.shape == (60,) and set(labels) <= {0, 1, 2}


def test_read_history_keeps_the_last_row_of_each_epoch(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_loss\n0,1.5,1.4\n1,1.2,1.3\n1,1.1,1.25\n2,1.0,\n")
    history = read_history(path)
    assert history["epoch"] == [0, 1, 2]
    assert history["loss"] == [1.5, 1.1, 1.0]
    assert np.isnan(history["val_loss"][2])
    assert read_history(tmp_path / "absent.csv") == {}


def test_run_paths_layout(tmp_path):
    paths = RunPaths(tmp_path)
    assert paths.final_model == tmp_path / "final.keras" and paths.config.name == "config.yaml"
    assert paths.worker("worker-1").run_dir == tmp_path / "workers" / "worker-1"
    assert not paths.can_resume()
    (paths.backup).mkdir()
    (paths.backup / "latest.weights.h5").write_bytes(b"x")
    assert paths.can_resume()
