"""The bad-input scan: which examples of a split would fail, and why, found once.

A split is checked in two steps. Cheap checks run in Python on every row: an
empty or unknown label, a missing file, a path that cannot be read. Then the
SAME decoders the pipeline uses run over the remaining examples in one
parallel tf.data pass; the examples that fail there are decoded again one by
one to get the reason (corrupt image, corrupt audio, wrong sample rate, or a
size over the feature's limit: an image declaring more than
`max_image_pixels`, a recording longer than `max_audio_seconds`, a text
longer than `max_text_bytes`; refused from its header, before decoding). The
result is cached (keyed by the manifest's or shards' size and mtime, every
referenced file's size and mtime, and the spec's features and label), so
the decode pass happens once per version of the data.

The spec's `on_error` policy is then applied by `check_split`: `raise` stops
with a `BadInputError` naming the manifest, row, file and reason; `skip`
drops the examples, logs the counts by reason (logger "mmkeras") and returns
them in the `ScanReport`. Nothing is dropped silently.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import tensorflow as tf

from mmkeras.data import decoders
from mmkeras.data.common import (
    LOGGER,
    file_features,
    parse_raw_record,
    read_manifest_rows,
    read_tfrecord_files,
    tfrecord_files,
)
from mmkeras.data.manifest import ManifestRow, read_manifest
from mmkeras.datasets import prepare
from mmkeras.spec import DatasetSpec, cache_dir

# The reasons an example is bad, as counted in `ScanReport.skipped`.
EMPTY_LABEL = "empty label"
UNKNOWN_CLASS = "unknown class"
MISSING_FILE = "missing file"
UNREADABLE_FILE = "unreadable file"
CORRUPT_IMAGE = "corrupt image"
CORRUPT_AUDIO = "corrupt audio"
WRONG_SAMPLE_RATE = "wrong sample rate"
IMAGE_TOO_LARGE = "image too large"
AUDIO_TOO_LONG = "audio too long"
TEXT_TOO_LONG = "text too long"
REASONS = (
    EMPTY_LABEL, UNKNOWN_CLASS, MISSING_FILE, UNREADABLE_FILE, CORRUPT_IMAGE, CORRUPT_AUDIO, WRONG_SAMPLE_RATE,
    IMAGE_TOO_LARGE, AUDIO_TOO_LONG, TEXT_TOO_LONG,
)
# The reason of a value over its feature's limit, by the limit's option (named in the decoder's message).
LIMIT_REASONS = {"max_image_pixels": IMAGE_TOO_LARGE, "max_audio_seconds": AUDIO_TOO_LONG,
                 "max_text_bytes": TEXT_TOO_LONG}
# Bump when the scan's logic changes, so old cached results are not reused.
SCAN_VERSION = 4
# How many bad examples an error message lists before "... and N more".
MAX_LISTED = 10


class BadInputError(ValueError):
    """A split holds bad examples and the spec says `on_error: raise`.

    Raised by `check_split` (so by the pipeline, `write_tfrecords` and the class
    weights, which call it) before anything is trained on or written. It carries only its message,
    which lists up to `MAX_LISTED` bad examples by manifest (or shard), row,
    file and reason, and says how to fix them or skip them. A `ValueError`, so
    callers that catch bad specs catch it too.
    """


class BadExample(NamedTuple):
    """One bad example.

    Attributes:
      row: the manifest's 1-based data row (CSV) or line (JSONL), or the
        shard's 1-based record number (TFRecords).
      file: the file at fault (an image, recording or TFRecord shard), or ""
        for a bad label.
      reason: `"<kind>: <detail>"`, the kind being one of `REASONS`.
    """

    row: int
    file: str
    reason: str

    @property
    def kind(self) -> str:
        """The reason's kind, one of `REASONS` (e.g. "corrupt image")."""
        return self.reason.split(":", 1)[0]


@dataclasses.dataclass(frozen=True)
class ScanReport:
    """What the scan of one split found.

    Attributes:
      split: the split's name.
      source: the manifest file, or the TFRecord glob.
      row_word: how rows are named: "row" (CSV), "line" (JSONL) or "record".
      total: examples in the split.
      kept: examples that decode.
      skipped: reason kind -> number of bad examples (only kinds that occur).
      bad: every bad example, in source order.
    """

    split: str
    source: str
    row_word: str
    total: int
    kept: int
    skipped: dict[str, int]
    bad: list[BadExample]

    def where(self, bad: BadExample) -> str:
        """Name a bad example's place: `manifest.csv row 3` or `train-00000-of-00004.tfrecord record 7`."""
        if self.row_word == "record":
            return f"{bad.file} record {bad.row}"
        return f"{self.source} {self.row_word} {bad.row}"

    def describe(self, limit: int = MAX_LISTED) -> str:
        """A multi-line listing of the bad examples (the first `limit` of them)."""
        lines = []
        for bad in self.bad[:limit]:
            file = f": file {bad.file}" if bad.file and self.row_word != "record" else ""
            lines.append(f"  {self.where(bad)}{file}: {bad.reason}")
        if len(self.bad) > limit:
            lines.append(f"  ... and {len(self.bad) - limit} more")
        return "\n".join(lines)

    def summary(self) -> str:
        """One line: how many examples were skipped, by reason."""
        counts = ", ".join(f"{kind}: {count}" for kind, count in self.skipped.items())
        skipped = f"skipped {len(self.bad)} ({counts})" if self.bad else "none bad"
        return f"split {self.split!r} ({self.source}): kept {self.kept} of {self.total} examples, {skipped}"


