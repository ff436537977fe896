"""`train` on a train+test-only spec: a carved validation split, recorded, reused on resume and by `evaluate`."""
from __future__ import annotations

import json

import keras
import pytest

from mmkeras.data.manifest import read_manifest
from mmkeras.data.validation import ValidationSplit
from mmkeras.runs.load import load_run_spec
from mmkeras.training.class_weights import balanced_class_weights, split_labels
from mmkeras.training.config import TrainingConfig
from mmkeras.training.loop import train
from mmkeras.training.run_dir import RunPaths


class StopAfterFirstEpoch(keras.callbacks.Callback):
    """Fail at the end of epoch 1, after the run's backup: an interrupted run."""

    def on_epoch_end(self, epoch, logs=None):
        raise RuntimeError("interrupted")


@pytest.mark.slow
def test_a_carved_validation_split_is_recorded_and_a_resumed_run_reuses_it(tiny_train_test_spec, tmp_path,
                                                                          tiny_model, capsys):
    paths = RunPaths(tmp_path / "run")
    options = {"epochs": 2, "batch_size": 8, "output_dir": paths.run_dir, "verbose": 2, "backup_every_seconds": 0,
               **tiny_model()}  # a backup at every epoch end
    with pytest.raises(RuntimeError, match="interrupted"):
        train(tiny_train_test_spec, seed=0, callbacks=[StopAfterFirstEpoch()], **options)
    assert "held out 6 of the 60 train examples" in capsys.readouterr().out
    carve = ValidationSplit.load(paths.validation_split)
    assert paths.can_resume() and len(carve.validation_rows) == 6

    # Resumed with another seed (which would carve other rows): the recorded rows are kept.
    result = train(tiny_train_test_spec, seed=5, **options)
    assert result.initial_epoch == 1 and ValidationSplit.load(paths.validation_split) == carve
    assert len(result.history["val_loss"]) == 2
    summary = json.loads(paths.summary.read_text())
    assert summary["monitor"] == "val_loss" and summary["validation_split"]["carved"] == 6

    # `evaluate_run` and the other run-folder adapters see the same split.
    spec = load_run_spec(paths.run_dir)
    assert [row.number for row in read_manifest(spec, "validation").rows] == list(carve.validation_rows)
    assert [row.number for row in read_manifest(spec, "train").rows] == list(carve.train_rows)
    # Square-root class weights by default, counted on the rows left for training.
    expected = balanced_class_weights(split_labels(spec, "train"), spec.num_classes, power=0.5)
    assert summary["class_weight"] == pytest.approx({str(k): v for k, v in expected.items()})



def test_validation_fraction_is_a_share_below_one():
    assert TrainingConfig().validation_fraction == 0.1 and TrainingConfig(validation_fraction=0).validation_fraction == 0
    for bad in (1, -0.1, "0.1"):
        with pytest.raises(ValueError, match="TrainingConfig.validation_fraction must be"):
            TrainingConfig(validation_fraction=bad)


def test_the_cli_takes_a_validation_fraction():
    from mmkeras.cli import _parser

    assert _parser().parse_args(["train", "tiny", "--validation-fraction", "0"]).validation_fraction == 0.0
    assert _parser().parse_args(["train", "tiny"]).validation_fraction is None  # the config's default
