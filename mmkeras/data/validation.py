"""Carving a validation split out of the train split, when a spec has none.

A spec that names only `train` and `test` leaves early stopping and the best
model to watch the training loss, which a branch that memorises the training
examples drives to zero. `carve_validation` holds out a stratified fraction of
the train split's manifest rows (group-disjoint when the spec names a `group`
column: a speaker, an object, a patient), and `ValidationSplit.apply` turns
the spec into one with a `validation` split: both splits read the same
manifest, each keeping its own row numbers (`SplitSpec.rows`), so the
pipeline, the bad-input scan and the text vocabulary (adapted on the train
split only) need nothing else. The carve is a JSON file (`save` / `load`), so
a resumed run, `evaluate`, calibration and tuning read back the same rows.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mmkeras.checks import check_number
from mmkeras.data.common import LOGGER
from mmkeras.data.manifest import read_manifest
from mmkeras.datasets import prepare
from mmkeras.spec import DatasetSpec

TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"
DEFAULT_VALIDATION_FRACTION = 0.1
# A group-disjoint carve may hold out at most this many times `fraction`; beyond that it
# falls back to a stratified one. On avmnist (3 train speakers) holding out a speaker took a
# third of the rows and the test accuracy fell from 0.866 (stratified) to 0.636
# (benchmarks/results/generalising_defaults_notes.md).
MAX_SHARE_FACTOR = 2.0


@dataclasses.dataclass(frozen=True)
class ValidationSplit:
    """Which train-split rows were held out for validation, and how they were chosen.

    Attributes:
      manifest: the train split's manifest, as the spec names it (relative to
        its `data_dir`, so a run folder moved to another machine still matches).
      select: the train split's `select` (its `split` column value), or None.
      fraction: the fraction asked for.
      seed: the seed of the draw.
      group: the group column the carve kept disjoint, or None.
      train_rows: the manifest row numbers left for training, ascending.
      validation_rows: the manifest row numbers held out, ascending.
    """

    manifest: str
    select: str | None
    fraction: float
    seed: int
    group: str | None
    train_rows: tuple[int, ...]
    validation_rows: tuple[int, ...]

    def apply(self, spec: DatasetSpec) -> DatasetSpec:
        """Return `spec` with its train split cut down to `train_rows` and a `validation` split of the rest.

        Raises:
          ValueError: if the spec's train split reads another manifest or selection than the carve's.
        """
        train = spec.split(TRAIN_SPLIT)
        if train.manifest != self.manifest or train.select != self.select:
            raise ValueError(
                f"The recorded validation split was carved from {self.manifest} (select {self.select!r}), but spec "
                f"{spec.name!r} trains on {train.manifest or train.tfrecords} (select {train.select!r}). Train into "
                "a new output folder, or delete its validation_split.json to carve again."
            )
        splits = dict(spec.splits)
        splits[TRAIN_SPLIT] = dataclasses.replace(train, rows=self.train_rows)
        splits[VALIDATION_SPLIT] = dataclasses.replace(train, name=VALIDATION_SPLIT, rows=self.validation_rows)
        return spec.replace(splits=splits)

    def describe(self) -> str:
        """One line for the training log: how many rows were held out, and how."""
        total = len(self.train_rows) + len(self.validation_rows)
        how = f"group-disjoint by {self.group!r}" if self.group else "stratified by class"
        return (
            f"The spec has no validation split: held out {len(self.validation_rows)} of the {total} train examples "
            f"({len(self.validation_rows) / total:.1%}, {how}, seed {self.seed}) for early stopping and the best model."
        )

    def to_dict(self) -> dict[str, Any]:
        """The carve as plain JSON types."""
        return {**dataclasses.asdict(self), "train_rows": list(self.train_rows),
                "validation_rows": list(self.validation_rows)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the carve as JSON to `path` (written aside and renamed into place)."""
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        os.replace(partial, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ValidationSplit:
        """Read a carve written by `save`.

        Raises:
          FileNotFoundError: if the file does not exist.
          ValueError: if it is not a carve.
        """
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{**raw, "train_rows": tuple(raw["train_rows"]),
                          "validation_rows": tuple(raw["validation_rows"])})
        except (json.JSONDecodeError, TypeError, KeyError) as error:
            raise ValueError(f"{path} is not a validation split written by mmkeras ({error}).") from None


