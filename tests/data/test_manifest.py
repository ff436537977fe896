"""Manifests: CSV and JSONL, split selection, columns, paths, missing cells -> presence flags."""
from __future__ import annotations

import numpy as np
import pytest
from data_helpers import good_row, small_spec, write_manifest, write_png

from mmkeras.data.manifest import read_manifest
from mmkeras.data.pipeline import make_dataset


@pytest.mark.parametrize("name", ["manifest.csv", "manifest.jsonl"])
def test_missing_cells_give_false_presence_and_zero_tensors(tmp_path, good_rows, name):
    rows = [dict(good_rows[0]), dict(good_rows[1]), dict(good_rows[2])]
    rows[0]["caption"] = ""
    rows[1]["picture"] = None  # an empty CSV cell; a key left out of the JSON line
    rows[2]["sound"] = ""
    spec = small_spec(tmp_path, name)
    write_manifest(tmp_path / name, rows)
    features, labels = next(iter(make_dataset(spec, "train", batch_size=3)))
    assert features["caption_present"].numpy().tolist() == [False, True, True]
    assert features["picture_present"].numpy().tolist() == [True, False, True]
    assert features["sound_present"].numpy().tolist() == [True, True, False]
    assert features["caption"].numpy()[0] == b"" and features["caption"].numpy()[1] == b"a blue thing 1"
    assert not features["picture"].numpy()[1].any() and features["picture"].numpy()[0].any()
    assert not features["sound"].numpy()[2].any() and features["sound"].numpy()[0].any()
    assert labels.numpy().tolist() == [0, 1, 0]


@pytest.mark.parametrize("name", ["m.csv", "m.jsonl"])
def test_select_keeps_the_split_and_numbers_rows_as_in_the_file(tmp_path, name):
    rows = [good_row(tmp_path, i, split=split) for i, split in enumerate(["train", "test", "train"])]
    write_manifest(tmp_path / name, rows)
    manifest = read_manifest(small_spec(tmp_path, name), "train")
    assert [row.number for row in manifest.rows] == [1, 3]
    assert manifest.row_word == ("row" if name.endswith(".csv") else "line")
    assert manifest.rows[1].values["picture"] == str(tmp_path / "img/2.png")
    assert len(read_manifest(small_spec(tmp_path, name), "all").rows) == 3


def test_absolute_paths_are_kept(tmp_path, good_rows):
    elsewhere = write_png(tmp_path / "elsewhere" / "x.png")
    good_rows[0]["picture"] = elsewhere
    write_manifest(tmp_path / "data" / "manifest.csv", good_rows)
    manifest = read_manifest(small_spec(tmp_path / "data"), "train")
    assert manifest.rows[0].values["picture"] == elsewhere
    assert manifest.rows[1].values["picture"] == str(tmp_path / "data" / "img/1.png")


def test_missing_column_names_manifest_column_and_columns_found(tmp_path, good_rows):
    for row in good_rows:
        del row["sound"]
    path = write_manifest(tmp_path / "manifest.csv", good_rows)
    with pytest.raises(ValueError, match="sound") as error:
        read_manifest(small_spec(tmp_path), "train")
    assert str(path) in str(error.value) and "'caption'" in str(error.value)


def test_unknown_format_and_missing_manifest_are_explained(tmp_path):
    with pytest.raises(ValueError, match=".csv"):
        read_manifest(small_spec(tmp_path, "manifest.xlsx"), "train")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_manifest(small_spec(tmp_path, "nope.csv"), "train")


def test_jsonl_with_a_broken_line_names_the_line(tmp_path, good_rows):
    path = write_manifest(tmp_path / "m.jsonl", good_rows)
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(ValueError, match="line 4"):
        read_manifest(small_spec(tmp_path, "m.jsonl"), "train")


def test_labels_map_to_class_ids(tmp_path, good_rows):
    write_manifest(tmp_path / "manifest.csv", good_rows)
    manifest = read_manifest(small_spec(tmp_path), "train")
    assert [row.label for row in manifest.rows] == [0, 1, 0]
    assert all(row.problem is None for row in manifest.rows)
    assert np.all([row.present("caption") for row in manifest.rows])


def test_a_split_with_no_rows_is_refused(tmp_path, good_rows):
    for row in good_rows:
        row["split"] = "trian"
    write_manifest(tmp_path / "manifest.csv", good_rows)
    with pytest.raises(ValueError, match=r"no rows with 'split' == 'train' \(values found: \['trian'\]\)"):
        read_manifest(small_spec(tmp_path), "train")
