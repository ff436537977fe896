"""The alignment losses under a 2-replica MirroredStrategy equal their single-replica values."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("replica_worker.py")
GATHERED_CASES = ("contrastive_pairs", "contrastive_labels_learned_temperature", "triplet_pairs", "triplet_labels")


@pytest.fixture(scope="module")
def replica_result(tmp_path_factory):
    # Logical CPU devices must be set before TensorFlow starts: a fresh process.
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(
        [sys.executable, str(WORKER)], check=False, capture_output=True, text=True, timeout=300, env=environment,
        cwd=Path(__file__).resolve().parents[2],
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and lines, completed.stdout[-2000:] + completed.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
@pytest.mark.parametrize("case", GATHERED_CASES)
def test_loss_and_gradients_under_two_replicas_equal_the_single_replica_values(replica_result, case):
    assert replica_result["num_replicas"] == 2
    values = replica_result["cases"][case]
    assert values["single"] > 0
    assert values["distributed"] == pytest.approx(values["single"], rel=1e-5, abs=1e-6)
    # Each replica holds part of the loss, not a copy of it.
    assert all(0 < part < values["single"] for part in values["per_replica"])
    assert values["gradient_scale"] > 1e-3
    assert values["gradient_difference"] < 1e-5


@pytest.mark.slow
def test_without_the_gather_each_replica_sees_fewer_negatives_and_the_loss_differs(replica_result):
    values = replica_result["cases"]["contrastive_without_gather"]
    # Fewer negatives make the task easier: a smaller loss than on the global batch.
    assert values["distributed"] < values["single"] - 0.05


@pytest.mark.slow
def test_keras_evaluate_under_two_replicas_matches_one_device_and_fit_runs(replica_result):
    keras_result = replica_result["keras"]
    assert keras_result["evaluate_distributed"] == pytest.approx(keras_result["evaluate_single"], rel=1e-5)
    assert 0 < keras_result["fit_loss"] < 10
