"""`train` on tiny: every artefact of the run folder, resumption checks and option errors."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from mmkeras.data.pipeline import make_dataset
from mmkeras.models.calibration import temperatures_of
from mmkeras.runs.load import load_run, load_run_spec
from mmkeras.training.callbacks import ResumableEarlyStopping
from mmkeras.training.config import ModelConfig, TrainingConfig, load_run_config
from mmkeras.training.loop import _restored_best, train
from mmkeras.training.run_dir import RunPaths

# The tiny model (tests/conftest.py) with fixed images: these tests compare runs.
NO_AUGMENT = {"image": {"augment": False}}

@pytest.mark.slow
def test_train_writes_every_artefact_of_the_run(tiny_spec, tmp_path, tiny_model):
    run_dir = tmp_path / "run"
    result = train(
        tiny_spec, fusion="attention", epochs=1, batch_size=8, output_dir=run_dir, seed=0, verbose=0,
        class_weight="balanced", loss="focal", **tiny_model(branch_options=NO_AUGMENT),
    )
    paths = RunPaths(run_dir)
    assert result.run_dir == run_dir and result.final_model_path == paths.final_model
    for path in (paths.config, paths.best_model, paths.final_model, paths.history_csv, paths.history_json,
                 paths.summary):
        assert path.is_file() and path.stat().st_size > 0, path
    assert any(paths.tensorboard.rglob("events.out.tfevents.*"))
    assert not paths.backup.exists()  # removed once the run finished

    config = load_run_config(paths.config)
    assert config.spec == "tiny" and config.features == ("caption", "picture", "sound")
    assert config.model == ModelConfig(fusion="attention", **tiny_model(branch_options=NO_AUGMENT))
    assert (config.training.epochs, config.training.loss, config.training.class_weight) == (1, "focal", "balanced")

    assert result.history["epoch"] == [0]
    for key in ("loss", "accuracy", "macro_f1", "val_loss", "val_accuracy", "val_macro_f1"):
        assert len(result.history[key]) == 1 and np.isfinite(result.history[key][0]), key
    assert json.loads(paths.history_json.read_text()) == result.history
    summary = json.loads(paths.summary.read_text())
    assert summary["epochs_completed"] == 1 and summary["monitor"] == "val_loss" and summary["initial_epoch"] == 0
    assert set(summary["class_weight"]) == {"0", "1", "2"} and summary["learning_rate"] == (
        TrainingConfig().learning_rate
    )
    assert result.runtime["strategy_name"] == "default" and result.runtime["num_replicas"] == 1

    # The saved classifier keeps every output (the attention weights too) and predicts like the trained one.
    features, _ = next(iter(make_dataset(tiny_spec, "test", batch_size=4)))
    restored, spec = load_run(run_dir, checkpoint="final")
    assert spec.name == "tiny" and spec.feature_names == tiny_spec.feature_names
    # The default balance ("aux_heads") saves one auxiliary head per modality too.
    assert sorted(restored.output) == ["aux_caption", "aux_picture", "aux_sound", "modality_weights", "probabilities"]
    np.testing.assert_allclose(
        restored.predict(features, verbose=0)["probabilities"],
        result.model.predict(features, verbose=0)["probabilities"], rtol=1e-5, atol=1e-6,
    )

    # Calibrated on the validation data: the temperature is inside the saved models and recorded.
    calibration = json.loads(paths.calibration.read_text())
    assert calibration["final"]["temperatures"] == pytest.approx(temperatures_of(result.model))
    assert calibration["final"]["nll_after"] <= calibration["final"]["nll_before"]
    assert temperatures_of(restored) == pytest.approx(temperatures_of(result.model))
    # Early stopping (on by default) put the best epoch's weights back, so best.keras is the calibrated final
    # model, saved once more rather than loaded and calibrated again.
    best = load_run(run_dir)[0]
    assert calibration["best"] == calibration["final"]
    assert temperatures_of(best) == pytest.approx(temperatures_of(result.model))
    np.testing.assert_allclose(best.predict(features, verbose=0)["probabilities"],
                               restored.predict(features, verbose=0)["probabilities"], rtol=1e-6, atol=1e-7)

    # The same command on a finished run does not silently train again.
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        train(tiny_spec, fusion="attention", epochs=1, batch_size=8, output_dir=run_dir, seed=0, verbose=0,
              **tiny_model(branch_options=NO_AUGMENT))


def test_best_is_final_only_when_our_early_stopping_restores_the_best_weights(tmp_path):
    ours = ResumableEarlyStopping([], tmp_path / "best.keras", None, patience=2, restore_best_weights=True)
    assert _restored_best([ours])
    assert not _restored_best([])  # no early stopping: the final weights are the last epoch's
    assert not _restored_best([ResumableEarlyStopping([], tmp_path / "best.keras", None, patience=2)])
    assert not _restored_best([ours, keras.callbacks.EarlyStopping(patience=1, restore_best_weights=True)])


@pytest.mark.slow
def test_without_early_stopping_best_keras_is_calibrated_on_its_own(tiny_spec, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_spec.with_features(["picture"]), epochs=2, batch_size=16, output_dir=run_dir, seed=0, verbose=0,
          early_stopping_patience=None, units=8, embed_dim=8, balance="none")
    calibration = json.loads(RunPaths(run_dir).calibration.read_text())
    assert set(calibration) == {"final", "best"}
    assert temperatures_of(load_run(run_dir)[0]) == pytest.approx(calibration["best"]["temperatures"])


@pytest.mark.slow
def test_calibrate_false_leaves_the_model_uncalibrated(tiny_spec, tmp_path):
    run_dir = tmp_path / "run"
    result = train(tiny_spec.with_features(["picture"]), epochs=1, batch_size=16, output_dir=run_dir, seed=0,
                   verbose=0, calibrate=False, units=8, embed_dim=8, balance="none")
    assert temperatures_of(result.model) is None and not RunPaths(run_dir).calibration.exists()
    assert temperatures_of(load_run(run_dir, checkpoint="final")[0]) is None


def test_resuming_with_another_model_config_is_refused(tiny_spec, tmp_path):
    paths = RunPaths(tmp_path)
    paths.config.write_text("spec: tiny\nmodel: {fusion: gated, units: 8}\n")
    paths.backup.mkdir()
    (paths.backup / "latest.weights.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="unfinished run with another model config"):
        train(tiny_spec, fusion="concat", epochs=1, output_dir=tmp_path, units=8)


def test_unknown_options_are_named(tiny_spec, tmp_path):
    with pytest.raises(ValueError, match=r"Unknown training option 'learning_rat'"):
        train(tiny_spec, epochs=1, output_dir=tmp_path, learning_rat=0.1)
    with pytest.raises(ValueError, match=r"TrainingConfig.epochs must be a positive integer"):
        train(tiny_spec, epochs=0, output_dir=tmp_path)


def test_an_unknown_fusion_is_refused_before_any_data_is_read(tiny_spec, tmp_path, monkeypatch):
    def no_reading(*args, **kwargs):
        raise AssertionError("the data was read before the fusion name was checked")

    monkeypatch.setattr("mmkeras.training.loop.make_dataset", no_reading)
    with pytest.raises(ValueError, match=r"Unknown fusion 'average'\. Expected one of \['attention'"):
        train(tiny_spec, fusion="average", epochs=1, output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("failing", ["validation data", "build"])
def test_a_failing_set_up_waits_for_the_background_decoding(tiny_spec, tmp_path, monkeypatch, failing):
    waited, calls = [], []
    real = make_dataset

    def recorded(spec, split, *args, **kwargs):
        calls.append(split)
        if failing == "validation data" and split == "validation":
            raise RuntimeError("unreadable validation data")
        outputs = real(spec, split, *args, **kwargs)
        decoding = outputs[-1]
        if decoding is not None:
            wait = decoding.wait
            decoding.wait = lambda: waited.append(wait())
        return outputs

    def broken(*args, **kwargs):
        raise RuntimeError("no model today")

    monkeypatch.setattr("mmkeras.training.loop.make_dataset", recorded)
    monkeypatch.setattr("mmkeras.training.loop.build_and_compile", broken)
    with pytest.raises(RuntimeError, match="unreadable validation data" if failing != "build" else "no model today"):
        train(tiny_spec, epochs=1, output_dir=tmp_path / "run")
    assert calls[0] == "train" and len(waited) == (1 if failing != "build" else len(calls)), (calls, waited)


def test_load_run_spec_keeps_the_features_the_model_read(tiny_spec, tmp_path):
    RunPaths(tmp_path).config.write_text("spec: tiny\nfeatures: [picture, sound]\n")
    assert load_run_spec(tmp_path).feature_names == ("picture", "sound")
    with pytest.raises(FileNotFoundError, match="holds no trained model yet"):
        load_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a training run folder"):
        load_run_spec(tmp_path / "elsewhere")
