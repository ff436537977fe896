"""`mmkeras.tune` on `tiny`: a 2-trial search killed in its second trial, resumed by `mmkeras tune`, then `train --config best_config.yaml`."""
from __future__ import annotations

import csv
import dataclasses
import importlib
import re
import sys

import keras
import numpy as np
import pytest
import yaml

import mmkeras
from mmkeras.cli import main
from mmkeras.spec import DEFAULT_SPECS_DIR
from mmkeras.training.config import load_run_config

# Two fusions and a learning-rate range on the tiny classifier without aux heads: small 1-epoch trials.
SPACE = {"include_defaults": False, "fusion": ["concat", "late"], "learning_rate": {"min": 1e-3, "max": 1e-2,
                                                                                    "sampling": "log"},
         "balance": "none"}


class _KilledInSecondTrial(keras.callbacks.Callback):
    """Stops the process's search the way Ctrl-C or a kill would: as the second trial starts to fit.

    Its model is built and its run folder written by then; killing it later, before the
    epoch's backup, leaves the same folder behind and only costs the test more time.
    """

    def __init__(self):
        super().__init__()
        self.trials_started = 0

    def on_train_begin(self, logs=None):
        self.trials_started += 1
        if self.trials_started == 2:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_search_resumes_after_a_kill_and_its_best_config_trains(tiny_spec, tiny_model, tmp_path, capsys):
    # One run config for the library and the CLI: the tiny classifier, and the space in its search: section.
    run_config = tmp_path / "run.yaml"
    run_config.write_text(yaml.safe_dump({"model": tiny_model(), "training": {"batch_size": 32}, "search": SPACE},
                                         sort_keys=False))
    output = tmp_path / "search"
    options = {"search_space": run_config, "algorithm": "random", "max_trials": 2, "epochs": 1, "output_dir": output}
    with pytest.raises(KeyboardInterrupt):
        mmkeras.tune(tiny_spec, callbacks=[_KilledInSecondTrial()], **options)
    assert (output / "trials" / "trial-1" / "config.yaml").is_file()  # the second trial had started
    first_model = output / "trials" / "trial-0" / "final.keras"
    finished_at = first_model.stat().st_mtime_ns
    assert "trial 1/2 [0]: val_accuracy" in capsys.readouterr().out  # the progress line
    with open(output / "trials.csv", newline="") as stream:
        assert [row["trial"] for row in csv.DictReader(stream)] == ["0"]  # written after each trial

    # The same search from the command line: only the killed trial runs.
    assert main(["tune", "tiny", "--config", str(run_config), "--algorithm", "random", "--max-trials", "2",
                 "--epochs", "1", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "trial 2/2 [1]: val_accuracy" in printed and "trial 1/2" not in printed and "best config:" in printed
    assert first_model.stat().st_mtime_ns == finished_at
    result = mmkeras.tune(tiny_spec, **options)  # a finished search: nothing left to run
    assert result.trials_run == 0
    with open(result.trials_csv_path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["trial"] for row in rows] == ["0", "1"]
    assert list(rows[0]) == ["trial", "status", "fusion", "learning_rate", "balance", "val_accuracy", "epochs",
                             "seconds", "run_dir"]
    for row in rows:
        assert row["status"] == "COMPLETED" and row["fusion"] in ("concat", "late") and row["epochs"] == "1"
        assert 1e-3 <= float(row["learning_rate"]) <= 1e-2
        assert 0.0 <= float(row["val_accuracy"]) <= 1.0 and float(row["seconds"]) > 0
    best_row = next(row for row in rows if row["trial"] == result.best_trial)
    assert float(best_row["val_accuracy"]) == max(float(row["val_accuracy"]) for row in rows)
    assert result.best_value == pytest.approx(float(best_row["val_accuracy"]))
    assert result.plot_path.read_bytes()[:4] == b"\x89PNG"

    best = load_run_config(result.best_config_path)
    assert best.model.fusion == best_row["fusion"]
    assert best.training.learning_rate == pytest.approx(float(best_row["learning_rate"]))
    assert best.training.epochs == 1 and best.training.balance == "none" and best.model.units == tiny_model()["units"]
    run = tmp_path / "retrained"
    assert main(["train", "tiny", "--config", str(result.best_config_path), "--output", str(run)]) == 0
    retrained = load_run_config(run / "config.yaml")
    assert retrained.model == best.model and retrained.training == best.training


class _StartingWeights(keras.callbacks.Callback):
    """Records each trial's trainable weights as its training starts."""

    def __init__(self):
        super().__init__()
        self.trials = []

    def on_train_begin(self, logs=None):
        self.trials.append([variable.numpy() for variable in self.model.trainable_weights])


@pytest.mark.slow
def test_hyperband_goes_on_from_the_weights_of_the_trial_it_promotes(tiny_spec, tiny_model, tmp_path):
    # max_epochs 3, factor 3: three 1-epoch trials, then the best of them promoted for 2 more epochs.
    starts = _StartingWeights()
    result = mmkeras.tune(tiny_spec, search_space={**SPACE, "fusion": ["concat"]}, algorithm="hyperband",
                          max_trials=4, epochs=3, output_dir=tmp_path / "search", callbacks=[starts],
                          **{key: value for key, value in tiny_model().items()})
    with open(result.trials_csv_path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["status"] for row in rows] == ["COMPLETED"] * 4 and rows[3]["epochs"] == "2"
    finals = [mmkeras.load_classifier(tmp_path / "search" / "trials" / f"trial-{row['trial']}" / "final.keras")
              for row in rows[:3]]
    promoted = starts.trials[3]
    # (Compared in order: layer names, and so variable paths, differ from model to model in one process.)
    parents = [final for final in finals if len(final.trainable_weights) == len(promoted) and all(
        np.array_equal(start, variable.numpy()) for start, variable in zip(promoted, final.trainable_weights))]
    assert len(parents) == 1, "the promoted trial did not start from one of the shorter trials' weights"


def test_search_needs_a_validation_split(tiny_spec, tmp_path):
    no_validation = dataclasses.replace(
        tiny_spec, splits={name: split for name, split in tiny_spec.splits.items() if name != "validation"})
    with pytest.raises(ValueError, match=r"Spec 'tiny' .*has no 'validation' split and validation_fraction is 0.*"
                                         r"add a split under `splits:`"):
        mmkeras.tune(no_validation, algorithm="random", max_trials=1, epochs=1, output_dir=tmp_path / "search",
                     validation_fraction=0)
    assert not (tmp_path / "search").exists()  # nothing started


def test_cli_tune_errors_are_one_line(tmp_path, capsys):
    spec_path = tmp_path / "no_validation.yaml"
    spec_path.write_text((DEFAULT_SPECS_DIR / "tiny.yaml").read_text().replace(
        "  validation: {manifest: manifest.csv, select: validation}\n", ""))
    no_carving = tmp_path / "no_carving.yaml"
    no_carving.write_text("training: {validation_fraction: 0}\n")
    assert main(["tune", str(spec_path), "--config", str(no_carving), "--output", str(tmp_path / "a")]) == 2
    assert "mmkeras tune: error: Spec 'tiny'" in capsys.readouterr().err
    config = tmp_path / "run.yaml"
    config.write_text("training: {batch_size: 16}\nsearch:\n  fusion: [concat, average]\n")
    assert main(["tune", "tiny", "--config", str(config), "--output", str(tmp_path / "b")]) == 2
    assert "Unknown fusion 'average'" in capsys.readouterr().err


def test_missing_kerastuner_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "keras_tuner", None)  # what an environment without it imports
    for module in ("mmkeras.tuning._kerastuner", "mmkeras.tuning.space", "mmkeras.tuning.search"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=re.escape('pip install "mmkeras[tune]"')):
        importlib.import_module("mmkeras.tuning._kerastuner")
    assert main(["tune", "tiny"]) == 2
    assert 'mmkeras tune: error: mmkeras.tune and `mmkeras tune` search with KerasTuner, which is not installed: ' \
           'pip install "mmkeras[tune]"' in capsys.readouterr().err


def test_a_folder_holding_another_search_is_not_mixed_in(tiny_spec, tmp_path):
    output = tmp_path / "search"
    output.mkdir()
    (output / "search.json").write_text('{"spec": "tiny", "algorithm": "bayesian"}')
    with pytest.raises(ValueError, match="holds a search with other settings"):
        mmkeras.tune(tiny_spec, search_space=SPACE, algorithm="random", max_trials=1, epochs=1, output_dir=output)