def carve_validation(
    spec: DatasetSpec,
    fraction: float = DEFAULT_VALIDATION_FRACTION,
    *,
    seed: int = 0,
    group: str | None = None,
) -> ValidationSplit:
    """Hold out a stratified (or group-disjoint) fraction of a spec's train split for validation.

    Without a group, each class gives `round(fraction * its rows)` rows (at
    least one when it has two or more), so the validation split has the train
    split's class balance. With a group column (default: the spec's
    `group`), whole groups are held out: groups are visited in a seeded random
    order and one is taken when most of its rows fill classes the validation
    split still lacks, until `fraction` of the rows is reached (a row whose
    group cell is empty is a group of its own); when no group
    is small enough, the group closest to that size is taken. When the
    held-out share would exceed `MAX_SHARE_FACTOR` (2) times `fraction` (a
    train split of 3 speakers would give a third), the carve is stratified
    instead, with a warning: losing a third of the groups costs more than
    validation leaking across groups. Rows with a bad label stay in the train split for the scan to
    report. Apply the result with `ValidationSplit.apply(spec)`.

    Args:
      spec: the dataset spec; its train split must read a manifest.
      fraction: the share of the train rows to hold out, in (0, 1).
      seed: the seed of the draw: the same spec, fraction and seed give the same rows.
      group: the manifest column whose groups are kept apart; None uses `spec.group`.

    Returns:
      The `ValidationSplit` (its `group` is None when the carve is stratified).

    Raises:
      ValueError: if `fraction` is not in (0, 1), the train split reads
        TFRecords, or it has too few rows (or groups) to hold any out.

    Example:
      >>> carve = carve_validation(load_spec("tiny"), 0.1, seed=0)
      >>> spec = carve.apply(load_spec("tiny").replace(splits={...}))  # train + test only
      >>> len(carve.validation_rows)
      6
    """
    fraction = check_number(fraction, "validation_fraction", minimum=0.0, inclusive=False)
    if fraction >= 1:
        raise ValueError(f"validation_fraction must be below 1 (a share of the train split), got {fraction!r}.")
    if spec.split(TRAIN_SPLIT).manifest is None:
        raise ValueError(
            f"Spec {spec.name!r}: its train split reads TFRecords, so no validation split can be carved out of it. "
            "Add a `validation` split to the spec, or set validation_fraction=0."
        )
    group = spec.group if group is None else group
    prepare(spec)
    rows = read_manifest(spec.replace(group=group), TRAIN_SPLIT).rows
    good = [row for row in rows if row.problem is None]
    held_out = None
    if group:
        held_out = _group_rows(good, fraction, np.random.default_rng(seed), spec.num_classes, group, spec.name)
    if held_out is not None and len(held_out) > MAX_SHARE_FACTOR * fraction * len(good):
        LOGGER.warning(
            "Spec %r: the train split's %r groups are too few or too large for a group-disjoint validation split "
            "of %.0f%% (it would hold out %d of %d rows, and with them a share of the groups the model learns "
            "from); carving a stratified one instead. Add a `validation` split to the spec for a group-disjoint one.",
            spec.name, group, 100 * fraction, len(held_out), len(good))
        held_out, group = None, None
    if held_out is None:  # its own generator: the same rows as a carve with no group at all
        held_out = _stratified_rows(good, fraction, np.random.default_rng(seed))
    if not held_out or len(held_out) == len(rows):
        raise ValueError(
            f"Spec {spec.name!r}: the train split's {len(rows)} rows are too few to hold out {fraction:.0%} for "
            "validation. Add a `validation` split to the spec, or set validation_fraction=0."
        )
    return ValidationSplit(
        manifest=spec.split(TRAIN_SPLIT).manifest,
        select=spec.split(TRAIN_SPLIT).select,
        fraction=float(fraction),
        seed=int(seed),
        group=group or None,
        train_rows=tuple(sorted(row.number for row in rows if row.number not in held_out)),
        validation_rows=tuple(sorted(held_out)),
    )


