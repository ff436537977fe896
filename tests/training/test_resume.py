"""Fault tolerance: a run SIGKILLed mid-epoch resumes with the same command and the same epoch count."""
from __future__ import annotations

import csv
import json

import pytest

from mmkeras.training.run_dir import RunPaths


@pytest.mark.slow
def test_a_killed_run_resumes_and_ends_with_the_same_number_of_epochs(workers, tmp_path):
    paths = RunPaths(tmp_path / "run")
    # 60 examples in batches of 8: 7 steps per epoch, a backup every 3 steps and at
    # each epoch end; the first run kills itself at step 5 of epoch 2 (0-based 1:4).
    command = [str(paths.run_dir), "--epochs", "3", "--no-validation", "--backup-every-steps", "3",
               "--kill-at", "1:4", "--kill-marker", str(tmp_path / "killed")]

    code, output, result = workers.run(command)
    assert code == -9 and "KILLING 1 4" in output and result is None, output[-3000:]
    metadata = json.loads((paths.backup / "training_metadata.json").read_text())
    assert metadata["epoch"] == 1 and metadata["batch"] > 0  # backed up mid-epoch 2
    assert _logged_epochs(paths) == ["0"]

    code, output, result = workers.run(command)  # the very same command
    assert code == 0, output[-3000:]
    assert "Resuming the run" in output and result["initial_epoch"] == 1
    assert result["epochs"] == [0, 1, 2]
    assert _logged_epochs(paths) == ["0", "1", "2"]  # not restarted from epoch 0, no epoch twice
    assert paths.final_model.is_file() and not paths.backup.exists()


def _logged_epochs(paths: RunPaths) -> list[str]:
    with open(paths.history_csv, newline="") as stream:
        return [row["epoch"] for row in csv.DictReader(stream)]
