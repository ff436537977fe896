"""Run configs: defaults, validation, YAML round trip and helpful errors."""
from __future__ import annotations

import dataclasses

import pytest

from mmkeras.training.config import (
    ModelConfig,
    RunConfig,
    RuntimeConfig,
    TrainingConfig,
    load_run_config,
    save_run_config,
    split_overrides,
)


def test_run_config_survives_a_yaml_round_trip(tmp_path):
    config = RunConfig(
        model=ModelConfig(fusion="gated", units=16, modality_dropout={"text": 0.5, "image": 0.3},
                          fusion_options={"activation": "tanh"},
                          branch_options={"image": {"stages": [8, 16]}}),
        training=TrainingConfig(epochs=3, class_weight="balanced", loss="focal", focal_gamma=1.5, seed=7,
                                early_stopping_patience=None),
        runtime=RuntimeConfig(strategy="mirrored", mixed_precision=False, backup_every_steps=10, verbose=0),
        spec="tiny",
        features=("picture", "sound"),
    )
    path = save_run_config(config, tmp_path / "config.yaml")
    assert load_run_config(path) == config
    assert load_run_config(config.to_dict()) == config


def test_missing_sections_and_fields_take_defaults():
    config = load_run_config({"training": {"epochs": 2}})
    assert config.training.epochs == 2
    assert config.training.optimizer == "adamw" and config.training.weight_decay > 0
    assert config.model == ModelConfig() and config.runtime == RuntimeConfig()
    assert config.spec is None and config.features is None


def test_unknown_section_names_it_and_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown key 'trainig'.*'spec', 'features', 'model', 'training', 'runtime'"):
        load_run_config({"trainig": {"epochs": 2}})


def test_unknown_field_names_it_and_the_allowed_ones(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("runtime:\n  strategy: auto\n  precision: mixed\n")
    with pytest.raises(ValueError, match=r"run.yaml: runtime: unknown RuntimeConfig field 'precision'.*'mixed_precision'"):
        load_run_config(path)


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("training", {"epochs": 0}, r"TrainingConfig.epochs must be a positive integer, got 0"),
        ("training", {"class_weight": "auto"}, r"class_weight must be one of \[None, 'balanced', 'sqrt'\]"),
        ("training", {"loss": "hinge"}, r"loss must be one of \['crossentropy', 'focal'\]"),
        ("training", {"label_smoothing": 1.0}, r"label_smoothing must be a number in \[0, 1\)"),
        ("runtime", {"strategy": "tpu"}, r"strategy must be one of \['auto', 'default', 'mirrored', 'multi_worker'\]"),
        ("runtime", {"mixed_precision": "yes"}, r"mixed_precision must be true or false"),
        ("model", {"dropout_rate": 1.5}, r"ModelConfig.dropout_rate must be a number in \[0, 1\)"),
        ("model", {"branch_options": {"image": 3}}, r"branch_options\['image'\] must be a mapping"),
        ("model", {"modality_dropout": {"text": 1.0}}, r"ModelConfig.modality_dropout\['text'\] must be a number in \[0, 1\)"),
        ("model", {"modality_dropout": {}}, r"ModelConfig.modality_dropout must be a number in \[0, 1\) or a mapping"),
        ("model", {"modality_dropout": {3: 0.5}}, r"modality_dropout's keys must be modality or feature names, got 3"),
    ],
)
def test_bad_values_are_rejected_with_the_field_name(section, values, message):
    with pytest.raises(ValueError, match=message):
        load_run_config({section: values})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(FileNotFoundError, match="No run config file"):
        load_run_config(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("training: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_run_config(tmp_path / "bad.yaml")


def test_overrides_go_to_the_config_that_owns_the_field():
    sections = split_overrides({"units": 8, "learning_rate": 1e-4, "mixed_precision": True})
    assert sections == {"model": {"units": 8}, "training": {"learning_rate": 1e-4}, "runtime": {"mixed_precision": True}}
    with pytest.raises(ValueError, match=r"Unknown training option 'learning_rat'.*'learning_rate'"):
        split_overrides({"learning_rat": 1e-4})


def test_model_config_defaults_are_the_classifier_defaults():
    import inspect

    from mmkeras.models.classifier import build_classifier

    parameters = inspect.signature(build_classifier).parameters
    for field in dataclasses.fields(ModelConfig):
        default = parameters[field.name].default
        assert getattr(ModelConfig(), field.name) == ({} if default is None else default), field.name