@dataclasses.dataclass(frozen=True)
class CheckedSplit:
    """A split after the scan and the policy: what the pipeline reads.

    Attributes:
      report: the scan's `ScanReport`.
      rows: the good manifest rows (None for a TFRecord split).
      files: the TFRecord shards (None for a manifest split).
      skip_keys: keys (`"<shard>#<index>"`) of bad TFRecord records to drop.
      decoding_checked: False when the scan stopped at the Python checks
        (`on_error: raise` with a bad label or file) before decoding.
    """

    report: ScanReport
    rows: list[ManifestRow] | None = None
    files: list[str] | None = None
    skip_keys: frozenset[str] = frozenset()
    decoding_checked: bool = True


def scan_split(spec: DatasetSpec, split: str) -> ScanReport:
    """Find every bad example of a split, whatever the spec's `on_error` policy.

    Use it to inspect a dataset before training; the pipeline runs the same
    scan (cached, so only the first call decodes anything).

    Args:
      spec: the dataset spec.
      split: the split's name.

    Returns:
      The `ScanReport`.

    Raises:
      FileNotFoundError, ValueError: if the manifest or shards cannot be read
        at all (not for bad examples).

    Example:
      >>> report = scan_split(spec, "train")
      >>> report.skipped
      {'missing file': 2, 'corrupt image': 1}
    """
    prepare(spec)
    return _scan(spec, split, fail_fast=False)[0]


def check_split(spec: DatasetSpec, split: str) -> CheckedSplit:
    """Scan a split and apply the spec's `on_error` policy.

    Under `raise` the cheap Python checks (labels, missing files) fail before
    any decoding. Under `skip` the bad examples are dropped and their counts
    logged as a warning on the "mmkeras" logger.

    Args:
      spec: the dataset spec (its data already prepared).
      split: the split's name.

    Returns:
      The `CheckedSplit` the pipeline and the TFRecord writer read from.

    Raises:
      BadInputError: under `on_error: raise` when any example is bad, naming
        the manifest (or shard), row, file and reason of each.
      ValueError: under `on_error: skip` when no example is left.
    """
    report, checked = _scan(spec, split, fail_fast=spec.on_error == "raise")
    if report.bad and spec.on_error == "raise":
        more = "" if checked.decoding_checked else " (found before decoding anything; decoding may find more)"
        raise BadInputError(
            f"Split {split!r} of spec {spec.name!r} has {len(report.bad)} bad example(s){more}:\n{report.describe()}\n"
            "Fix or remove them, or set `on_error: skip` in the spec to drop them (they are then counted and logged)."
        )
    if report.bad:
        LOGGER.warning("Skipped bad examples (on_error: skip): %s\n%s", report.summary(), report.describe())
    if report.total and not report.kept:
        raise ValueError(f"Every example of split {split!r} of spec {spec.name!r} is bad:\n{report.describe()}")
    return checked


def _scan(spec: DatasetSpec, split: str, *, fail_fast: bool) -> tuple[ScanReport, CheckedSplit]:
    if spec.split(split).manifest is not None:
        return _scan_manifest(spec, split, fail_fast=fail_fast)
    return _scan_tfrecords(spec, split)


