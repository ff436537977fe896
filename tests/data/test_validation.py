"""Carving a validation split out of the train split: stratified, group-disjoint, reproducible, recorded."""
from __future__ import annotations

import collections

import pytest

from mmkeras.data.manifest import read_manifest
from mmkeras.data.validation import ValidationSplit, carve_validation, with_validation_split


def _labels(spec, split):
    return collections.Counter(row.label for row in read_manifest(spec, split).rows)


def test_carve_is_stratified_reproducible_and_partitions_the_train_rows(tiny_train_test_spec):
    spec = tiny_train_test_spec
    train_rows = {row.number for row in read_manifest(spec, "train").rows}
    carve = carve_validation(spec, 0.2, seed=3)
    assert set(carve.train_rows) | set(carve.validation_rows) == train_rows
    assert not set(carve.train_rows) & set(carve.validation_rows)
    carved = carve.apply(spec)
    full, held_out = _labels(spec, "train"), _labels(carved, "validation")
    assert {label: round(0.2 * count) for label, count in full.items()} == dict(held_out)
    assert {row.number for row in read_manifest(carved, "train").rows} == set(carve.train_rows)
    assert carve_validation(spec, 0.2, seed=3) == carve
    assert carve_validation(spec, 0.2, seed=4).validation_rows != carve.validation_rows


def test_a_group_column_makes_the_validation_split_group_disjoint(tiny_train_test_spec):
    spec = tiny_train_test_spec.replace(group="speaker")
    carve = carve_validation(spec, 0.25, seed=0)
    assert carve.group == "speaker"
    carved = carve.apply(spec)
    train_groups = {row.group for row in read_manifest(carved, "train").rows}
    held_out_groups = {row.group for row in read_manifest(carved, "validation").rows}
    assert held_out_groups and train_groups and not train_groups & held_out_groups
    assert 0.1 <= len(carve.validation_rows) / 60 <= 0.4
    # 3 groups of a third each: a group-disjoint 10% is impossible, so the carve is stratified.
    by_label = carve_validation(spec, 0.1, seed=0, group="label")
    assert by_label.group is None and by_label == carve_validation(spec.replace(group=None), 0.1, seed=0)
    with pytest.raises(ValueError, match="no column 'room'.*spec's `group:`"):
        carve_validation(tiny_train_test_spec.replace(group="room"), 0.1)


def test_with_validation_split_records_reuses_and_respects_the_spec_and_fraction_zero(tiny_spec,
                                                                                      tiny_train_test_spec, tmp_path):
    record = tmp_path / "validation_split.json"
    carved, carve = with_validation_split(tiny_train_test_spec, 0.1, seed=0, record=record)
    assert sorted(carved.splits) == ["test", "train", "validation"] and record.is_file()
    assert ValidationSplit.load(record) == carve
    again, reused = with_validation_split(tiny_train_test_spec, 0.3, seed=9, record=record)  # the record wins
    assert reused == carve and again.splits == carved.splits
    assert with_validation_split(tiny_train_test_spec, 0.0) == (tiny_train_test_spec, None)
    assert with_validation_split(tiny_spec, 0.1, record=tmp_path / "other.json") == (tiny_spec, None)
    assert not (tmp_path / "other.json").exists()
    with pytest.raises(ValueError, match="carved from .* but spec 'tiny' trains on"):
        carve.apply(tiny_spec.replace(splits={"train": tiny_spec.splits["test"]}))
    with pytest.raises(ValueError, match="validation_fraction"):
        carve_validation(tiny_train_test_spec, 1.0)


def test_a_spec_names_its_group_column_and_the_bundled_specs_have_one(tiny_train_test_spec):
    import yaml

    from mmkeras.spec import load_spec, spec_from_dict

    assert (load_spec("avmnist").group, load_spec("tuxpaint").group) == ("speaker", "text")
    raw = yaml.safe_load(tiny_train_test_spec.path.read_text())
    assert spec_from_dict({**raw, "group": "speaker"}).group == "speaker"
    with pytest.raises(ValueError, match="'group': 'label' is the label column"):
        spec_from_dict({**raw, "group": "label"})
