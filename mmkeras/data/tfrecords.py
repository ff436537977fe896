"""TFRecord shards: a manifest split converted to sharded files of raw values.

Shards keep the RAW values (the text, the encoded image bytes, the WAV bytes,
presence flags and the class id), never decoded tensors, so decoding stays in
one place (`mmkeras.data.decoders`) and shards stay as small as the source
files. A spec reads them through a glob:

    splits:
      train: {tfrecords: "tfrecords/train-*.tfrecord"}
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import tensorflow as tf
from tqdm import tqdm

from mmkeras.checks import check_positive_int
from mmkeras.data.common import LABEL_KEY, LOGGER, ROW_KEY, file_features
from mmkeras.data.manifest import ManifestRow
from mmkeras.data.scan import check_split, save_clean_tfrecord_scan
from mmkeras.datasets import prepare
from mmkeras.spec import DatasetSpec


def write_tfrecords(spec: DatasetSpec, split: str, out_dir: str | os.PathLike, *, num_shards: int = 4) -> list[Path]:
    """Convert a manifest split to `num_shards` TFRecord files of raw values.

    The split is checked first with the spec's `on_error` policy (so shards
    only ever hold examples that decode), then written row by row: only one
    example's files are in memory at a time. Rows are dealt round-robin over
    the shards, so reading the shards in order restores the manifest's
    order. Shards are written under temporary names and renamed when
    complete; earlier shards of the same split in `out_dir` are replaced.

    Args:
      spec: the dataset spec (generated datasets are built on first use).
      split: the manifest split to convert.
      out_dir: the folder for the shards (created if needed).
      num_shards: how many files to spread the examples over (e.g. a few per
        worker for multi-worker training, which shards by file).

    Returns:
      The shard paths, `<out_dir>/<split>-00000-of-00004.tfrecord`, ...

    Raises:
      ValueError: if `num_shards` is not a positive integer or the split
        already reads TFRecords.
      BadInputError: if the split has bad examples and `on_error` is "raise".

    Example:
      >>> write_tfrecords(spec, "train", spec.data_dir / "tfrecords", num_shards=2)
      [PosixPath('.../tfrecords/train-00000-of-00002.tfrecord'), PosixPath('.../train-00001-of-00002.tfrecord')]
    """
    num_shards = check_positive_int(num_shards, "num_shards")
    if spec.split(split).manifest is None:
        raise ValueError(
            f"Split {split!r} of spec {spec.name!r} already reads TFRecords ({spec.split(split).tfrecords}); "
            "write_tfrecords converts manifest splits."
        )
    prepare(spec)
    rows = check_split(spec, split).rows
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord" for index in range(num_shards)]
    temporary = [path.with_name(f".{path.name}.{os.getpid()}.tmp") for path in paths]
    try:
        with contextlib.ExitStack() as stack:
            writers = [stack.enter_context(tf.io.TFRecordWriter(str(path))) for path in temporary]
            for index, row in enumerate(tqdm(rows, desc=f"Writing {split} TFRecords", unit="example")):
                writers[index % num_shards].write(raw_example(spec, row).SerializeToString())
        # Replace every earlier shard set of this split, so the split's glob never mixes two.
        stale = re.compile(rf"{re.escape(split)}-\d{{5}}-of-\d{{5}}\.tfrecord")
        for old in out_dir.iterdir():
            if stale.fullmatch(old.name) and old not in paths:
                old.unlink()
        for source, target in zip(temporary, paths):
            os.replace(source, target)
    finally:
        for path in temporary:
            if path.exists():
                path.unlink()
    save_clean_tfrecord_scan(spec, [str(path.resolve()) for path in paths], total=len(rows))
    LOGGER.info("Wrote %d examples of split %r into %d shards in %s.", len(rows), split, num_shards, out_dir)
    return paths


def raw_example(spec: DatasetSpec, row: ManifestRow) -> tf.train.Example:
    """Build the `tf.train.Example` of one manifest row: raw text and file bytes, presence, label, row number.

    The record `write_tfrecords` writes per row and `parse_raw_record` reads
    back; a missing value is stored as b"" with presence 0.

    Args:
      spec: the dataset spec.
      row: a checked `ManifestRow` (its label valid and its files present).

    Returns:
      The `tf.train.Example`.

    Raises:
      OSError: if a file the row names cannot be read.

    Example:
      >>> example = raw_example(spec, read_manifest(spec, "train").rows[0])
      >>> example.features.feature["mmkeras/row"].int64_list.value
      [1]
    """
    def bytes_feature(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def int_feature(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    reads_file = {f.name for f in file_features(spec)}
    features = {LABEL_KEY: int_feature(row.label), ROW_KEY: int_feature(row.number)}
    for feature in spec.features:
        value = row.values[feature.name]
        if not value:
            data = b""
        elif feature.name in reads_file:
            data = Path(value).read_bytes()
        else:
            data = value.encode("utf-8")
        features[feature.name] = bytes_feature(data)
        features[feature.presence_key] = int_feature(int(bool(value)))
    return tf.train.Example(features=tf.train.Features(feature=features))