def _scan_manifest(spec: DatasetSpec, split: str, *, fail_fast: bool) -> tuple[ScanReport, CheckedSplit]:
    manifest = read_manifest(spec, split)
    bad, candidates, file_stats = [], [], []
    for row in manifest.rows:
        problem = _label_problem(row) or _file_problem(spec, row, file_stats)
        if problem:
            bad.append(problem)
        else:
            candidates.append(row)
    decoding_checked = not (fail_fast and bad)
    if decoding_checked:
        manifest_stat = manifest.path.stat()
        source = [str(manifest.path), manifest_stat.st_size, manifest_stat.st_mtime_ns, spec.split(split).select]
        if spec.split(split).rows is not None:  # a carved split: its rows are part of what was scanned
            source.append(hashlib.sha256(json.dumps(list(spec.split(split).rows)).encode()).hexdigest())
        key = _cache_key(spec, source, file_stats)
        cached = _load_cached(key)
        if cached is None:
            kept = _decoding_keys(spec, read_manifest_rows(spec, candidates, with_keys=True), len(candidates))
            cached = {"bad": [_diagnose_row(spec, row) for row in candidates if str(row.number) not in kept]}
            _save_cached(key, cached)
        bad.extend(BadExample(*item) for item in cached["bad"])
    bad.sort(key=lambda item: item.row)
    bad_rows = {item.row for item in bad}
    rows = [row for row in candidates if row.number not in bad_rows]
    report = _report(split, str(manifest.path), manifest.row_word, len(manifest.rows), bad)
    return report, CheckedSplit(report=report, rows=rows, decoding_checked=decoding_checked)


def _scan_tfrecords(spec: DatasetSpec, split: str) -> tuple[ScanReport, CheckedSplit]:
    files = tfrecord_files(spec, split)
    key = tfrecord_cache_key(spec, files)
    cached = _load_cached(key)
    if cached is None:
        counts = [int(tf.data.TFRecordDataset(f).reduce(0, lambda count, _: count + 1)) for f in files]
        every_key = [f"{f}#{index}" for f, count in zip(files, counts) for index in range(count)]
        kept = _decoding_keys(spec, read_tfrecord_files(spec, files, with_keys=True), len(every_key))
        cached = {"total": len(every_key), "bad": [_diagnose_record(spec, key) for key in every_key if key not in kept]}
        _save_cached(key, cached)
    bad = [BadExample(*item) for item in cached["bad"]]
    report = _report(split, str(Path(spec.data_dir) / spec.split(split).tfrecords), "record", cached["total"], bad)
    skip_keys = frozenset(f"{item.file}#{item.row - 1}" for item in bad)
    return report, CheckedSplit(report=report, files=files, skip_keys=skip_keys)


def _report(split: str, source: str, row_word: str, total: int, bad: list[BadExample]) -> ScanReport:
    counts = collections.Counter(item.kind for item in bad)
    skipped = {kind: counts[kind] for kind in REASONS if counts[kind]}
    return ScanReport(
        split=split, source=source, row_word=row_word, total=total, kept=total - len(bad), skipped=skipped, bad=bad
    )


def _label_problem(row: ManifestRow) -> BadExample | None:
    if row.problem is None:
        return None
    kind, detail = row.problem
    return BadExample(row.number, "", f"{kind}: {detail}")


def _file_problem(spec: DatasetSpec, row: ManifestRow, file_stats: list) -> BadExample | None:
    """Check that each present file exists and is readable; record its size and mtime for the cache key."""
    for feature in file_features(spec):
        path = row.values[feature.name]
        if not path:
            continue
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return BadExample(row.number, path, f"{MISSING_FILE}: no such file (feature {feature.name!r})")
        except OSError as error:
            return BadExample(row.number, path, f"{UNREADABLE_FILE}: {error.strerror} (feature {feature.name!r})")
        if not stat.S_ISREG(info.st_mode):
            what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            return BadExample(row.number, path, f"{UNREADABLE_FILE}: {what} (feature {feature.name!r})")
        if not os.access(path, os.R_OK):
            return BadExample(row.number, path, f"{UNREADABLE_FILE}: permission denied (feature {feature.name!r})")
        file_stats.append((path, info.st_size, info.st_mtime_ns))
    return None