def _stratified_rows(rows, fraction: float, rng: np.random.Generator) -> set[int]:
    """Each class's share of held-out row numbers: round(fraction * n), at least 1 when n >= 2."""
    by_class: dict[int, list[int]] = {}
    for row in rows:
        by_class.setdefault(row.label, []).append(row.number)
    held_out = set()
    for label in sorted(by_class):
        numbers = by_class[label]
        count = min(max(round(fraction * len(numbers)), 1 if len(numbers) >= 2 else 0), len(numbers) - 1)
        held_out.update(numbers[i] for i in rng.permutation(len(numbers))[:count])
    return held_out


def _group_rows(rows, fraction: float, rng: np.random.Generator, num_classes: int, group: str, name: str) -> set[int]:
    """Whole groups held out, greedily filling each class's share of `fraction` (see `carve_validation`)."""
    members: dict[str, list] = {}
    for row in rows:  # a row with an empty group cell is a group of its own
        members.setdefault(row.group or f"\0row {row.number}", []).append(row)
    if len(members) < 2:
        raise ValueError(
            f"Spec {name!r}: the train split has {len(members)} {group!r} group(s); a group-disjoint validation "
            "split needs at least 2. Add a `validation` split to the spec, or name no `group`."
        )
    names = sorted(members)
    counts = {g: np.bincount([row.label for row in members[g]], minlength=num_classes) for g in names}
    targets = fraction * sum(counts.values())
    wanted = fraction * len(rows)
    chosen, filled = [], np.zeros(num_classes)
    for index in rng.permutation(len(names)):
        if filled.sum() >= wanted:
            break
        g = names[index]
        overshoot = np.maximum(filled + counts[g] - targets, 0).sum() - np.maximum(filled - targets, 0).sum()
        if overshoot <= counts[g].sum() / 2 and len(chosen) < len(names) - 1:
            chosen.append(g)
            filled = filled + counts[g]
    if not chosen:
        chosen = [min(names, key=lambda g: (abs(len(members[g]) - wanted), g))]
        LOGGER.info("No %r group is smaller than %.0f%% of the train split: held out the group %r (%d rows).",
                    group, 100 * fraction, chosen[0], len(members[chosen[0]]))
    return {row.number for g in chosen for row in members[g]}


def with_validation_split(
    spec: DatasetSpec,
    fraction: float = DEFAULT_VALIDATION_FRACTION,
    *,
    seed: int = 0,
    record: str | os.PathLike | None = None,
) -> tuple[DatasetSpec, ValidationSplit | None]:
    """Return the spec with a validation split: its own, a recorded carve, or a new carve.

    The one place that decides where validation comes from, for training,
    evaluation, calibration and tuning alike: a spec's own `validation` split
    always wins; else `fraction` 0 means none; else the carve recorded at
    `record` (a resumed run, or a later `evaluate`) is reused; else a new
    one is carved with `carve_validation` and written to `record`. A train
    split of TFRecords cannot be carved: it is logged and the spec is
    returned as is.

    Args:
      spec: the dataset spec.
      fraction: the share of the train split to hold out (0: none).
      seed: the seed of a new carve.
      record: the JSON file of the carve (e.g. a run folder's
        `validation_split.json`); None neither reads nor writes one.

    Returns:
      `(spec, carve)`: the spec to train on (train split cut down and a
      `validation` split added when carved) and the `ValidationSplit`, or
      None when nothing was carved.

    Raises:
      ValueError: as `carve_validation`, or if a recorded carve belongs to another spec.

    Example:
      >>> spec, carve = with_validation_split(train_test_spec, 0.1, seed=0, record="runs/a/validation_split.json")
      >>> sorted(spec.splits)
      ['test', 'train', 'validation']
    """
    if VALIDATION_SPLIT in spec.splits:
        return spec, None
    if record is not None and Path(record).is_file():
        carve = ValidationSplit.load(record)
        return carve.apply(spec), carve
    if not fraction:
        return spec, None
    if spec.split(TRAIN_SPLIT).manifest is None:
        LOGGER.warning("Spec %r has no validation split and its train split reads TFRecords, which cannot be "
                       "carved: early stopping watches the training loss. Add a `validation` split.", spec.name)
        return spec, None
    carve = carve_validation(spec, fraction, seed=seed)
    if record is not None:
        carve.save(record)
    return carve.apply(spec), carve
