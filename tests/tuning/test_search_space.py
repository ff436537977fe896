"""Search spaces: defaults per spec, user entries from a dict or a run config's `search:` section, clear errors."""
from __future__ import annotations

import dataclasses

import pytest

from mmkeras.spec import load_spec
from mmkeras.training.config import load_run_config
from mmkeras.tuning.report import influence
from mmkeras.tuning.space import (
    DEFAULT_SEARCH_SPACE,
    load_search_space,
    make_search_space,
)


@pytest.fixture(scope="module")
def spec():
    return load_spec("tiny")  # the spec only: no data is read


def test_default_space_covers_the_options_and_the_spec_branches(spec):
    space = make_search_space(spec)
    assert list(space.entries) == list(DEFAULT_SEARCH_SPACE)
    for name in ("fusion", "units", "embed_dim", "dropout_rate", "modality_dropout", "balance", "learning_rate",
                 "weight_decay", "image.stages", "audio.encoder", "text.rare_token_dropout"):
        assert name in space.entries
    # A spec without images or audio gets no entries for their branches.
    text_only = spec.with_features(["caption"])
    assert [name for name in make_search_space(text_only).entries if "." in name] == ["text.rare_token_dropout"]


def test_user_entries_narrow_fix_drop_and_extend(spec):
    space = make_search_space(spec, {
        "fusion": ["late", "gated"], "modality_dropout": 0.2, "weight_decay": None, "label_smoothing": [0.0, 0.1],
        "image.stages": [[8], [8, 16]],
    })
    assert space.entries["fusion"] == ("late", "gated")
    assert "weight_decay" not in space.entries and "label_smoothing" in space.entries
    hyperparameters = space.hyperparameters()
    assert hyperparameters.get("modality_dropout") == 0.2  # fixed
    assert hyperparameters.get("image.stages") == "[8]"  # lists travel as JSON text
    options = space.training_options({"fusion": "gated", "image.stages": "[8, 16]", "tuner/epochs": 3},
                                     {"image": {"convs_per_stage": 1}})
    assert options == {"fusion": "gated", "branch_options": {"image": {"convs_per_stage": 1, "stages": [8, 16]}}}
    only = make_search_space(spec, {"include_defaults": False, "units": {"min": 8, "max": 32, "step": 8}})
    assert list(only.entries) == ["units"]
    assert type(only.hyperparameters().space[0]).__name__ == "Int"


@pytest.mark.parametrize(("entry", "message"), [
    ({"colour": ["red"]}, "Unknown search space entry 'colour'"),
    ({"fusion": ["concat", "average"]}, "Unknown fusion 'average'"),
    ({"dropout_rate": {"min": 0.1, "max": 1.5}}, "dropout_rate"),
    ({"learning_rate": {"min": 0.0, "max": 0.1, "sampling": "log"}}, "log range needs min > 0"),
    ({"units": []}, "a choice needs distinct values"),
    ({"video.frames": [8]}, "'video' is no feature or modality"),
    ({"image.colours": [3]}, "the image branch has no argument 'colours'"),
])
def test_bad_entries_name_what_is_wrong(spec, entry, message):
    with pytest.raises(ValueError, match=message):
        make_search_space(spec, entry)


def test_run_config_search_section(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("training: {batch_size: 16}\nsearch:\n  fusion: [concat, late]\n  units: null\n")
    assert load_search_space(path) == {"fusion": ["concat", "late"], "units": None}
    assert load_run_config(path).training.batch_size == 16  # `train --config` reads the same file
    path.write_text("search: [concat]\n")
    with pytest.raises(ValueError, match="'search' section must map"):
        load_search_space(path)


def test_influence_ranks_the_hyperparameter_that_decides():
    rows = [{"trial": str(i), "fusion": fusion, "units": units, "val_accuracy": score}
            for i, (fusion, units, score) in enumerate([("late", 8, 0.9), ("late", 16, 0.91), ("concat", 8, 0.5),
                                                         ("concat", 16, 0.52), ("late", 8, None)])]
    scores = influence(rows, ["fusion", "units"], "val_accuracy", categorical=["fusion", "units"])
    assert list(scores) == ["fusion", "units"]
    assert scores["fusion"] > 0.99 and scores["units"] < 0.01
    assert influence(rows[:2], ["fusion"], "val_accuracy", categorical=["fusion"]) == {}  # too few trials


def test_space_is_frozen(spec):
    space = make_search_space(spec)
    with pytest.raises((TypeError, dataclasses.FrozenInstanceError)):
        space.entries["units"] = (8,)
