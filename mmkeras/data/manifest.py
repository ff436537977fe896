"""Manifests: the CSV or JSONL table that says which strings and files make each example.

One row per example; one column per feature (the feature's `column`): text
inline, images and recordings as paths relative to the manifest's folder
(absolute paths allowed); an empty cell means the modality is missing for that
example; the label column holds the class name; an optional `split` column is
filtered on by the split's `select`.

Reading needs no TensorFlow: this module only parses, validates columns and
resolves paths. Rows whose label is empty or unknown are kept with a
`problem`, because what to do with bad input is the scan's policy, not the
reader's.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

from mmkeras.spec import DatasetSpec

SPLIT_COLUMN = "split"
# File extension -> manifest format.
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclasses.dataclass(frozen=True)
class ManifestRow:
    """One example of a manifest.

    Attributes:
      number: where the row is in the file: the 1-based data row of a CSV
        (header not counted) or the 1-based line of a JSONL file.
      values: feature name -> the inline text, or the resolved absolute path
        of an image or recording; "" where the modality is missing.
      label: the class id, or -1 when the label is bad (see `problem`).
      problem: None, or (reason, detail) for an empty or unknown label.
      group: the cell of the spec's `group` column ("" when the spec names none).
    """

    number: int
    values: dict[str, str]
    label: int
    problem: tuple[str, str] | None = None
    group: str = ""

    def present(self, name: str) -> bool:
        """Whether feature `name` has a value in this row."""
        return self.values[name] != ""


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A manifest split: its file, how rows are counted, and its rows.

    Attributes:
      path: the manifest file.
      row_word: "row" for CSV (data rows) or "line" for JSONL (file lines).
      rows: the split's rows, in file order.
    """

    path: Path
    row_word: str
    rows: list[ManifestRow]

    def where(self, number: int) -> str:
        """Name a row for messages: `manifest.csv row 3`."""
        return f"{self.path} {self.row_word} {number}"


def manifest_path(spec: DatasetSpec, split: str) -> Path:
    """Return the manifest file of a split (relative paths resolved against `spec.data_dir`).

    Raises:
      ValueError: if the split has no manifest (it reads TFRecords).
    """
    split_spec = spec.split(split)
    if split_spec.manifest is None:
        raise ValueError(f"Split {split!r} of spec {spec.name!r} reads TFRecords ({split_spec.tfrecords}), not a manifest.")
    return (Path(spec.data_dir) / split_spec.manifest).resolve()


def read_manifest(spec: DatasetSpec, split: str) -> Manifest:
    """Read a split's manifest: keep its rows, check its columns, resolve paths, map labels to ids.

    The format follows the extension: `.csv` (UTF-8, header row) or `.jsonl`
    / `.ndjson` (one JSON object per line; a key left out or `null` is an
    empty cell).

    Args:
      spec: the dataset spec.
      split: the split's name; its `select` keeps only rows whose `split`
        column equals it, and its `rows` (a carved validation split) only
        the listed row numbers.

    Returns:
      The `Manifest`, with one `ManifestRow` per selected row.

    Raises:
      FileNotFoundError: if the manifest does not exist.
      ValueError: if the format is unknown, a JSONL line is not a JSON object,
        a needed column is missing (naming the manifest, the column and the
        columns found), or no row belongs to the split.

    Example:
      >>> manifest = read_manifest(load_spec("tiny"), "train")
      >>> manifest.rows[0].values["picture"]
      '/root/.cache/mmkeras/tiny/images/00000.png'
    """
    path = manifest_path(spec, split)
    select = spec.split(split).select
    keep = None if spec.split(split).rows is None else frozenset(spec.split(split).rows)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"Manifest {path}: unknown format {path.suffix!r}; use one of {sorted(FORMATS)}.")
    if not path.is_file():
        raise FileNotFoundError(f"Manifest {path} (split {split!r} of spec {spec.name!r}) does not exist.")
    records, columns = _read_csv(path) if fmt == "csv" else _read_jsonl(path)
    needed = [f.column for f in spec.features] + [spec.label.column] + ([SPLIT_COLUMN] if select is not None else [])
    for column in needed + ([spec.group] if spec.group else []):
        if column not in columns:
            fix = "the spec's `group:`" if column == spec.group and column not in needed else "the feature's `column:`"
            raise ValueError(
                f"Manifest {path}: no column {column!r} (needed by spec {spec.name!r}). Columns found: "
                f"{sorted(columns)}. Add the column or set {fix} in the spec."
            )
    base = path.parent
    class_ids = {name: i for i, name in enumerate(spec.label.class_names)}
    rows = []
    for number, record in records:
        if (select is not None and _cell(record, SPLIT_COLUMN) != select) or (keep is not None and number not in keep):
            continue
        values = {}
        for feature in spec.features:
            cell = _cell(record, feature.column)
            if cell and feature.modality != "text":
                cell = str(base / Path(cell).expanduser())
            values[feature.name] = cell
        label_name = _cell(record, spec.label.column)
        label, problem = class_ids.get(label_name, -1), None
        if not label_name:
            problem = ("empty label", f"the {spec.label.column!r} cell is empty")
        elif label < 0:
            problem = ("unknown class", f"class {label_name!r} is not one of {list(spec.label.class_names)}")
        group = _cell(record, spec.group) if spec.group else ""
        rows.append(ManifestRow(number=number, values=values, label=label, problem=problem, group=group))
    if not rows:
        # An empty split is almost always a typo in `select` or the wrong file; say so now.
        found = sorted({_cell(record, SPLIT_COLUMN) for _, record in records}) if SPLIT_COLUMN in columns else []
        selected = f" with {SPLIT_COLUMN!r} == {select!r} (values found: {found})" if select is not None else ""
        raise ValueError(f"Manifest {path} has no rows{selected} for split {split!r} of spec {spec.name!r}.")
    return Manifest(path=path, row_word="row" if fmt == "csv" else "line", rows=rows)


def _cell(record: dict[str, Any], column: str) -> str:
    value = record.get(column)
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else str(value)


def _read_csv(path: Path) -> tuple[list[tuple[int, dict]], list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        return list(enumerate(reader, start=1)), list(reader.fieldnames or [])


def _read_jsonl(path: Path) -> tuple[list[tuple[int, dict]], set[str]]:
    records, columns = [], set()
    with open(path, encoding="utf-8-sig") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"Manifest {path} line {number}: not valid JSON ({error.msg}).") from None
            if not isinstance(record, dict):
                # Bad data in a file is a ValueError, like every other manifest problem.
                raise ValueError(  # noqa: TRY004
                    f"Manifest {path} line {number}: expected a JSON object, got {type(record).__name__}."
                )
            records.append((number, record))
            columns.update(record)
    return records, columns