def _decoding_keys(spec: DatasetSpec, keyed_records: tf.data.Dataset, count: int) -> set[str]:
    """Run the pipeline's decoder over `(key, raw, label)` records; return the keys of those that decode."""
    if not count:
        return set()
    LOGGER.info("Checking %d examples of spec %r with the pipeline's decoders (once; the result is cached).",
                count, spec.name)
    decode = decoders.make_example_decoder(spec)

    @tf.autograph.experimental.do_not_convert  # graph-safe: no autograph (see mmkeras.data.decoders)
    def decodes(key, raw, label):
        features, _ = decode(raw, label)
        # Shards carry class ids that no manifest check has seen; out of range is an unknown class.
        in_range = tf.debugging.assert_less(label, spec.num_classes)
        at_least_zero = tf.debugging.assert_non_negative(label)
        # The decoded tensors are not returned; the dependency keeps them computed.
        with tf.control_dependencies([*tf.nest.flatten(features), in_range, at_least_zero]):
            return tf.identity(key)

    # ignore_errors is how failures are found: the caller reports every key missing here, none is lost.
    survivors = (
        keyed_records.map(decodes, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        .ignore_errors()
        .batch(4096)
    )
    return {key.decode("utf-8") for batch in survivors.as_numpy_iterator() for key in batch}


def _diagnose_row(spec: DatasetSpec, row: ManifestRow) -> tuple[int, str, str]:
    for feature in spec.features:
        if feature.modality == "text":  # inline in the manifest: no file at fault
            reason = row.present(feature.name) and _decode_problem(feature, row.values[feature.name].encode("utf-8"))
            if reason:
                return row.number, "", reason
            continue
        path = row.values[feature.name]
        if not path:
            continue
        try:
            with open(path, "rb") as stream:
                data = stream.read()
        except FileNotFoundError:
            return row.number, path, f"{MISSING_FILE}: no such file (feature {feature.name!r})"
        except OSError as error:
            return row.number, path, f"{UNREADABLE_FILE}: {error.strerror} (feature {feature.name!r})"
        reason = _decode_problem(feature, data)
        if reason:
            return row.number, path, reason
    return row.number, "", f"{UNREADABLE_FILE}: the example failed to load but not when retried alone"


def _diagnose_record(spec: DatasetSpec, key: str) -> tuple[int, str, str]:
    shard, index = key.rsplit("#", 1)
    record = next(iter(tf.data.TFRecordDataset(shard).skip(int(index)).take(1)), None)
    number = int(index) + 1
    try:
        raw, label = parse_raw_record(spec, record)
    except (tf.errors.OpError, ValueError) as error:
        return number, shard, f"{UNREADABLE_FILE}: not a raw mmkeras record ({_short(error)})"
    if not 0 <= int(label) < spec.num_classes:
        return number, shard, (
            f"{UNKNOWN_CLASS}: class id {int(label)} is outside 0..{spec.num_classes - 1} "
            f"({len(spec.label.class_names)} classes in the spec); rewrite the shard with mmkeras.write_tfrecords"
        )
    for feature in spec.features:
        if bool(raw[feature.presence_key]):
            reason = _decode_problem(feature, raw[feature.name].numpy())
            if reason:
                return number, shard, reason
    return number, shard, f"{UNREADABLE_FILE}: the record failed to load but not when retried alone"


def _decode_problem(feature, data: bytes) -> str | None:
    """Decode one value eagerly with the pipeline's decoder; return `"<kind>: <detail>"` or None."""
    try:
        decoders.DECODERS[feature.modality](feature, tf.constant(data))
        return None
    except tf.errors.OpError as error:
        detail = _short(error)
        if f"`{feature.name}`" not in detail:
            detail = f"{detail} (feature {feature.name!r})"
    option = feature.limit[0]
    if f"{option} =" in detail:  # the decoders' size checks name their option
        return f"{LIMIT_REASONS[option]}: {detail}"
    if feature.modality == "image":
        return f"{CORRUPT_IMAGE}: {detail}"
    try:
        tf.audio.decode_wav(data)
    except tf.errors.OpError:
        return f"{CORRUPT_AUDIO}: {detail}"
    return f"{WRONG_SAMPLE_RATE}: {detail}"


def _short(error: Exception) -> str:
    """The readable part of a TF error message (no node names, op names or byte-string quoting)."""
    message = getattr(error, "message", str(error))
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)
    message = message.split(" [Op:")[0]
    summarized = re.search(r"Summarized data: b(['\"])(.*)\1", message, re.DOTALL)
    if summarized:
        message = summarized.group(2)
    return message.strip()


def tfrecord_cache_key(spec: DatasetSpec, files: Sequence[str]) -> str:
    """The scan-cache key of a set of TFRecord shards (their paths, sizes and mtimes, and the spec's features)."""
    stats = [(str(Path(f).resolve()), os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    return _cache_key(spec, ["tfrecords"], stats)


def save_clean_tfrecord_scan(spec: DatasetSpec, files: Sequence[str], total: int) -> None:
    """Record that freshly written shards hold `total` good examples, so reading them scans nothing."""
    _save_cached(tfrecord_cache_key(spec, files), {"total": total, "bad": []})


def _cache_key(spec: DatasetSpec, source: list, file_stats: list) -> str:
    described = {
        "version": SCAN_VERSION,
        "source": source,
        "features": [(f.name, f.modality, f.column, dict(f.options)) for f in spec.features],
        "label": [spec.label.column, list(spec.label.class_names)],
        "files": hashlib.sha256(json.dumps(file_stats).encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _cache_path(key: str) -> Path:
    return cache_dir() / "scans" / f"{key}.json"


def _load_cached(key: str) -> dict | None:
    try:
        with open(_cache_path(key), encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return None


def _save_cached(key: str, result: dict) -> None:
    """Write the scan result atomically; a cache that cannot be written only costs a rescan."""
    path = _cache_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(result, stream)
        os.replace(temporary, path)
    except OSError as error:
        LOGGER.warning("Could not cache the bad-input scan in %s (%s); it will run again next time.", path, error)

