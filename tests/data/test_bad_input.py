"""The bad-input policy: every kind of bad example, under `on_error: raise` and `on_error: skip`."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from data_helpers import RATE, small_spec, write_manifest, write_png, write_wav

from mmkeras.data import scan
from mmkeras.data.pipeline import make_dataset
from mmkeras.data.scan import BadInputError, scan_split
from mmkeras.data.tfrecords import write_tfrecords


def make_bad(case: str, data_dir, row: dict) -> tuple[dict, str, str]:
    """Turn a good row into a bad one; return (row, the file at fault or "", the expected reason kind)."""
    row = dict(row, caption=f"bad: {case}")
    if case == "corrupt png":
        path = data_dir / "bad" / "corrupt.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG header, then nothing valid
        return dict(row, picture="bad/corrupt.png"), str(path), "corrupt image"
    if case == "truncated wav":
        path = data_dir / "bad" / "truncated.wav"
        write_wav(path)
        path.write_bytes(path.read_bytes()[:30])
        return dict(row, sound="bad/truncated.wav"), str(path), "corrupt audio"
    if case == "garbage wav":
        path = data_dir / "bad" / "garbage.wav"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"this is not a recording at all" * 3)
        return dict(row, sound="bad/garbage.wav"), str(path), "corrupt audio"
    if case == "wrong rate":
        path = data_dir / "bad" / "rate.wav"
        write_wav(path, np.zeros(800), rate=2 * RATE)
        return dict(row, sound="bad/rate.wav"), str(path), "wrong sample rate"
    if case == "missing file":
        return dict(row, picture="img/nowhere.png"), str(data_dir / "img/nowhere.png"), "missing file"
    if case == "unreadable file":
        # Tests run as root, where chmod 000 still reads; a directory cannot be read as a file.
        (data_dir / "bad" / "folder.wav").mkdir(parents=True, exist_ok=True)
        return dict(row, sound="bad/folder.wav"), str(data_dir / "bad" / "folder.wav"), "unreadable file"
    if case == "empty label":
        return dict(row, label=""), "", "empty label"
    if case == "unknown class":
        return dict(row, label="purple"), "", "unknown class"
    raise AssertionError(case)


CASES = ["corrupt png", "truncated wav", "garbage wav", "wrong rate", "missing file", "unreadable file",
         "empty label", "unknown class"]


@pytest.mark.parametrize("case", CASES)
def test_raise_names_manifest_row_file_and_reason(tmp_path, good_rows, case):
    bad, file, kind = make_bad(case, tmp_path, good_rows[1])
    manifest = write_manifest(tmp_path / "manifest.csv", [good_rows[0], bad])
    with pytest.raises(BadInputError) as error:
        make_dataset(small_spec(tmp_path, on_error="raise"), "train")
    message = str(error.value)
    assert f"{manifest} row 2" in message
    assert kind in message and file in message
    assert "on_error: skip" in message  # the way out is named


def test_raise_names_jsonl_lines(tmp_path, good_rows):
    bad, file, _ = make_bad("missing file", tmp_path, good_rows[2])
    manifest = write_manifest(tmp_path / "m.jsonl", [good_rows[0], good_rows[1], bad])
    with pytest.raises(BadInputError, match=f"{manifest} line 3: file {file}: missing file"):
        make_dataset(small_spec(tmp_path, "m.jsonl"), "train")


def test_skip_drops_every_bad_example_and_counts_them_by_reason(tmp_path, good_rows, caplog):
    bad_rows = [make_bad(case, tmp_path, good_rows[0]) for case in CASES]
    rows = [good_rows[0], *(row for row, _, _ in bad_rows), good_rows[1], good_rows[2]]
    write_manifest(tmp_path / "manifest.csv", rows)
    spec = small_spec(tmp_path, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="mmkeras"):
        dataset, report = make_dataset(spec, "train", batch_size=16, return_report=True)
    assert report.skipped == {
        "empty label": 1, "unknown class": 1, "missing file": 1, "unreadable file": 1,
        "corrupt image": 1, "corrupt audio": 2, "wrong sample rate": 1,
    }
    assert (report.total, report.kept) == (11, 3)
    assert [bad.row for bad in report.bad] == list(range(2, 10))
    assert [bad.kind for bad in report.bad] == [kind for _, _, kind in bad_rows]
    assert [bad.file for bad in report.bad] == [file for _, file, _ in bad_rows]
    features, labels = next(iter(dataset))
    assert labels.numpy().tolist() == [0, 1, 0]
    assert not any(caption.startswith(b"bad") for caption in features["caption"].numpy())
    logged = "\n".join(record.getMessage() for record in caplog.records if record.name == "mmkeras")
    assert "kept 3 of 11" in logged and "corrupt audio: 2" in logged and "missing file: 1" in logged
    assert scan_split(spec, "train") == report  # the public scan agrees


def test_write_tfrecords_applies_the_policy(tmp_path, good_rows):
    bad, _, _ = make_bad("corrupt png", tmp_path, good_rows[1])
    write_manifest(tmp_path / "manifest.csv", [good_rows[0], bad, good_rows[2]])
    with pytest.raises(BadInputError, match="corrupt image"):
        write_tfrecords(small_spec(tmp_path, on_error="raise"), "train", tmp_path / "records", num_shards=2)
    assert not list((tmp_path / "records").glob("*.tfrecord"))
    spec = small_spec(tmp_path, on_error="skip")
    write_tfrecords(spec, "train", tmp_path / "records", num_shards=2)
    from mmkeras.spec import SplitSpec

    spec = spec.replace(splits={"shards": SplitSpec("shards", tfrecords="records/train-*.tfrecord")})
    _, labels = next(iter(make_dataset(spec, "shards", batch_size=8)))
    assert labels.numpy().tolist() == [0, 0]


def test_scan_runs_once_until_a_file_changes(tmp_path, good_rows, monkeypatch):
    bad, _, _ = make_bad("corrupt png", tmp_path, good_rows[1])
    write_manifest(tmp_path / "manifest.csv", [good_rows[0], bad])
    spec = small_spec(tmp_path, on_error="skip")
    assert scan_split(spec, "train").skipped == {"corrupt image": 1}

    def no_decoding(*args):
        raise AssertionError("the cached scan should have been used")

    with monkeypatch.context() as patch:
        patch.setattr(scan, "_decoding_keys", no_decoding)
        assert scan_split(spec, "train").skipped == {"corrupt image": 1}
    write_png(tmp_path / "bad" / "corrupt.png", size=5)  # fixed: new size and mtime
    report = scan_split(spec, "train")
    assert (report.kept, report.skipped) == (2, {})


def test_skip_with_nothing_left_fails(tmp_path, good_rows):
    bad, _, _ = make_bad("unknown class", tmp_path, good_rows[0])
    write_manifest(tmp_path / "manifest.csv", [bad])
    with pytest.raises(ValueError, match="Every example"):
        make_dataset(small_spec(tmp_path, on_error="skip"), "train")
