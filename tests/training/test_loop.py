"""`train` on tiny: every artefact of the run folder, resumption checks and option errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mmkeras.data.pipeline import make_dataset
from mmkeras.models.calibration import temperatures_of
from mmkeras.runs.load import load_run, load_run_spec
from mmkeras.training.config import ModelConfig, TrainingConfig, load_run_config
from mmkeras.training.loop import train
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
    assert temperatures_of(load_run(run_dir)[0]) is not None  # best.keras too

    # The same command on a finished run does not silently train again.
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        train(tiny_spec, fusion="attention", epochs=1, batch_size=8, output_dir=run_dir, seed=0, verbose=0,
              **tiny_model(branch_options=NO_AUGMENT))


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


def test_load_run_spec_keeps_the_features_the_model_read(tiny_spec, tmp_path):
    RunPaths(tmp_path).config.write_text("spec: tiny\nfeatures: [picture, sound]\n")
    assert load_run_spec(tmp_path).feature_names == ("picture", "sound")
    with pytest.raises(FileNotFoundError, match="holds no trained model yet"):
        load_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a training run folder"):
        load_run_spec(tmp_path / "elsewhere")
