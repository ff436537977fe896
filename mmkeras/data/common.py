"""What the data modules share: the raw-record readers and the TFRecord layout.

A raw record is `(raw, label)`: `raw` maps each feature name to a scalar
string (the inline text, or the file's encoded bytes) and `"<name>_present"`
to a scalar bool; `label` is the int32 class id. Both sources (manifest rows
and TFRecord shards) produce exactly this, so one decoder serves both. With
`with_keys=True` each record is preceded by a string key naming where it came
from (the manifest row number, or `shard#record`), which the bad-input scan
uses to find failing examples.
"""
from __future__ import annotations

import glob
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import tensorflow as tf

from mmkeras.spec import DatasetSpec

LOGGER = logging.getLogger("mmkeras")
# TFRecord keys besides the features' `<name>` and `<name>_present`.
LABEL_KEY = "mmkeras/label"
ROW_KEY = "mmkeras/row"
# Shards read at once by the interleave: enough to keep reads parallel,
# few enough to bound the read buffers.
MAX_OPEN_SHARDS = 16


def file_features(spec: DatasetSpec) -> list:
    """The features whose manifest cells are file paths (images and audio)."""
    return [f for f in spec.features if f.modality != "text"]


def read_manifest_rows(
    spec: DatasetSpec,
    rows: Sequence,
    *,
    shuffle: bool = False,
    seed: int | None = None,
    deterministic: bool = True,
    with_keys: bool = False,
) -> tf.data.Dataset:
    """Raw records of manifest rows, file bytes read with `tf.io.read_file` in parallel.

    Args:
      spec: the dataset spec.
      rows: `ManifestRow`s (already checked: labels valid, files present).
      shuffle: shuffle the row order (again each epoch) before reading; the
        elements are paths, so a full shuffle is cheap.
      seed: the shuffle seed.
      deterministic: keep the row order through the parallel reads.
      with_keys: prepend each record's key (its row number as a string).

    Returns:
      A dataset of `(raw, label)` (or `(key, raw, label)`) elements.
    """
    columns = {f.name: tf.constant([r.values[f.name] for r in rows], tf.string) for f in spec.features}
    columns.update(
        {f.presence_key: tf.constant([r.present(f.name) for r in rows], tf.bool) for f in spec.features}
    )
    keys = tf.constant([str(r.number) for r in rows], tf.string)
    labels = tf.constant([r.label for r in rows], tf.int32)
    dataset = tf.data.Dataset.from_tensor_slices((keys, columns, labels))
    if shuffle:
        dataset = dataset.shuffle(max(len(rows), 1), seed=seed, reshuffle_each_iteration=True)
    paths = file_features(spec)

    @tf.autograph.experimental.do_not_convert  # graph-safe: no autograph (see mmkeras.data.decoders)
    def read_files(key, raw, label):
        raw = dict(raw)
        for feature in paths:
            path = raw[feature.name]
            raw[feature.name] = tf.cond(
                raw[feature.presence_key], lambda path=path: tf.io.read_file(path), lambda: tf.constant("")
            )
        return (key, raw, label) if with_keys else (raw, label)

    return dataset.map(read_files, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


def tfrecord_files(spec: DatasetSpec, split: str) -> list[str]:
    """The sorted, resolved shard files matched by a TFRecord split's glob (relative to `spec.data_dir`).

    The pipeline and the bad-input scan read a TFRecord split through this
    list, so both see the same shards in the same order.

    Args:
      spec: the dataset spec.
      split: the name of a split that reads TFRecords.

    Returns:
      The absolute shard paths, sorted.

    Raises:
      ValueError: if the spec has no such split, or the split reads a manifest.
      FileNotFoundError: if the glob matches no file.

    Example:
      >>> tfrecord_files(spec, "train")[0]
      '/data/tiny/tfrecords/train-00000-of-00002.tfrecord'
    """
    split_spec = spec.split(split)
    if split_spec.tfrecords is None:
        raise ValueError(f"Split {split!r} of spec {spec.name!r} reads a manifest, not TFRecords.")
    pattern = str(Path(spec.data_dir) / split_spec.tfrecords)
    files = sorted(str(Path(f).resolve()) for f in glob.glob(pattern))
    if not files:
        raise FileNotFoundError(
            f"Split {split!r} of spec {spec.name!r}: no TFRecord file matches {pattern!r}. "
            "Write them with `mmkeras.write_tfrecords` or fix the `tfrecords:` glob."
        )
    return files


def tfrecord_features(spec: DatasetSpec) -> dict[str, tf.io.FixedLenFeature]:
    """The `tf.io.parse_single_example` description of the raw records `write_tfrecords` writes.

    A missing feature parses as "" with presence 0 (missing); the label has no
    default, so a record without one fails to parse.

    Args:
      spec: the dataset spec.

    Returns:
      `LABEL_KEY` -> int64 scalar, and for each feature its name -> string
      scalar and `"<name>_present"` -> int64 scalar.

    Example:
      >>> sorted(tfrecord_features(load_spec("tiny")))[:2]
      ['caption', 'caption_present']
    """
    description = {LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    for feature in spec.features:
        description[feature.name] = tf.io.FixedLenFeature([], tf.string, default_value="")
        description[feature.presence_key] = tf.io.FixedLenFeature([], tf.int64, default_value=0)
    return description


def parse_raw_record(spec: DatasetSpec, serialized: tf.Tensor) -> tuple[dict, tf.Tensor]:
    """Parse one serialized `tf.train.Example` into a raw record `(raw, label)`.

    Makes a TFRecord shard's records look exactly like the manifest's, so one
    decoder (`make_example_decoder`) reads both.

    Args:
      spec: the dataset spec.
      serialized: a scalar string tensor, one record of a shard.

    Returns:
      `(raw, label)`: `raw` maps each feature name to its scalar string and
      `"<name>_present"` to a scalar bool; `label` is the int32 class id.

    Raises:
      tf.errors.InvalidArgumentError: if the record is not a `tf.train.Example`
        or has no label.

    Example:
      >>> raw, label = parse_raw_record(spec, raw_example(spec, row).SerializeToString())
      >>> raw["caption_present"].numpy()
      True
    """
    parsed = tf.io.parse_single_example(serialized, tfrecord_features(spec))
    raw = {}
    for feature in spec.features:
        raw[feature.name] = parsed[feature.name]
        raw[feature.presence_key] = tf.not_equal(parsed[feature.presence_key], 0)
    return raw, tf.cast(parsed[LABEL_KEY], tf.int32)


def read_tfrecord_files(
    spec: DatasetSpec,
    files: Sequence[str],
    *,
    shuffle: bool = False,
    seed: int | None = None,
    deterministic: bool = True,
    with_keys: bool = False,
    skip_keys: Iterable[str] = (),
) -> tf.data.Dataset:
    """Raw records of TFRecord shards, read with a parallel interleave.

    `write_tfrecords` deals rows round-robin over the shards, so reading them
    unshuffled and deterministically restores the manifest's order (for up to
    `MAX_OPEN_SHARDS` shards).

    Args:
      spec: the dataset spec.
      files: the shard files, in order.
      shuffle: shuffle the shard order (again each epoch).
      seed: the shuffle seed.
      deterministic: keep the interleave order.
      with_keys: prepend each record's key (`"<shard>#<record index>"`).
      skip_keys: keys of records to drop (the scan's bad examples).

    Returns:
      A dataset of `(raw, label)` (or `(key, raw, label)`) elements.
    """
    skip_keys = sorted(skip_keys)
    file_dataset = tf.data.Dataset.from_tensor_slices(tf.constant(list(files), tf.string))
    if shuffle:
        file_dataset = file_dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    keyed = with_keys or bool(skip_keys)

    def open_shard(path):
        records = tf.data.TFRecordDataset(path)
        if not keyed:
            return records
        return records.enumerate().map(
            lambda index, record: (tf.strings.join([path, "#", tf.strings.as_string(index)]), record)
        )

    dataset = file_dataset.interleave(
        open_shard,
        cycle_length=min(len(files), MAX_OPEN_SHARDS),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    if skip_keys:
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(skip_keys), tf.ones([len(skip_keys)], tf.int32)),
            default_value=0,
        )
        dataset = dataset.filter(lambda key, record: tf.equal(table.lookup(key), 0))

    @tf.autograph.experimental.do_not_convert  # graph-safe: no autograph (see mmkeras.data.decoders)
    def parse(*element):
        raw, label = parse_raw_record(spec, element[-1])
        return (element[0], raw, label) if with_keys else (raw, label)

    return dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
