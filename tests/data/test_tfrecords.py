"""TFRecord shards: round trip against the manifest pipeline, sharding, bad records."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from data_helpers import small_spec, write_manifest

from mmkeras.data.manifest import ManifestRow, read_manifest
from mmkeras.data.pipeline import make_dataset, text_corpus
from mmkeras.data.scan import BadInputError, scan_split
from mmkeras.data.tfrecords import raw_example, write_tfrecords
from mmkeras.spec import SplitSpec


def with_split(spec, name, pattern):
    return spec.replace(splits={**spec.splits, name: SplitSpec(name, tfrecords=pattern)})


def elements(dataset):
    return [(features, label) for features, label in dataset.unbatch().as_numpy_iterator()]


def test_round_trip_equals_the_manifest_pipeline_element_by_element(tiny_spec, tmp_path):
    paths = write_tfrecords(tiny_spec, "train", tmp_path / "records", num_shards=3)
    assert [p.name for p in paths] == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    spec = with_split(tiny_spec, "train_records", str(tmp_path / "records" / "train-*.tfrecord"))
    from_records = make_dataset(spec, "train_records", batch_size=8)
    from_manifest = make_dataset(spec, "train", batch_size=8)
    pairs = list(zip(elements(from_records), elements(from_manifest), strict=True))
    assert len(pairs) == 60
    for (features, label), (expected, expected_label) in pairs:
        assert label == expected_label
        for key, value in expected.items():
            np.testing.assert_array_equal(features[key], value, err_msg=key)
    assert text_corpus(spec, "caption", "train_records") == text_corpus(spec, "caption", "train")
    policy = from_records.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.FILE


def test_workers_get_whole_shards(tiny_spec, tmp_path):
    from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

    write_tfrecords(tiny_spec, "test", tmp_path, num_shards=2)
    spec = with_split(tiny_spec, "records", str(tmp_path / "test-*.tfrecord"))
    labels = [row.label for row in read_manifest(tiny_spec, "test").rows]
    for worker in range(2):
        dataset = _AutoShardDataset(make_dataset(spec, "records", batch_size=4), 2, worker)
        got = [int(label) for _, label in elements(dataset)]
        assert got == labels[worker::2]  # rows are dealt round-robin, so shard w holds rows w, w+2, ...


def test_rewriting_replaces_the_old_shards(tiny_spec, tmp_path):
    write_tfrecords(tiny_spec, "validation", tmp_path, num_shards=4)
    paths = write_tfrecords(tiny_spec, "validation", tmp_path, num_shards=2)
    assert sorted(tmp_path.glob("validation-*.tfrecord")) == paths
    spec = with_split(tiny_spec, "records", str(tmp_path / "validation-*.tfrecord"))
    assert scan_split(spec, "records").kept == 15
    with pytest.raises(ValueError, match="num_shards"):
        write_tfrecords(tiny_spec, "validation", tmp_path, num_shards=0)
    with pytest.raises(ValueError, match="already reads TFRecords"):
        write_tfrecords(spec, "records", tmp_path)


def test_bad_records_in_shards_follow_the_policy(tmp_path, good_rows):
    """Shards written elsewhere may still hold a bad record; the scan finds it by shard and record."""
    write_manifest(tmp_path / "manifest.csv", good_rows)
    spec = small_spec(tmp_path, on_error="skip")
    rows = read_manifest(spec, "train").rows
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    broken = ManifestRow(number=2, values=dict(rows[1].values, picture=str(tmp_path / "bad.png")), label=1)
    shard = tmp_path / "records-00000.tfrecord"
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for row in (rows[0], broken, rows[2]):
            writer.write(raw_example(spec, row).SerializeToString())
    spec = with_split(spec, "records", "records-*.tfrecord")
    dataset, report = make_dataset(spec, "records", batch_size=4, return_report=True)
    assert report.skipped == {"corrupt image": 1}
    assert (report.bad[0].file, report.bad[0].row) == (str(shard), 2)
    assert [int(label) for _, label in elements(dataset)] == [0, 0]
    with pytest.raises(BadInputError, match=f"{shard} record 2: corrupt image"):
        make_dataset(spec.replace(on_error="raise"), "records")


def test_records_whose_class_id_the_spec_lacks_follow_the_policy(tmp_path, good_rows):
    write_manifest(tmp_path / "manifest.csv", good_rows)
    spec = small_spec(tmp_path, on_error="skip")
    rows = read_manifest(spec, "train").rows
    shard = tmp_path / "records-00000.tfrecord"
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for row in (rows[0], ManifestRow(number=2, values=rows[1].values, label=spec.num_classes), rows[2]):
            writer.write(raw_example(spec, row).SerializeToString())
    spec = with_split(spec, "records", "records-*.tfrecord")
    dataset, report = make_dataset(spec, "records", batch_size=4, return_report=True)
    assert report.skipped == {"unknown class": 1}
    assert (report.bad[0].file, report.bad[0].row) == (str(shard), 2)
    assert len(elements(dataset)) == 2
    with pytest.raises(BadInputError, match=f"{shard} record 2: unknown class: class id {spec.num_classes}"):
        make_dataset(spec.replace(on_error="raise"), "records")
