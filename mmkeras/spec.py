"""Dataset specs: what a dataset holds, written once and read everywhere.

A spec names each feature (its data key, `keras.Input` name, serving key and
REST JSON key), its modality and shape options, the label and its classes, and
where each split lives. Everything else in mmkeras takes a `DatasetSpec`.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mmkeras.checks import is_integer, is_number

# Options each modality understands, with their defaults. Shapes are written
# here (and overridden per feature in the YAML) and nowhere else.
# The `max_*` options bound what a decoder accepts (see `mmkeras.data.decoders`):
# None means the default that `default_limit` derives from the feature's shape.
MODALITY_OPTIONS: Mapping[str, Mapping[str, Any]] = {
    "text": {"vocab_size": 20000, "sequence_length": 64, "max_text_bytes": None},
    "image": {"image_size": (64, 64), "channels": 3, "max_image_pixels": None},
    "audio": {
        "sample_rate": 16000,
        "clip_seconds": 1.0,
        "num_mel_bins": 40,
        "frame_ms": 25.0,
        # 20 ms hops (50 frames a second, as keyword-spotting models use) halve the
        # frames the audio branch's convolutions and LSTM read: steady training step
        # 0.81x on avmnist and 0.89x on tuxpaint against 10 ms, test accuracy
        # 0.905 vs 0.910 and 0.599 vs 0.595 (2 seeds each; benchmarks/results/
        # time_to_accuracy_*_audio_hop.md).
        "hop_ms": 20.0,
        "resample": False,
        "max_audio_seconds": None,
    },
}
# Each modality's size limit: the option that holds it. The decoders read the
# size a file or string declares and refuse it beyond the limit BEFORE
# decoding, in training (per `on_error`) and in the exported serving graph alike.
LIMIT_OPTIONS: Mapping[str, str] = {
    "text": "max_text_bytes",
    "image": "max_image_pixels",
    "audio": "max_audio_seconds",
}
# Default limits (see `default_limit`): an image may declare a phone photo's
# PHOTO_PIXELS, or IMAGE_PIXELS_FACTOR times the feature's pixels if that is more,
# at most MAX_DEFAULT_IMAGE_PIXELS (4096 x 4096); a recording
# MIN_DEFAULT_AUDIO_SECONDS, or AUDIO_SECONDS_FACTOR times `clip_seconds` if that
# is more; a text DEFAULT_MAX_TEXT_BYTES. The floors are there because real
# inputs are sized by the camera or the speaker, not by the model: a 64 x 64
# feature's 64x (512 x 512) refused 8 of Tux Paint's 802 stamp pictures (up to
# 694 x 2348), and 4 x 3 s refused Greek and Spanish descriptions of up to 19.8 s.
IMAGE_PIXELS_FACTOR = 64
PHOTO_PIXELS = 4032 * 3024  # a 12-megapixel camera's frame, most phones' default
MAX_DEFAULT_IMAGE_PIXELS = 4096 * 4096
AUDIO_SECONDS_FACTOR = 4.0
MIN_DEFAULT_AUDIO_SECONDS = 30.0
DEFAULT_MAX_TEXT_BYTES = 64 * 1024
# Keys a feature may carry besides its modality options: the manifest column
# it is read from, and the arguments handed to its branch builder.
FEATURE_KEYS = ("name", "modality", "column", "branch")
# Pretrained-encoder keys a feature may give at its top level: shorthand for
# the same keys under `branch:` (e.g. `backbone: resnet50`, `weights: imagenet`).
BRANCH_SHORTCUTS = ("encoder", "preprocessor", "backbone", "weights", "trainable")
# Branch arguments that may name a local file or folder (`weights: my_weights.h5`,
# `encoder: hub:models/use`, `encoder: keras_hub:presets/bert`): relative ones that exist
# beside the spec file are read from there, as `data_dir` is.
BRANCH_PATH_KEYS = ("weights", "encoder", "preprocessor")
# The encoder prefixes the branches read (`is_hub_encoder`, `is_keras_hub_encoder`); the spec cannot import
# the branches (a lower layer), so it names them here.
ENCODER_PREFIXES = ("hub:", "keras_hub:")
ON_ERROR_POLICIES = ("raise", "skip")
SPEC_KEYS = (
    "name", "features", "label", "splits", "data_dir", "source", "source_options", "on_error", "group",
)
SPLIT_KEYS = ("manifest", "tfrecords", "select")
# The bundled specs ("tiny", "avmnist", ...) are package data, so a name resolves
# the same in a source checkout and in an installed wheel.
DEFAULT_SPECS_DIR = Path(__file__).resolve().parent / "data_specs"


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One input of a dataset: a text, an image or a recording.

    Args:
      name: data key, `keras.Input` name, serving-signature key and REST key.
      modality: one of `MODALITY_OPTIONS` ("text", "image", "audio").
      options: the modality's options (see `MODALITY_OPTIONS`), defaults filled in.
      column: the manifest column holding the value (text inline, a path for
        images and audio). Defaults to `name`.
      branch: keyword arguments for the branch builder (e.g. `backbone`).
    """

    name: str
    modality: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    column: str = ""
    branch: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.column:
            object.__setattr__(self, "column", self.name)

    @property
    def presence_key(self) -> str:
        """The name of this feature's presence flag (`<name>_present`)."""
        return f"{self.name}_present"

    @property
    def num_samples(self) -> int:
        """Audio only: samples per clip (`sample_rate * clip_seconds`)."""
        return int(round(self.options["sample_rate"] * self.options["clip_seconds"]))

    @property
    def shape(self) -> tuple[int, ...]:
        """The decoded tensor's shape for one example (no batch axis)."""
        if self.modality == "text":
            return ()
        if self.modality == "image":
            height, width = self.options["image_size"]
            return (int(height), int(width), int(self.options["channels"]))
        return (self.num_samples,)

    @property
    def limit(self) -> tuple[str, int | float]:
        """The feature's size limit as `(option name, value)`, e.g. `("max_image_pixels", 12192768)`."""
        option = LIMIT_OPTIONS[self.modality]
        return option, self.options[option]

    @property
    def dtype(self) -> str:
        """The decoded tensor's dtype: string text, uint8 images, float32 audio."""
        return {"text": "string", "image": "uint8", "audio": "float32"}[self.modality]


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """The label column and its classes, in class-id order.

    Class ids are positions in `class_names`: the manifest's label cells are
    class names, and the model's outputs follow this order.

    Args:
      column: the manifest column holding each example's class name.
      class_names: the class names (at least 2, unique); class id i is `class_names[i]`.
    """

    column: str
    class_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """Where one split's examples live.

    Exactly one of `manifest` (a CSV or JSONL table) and `tfrecords` (a glob of
    shards written by `write_tfrecords`) is set; paths are relative to the
    spec's `data_dir`. `select` keeps only manifest rows whose `split` column
    equals it; `rows`, set by `mmkeras.data.validation` (never in YAML) when
    a validation split is carved out of the train split, then keeps only the
    listed manifest rows.

    Args:
      name: the split's name (e.g. "train", "validation", "test").
      manifest: the CSV or JSONL manifest's path, or None for a TFRecord split.
      tfrecords: a glob of TFRecord shards, or None for a manifest split.
      select: keep only manifest rows whose `split` column equals this (None: every row).
      rows: keep only these manifest row numbers (`ManifestRow.number`); None keeps every row.
    """

    name: str
    manifest: str | None = None
    tfrecords: str | None = None
    select: str | None = None
    rows: tuple[int, ...] | None = None


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A whole dataset: features, label, splits and data policies.

    Args:
      name: the dataset's name (used for run and export folder names).
      features: the inputs, in a fixed order (the fusion order).
      label: the label column and class names.
      splits: split name -> `SplitSpec`.
      data_dir: folder that split paths are relative to.
      source: name of a `mmkeras.datasets` builder that writes the data into
        `data_dir` on first use (None for user data).
      source_options: keyword arguments for that builder.
      on_error: what the pipeline does with a bad example: "raise" or "skip".
      path: the YAML file this spec was read from, if any.
      group: the manifest column naming each example's group (a speaker, an
        object, a patient; a text column works too: identical texts are one
        group), or None. A validation split carved out of the
        train split (see `mmkeras.data.validation`) is then group-disjoint.
    """

    name: str
    features: tuple[FeatureSpec, ...]
    label: LabelSpec
    splits: Mapping[str, SplitSpec]
    data_dir: Path
    source: str | None = None
    source_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    on_error: str = "raise"
    path: Path | None = None
    group: str | None = None

    @property
    def num_classes(self) -> int:
        """How many classes the label has."""
        return len(self.label.class_names)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The feature names, in spec order."""
        return tuple(f.name for f in self.features)

    def feature(self, name: str) -> FeatureSpec:
        """Return the feature called `name`.

        Raises:
          ValueError: if the spec has no such feature.
        """
        for feature in self.features:
            if feature.name == name:
                return feature
        raise ValueError(
            f"Spec {self.name!r} has no feature {name!r}. Expected one of {list(self.feature_names)}."
        )

    def split(self, name: str) -> SplitSpec:
        """Return the split called `name`.

        Raises:
          ValueError: if the spec has no such split.
        """
        if name not in self.splits:
            raise ValueError(
                f"Spec {self.name!r} has no split {name!r}. Expected one of {sorted(self.splits)}."
            )
        return self.splits[name]

    def replace(self, **changes: Any) -> DatasetSpec:
        """Return a copy with some fields changed (specs are immutable)."""
        return dataclasses.replace(self, **changes)

    def with_features(self, names: tuple[str, ...] | list[str]) -> DatasetSpec:
        """Return a copy that keeps only the named features (e.g. a unimodal baseline)."""
        return self.replace(features=tuple(self.feature(n) for n in names))


def cache_dir() -> Path:
    """Where dataset builders write their data: `$MMKERAS_CACHE_DIR` or `~/.cache/mmkeras`."""
    return Path(os.environ.get("MMKERAS_CACHE_DIR", Path.home() / ".cache" / "mmkeras"))


def resolve_spec_path(name_or_path: str | os.PathLike) -> Path:
    """Turn a spec name ("tiny") or a path into the YAML file's path.

    A path to an existing file wins; otherwise the name is looked up among the
    bundled specs in `mmkeras/data_specs/` (package data, installed with mmkeras).

    Raises:
      FileNotFoundError: if neither a file nor a bundled spec of that name exists.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = DEFAULT_SPECS_DIR / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    known = sorted(p.stem for p in DEFAULT_SPECS_DIR.glob("*.yaml"))
    raise FileNotFoundError(
        f"No spec file {str(name_or_path)!r}. Give a path to a YAML spec or one of the bundled "
        f"names {known}."
    )


def load_spec(name_or_path: str | os.PathLike) -> DatasetSpec:
    """Read a YAML dataset spec (with `yaml.safe_load`) and validate it.

    Use this at every entry point: the returned spec is checked once here and
    trusted everywhere after.

    Args:
      name_or_path: a path to a YAML file, or the name of a bundled spec in
        `mmkeras/data_specs/` (e.g. "tiny", "avmnist", "tuxpaint").

    Returns:
      The `DatasetSpec`, with modality defaults filled in and `data_dir` resolved.

    Raises:
      FileNotFoundError: if the file does not exist.
      ValueError: if the spec is malformed; the message names the file, the key
        and the allowed values.

    Example:
      >>> spec = load_spec("tiny")
      >>> spec.feature_names
      ('caption', 'picture', 'sound')
    """
    path = resolve_spec_path(name_or_path)
    with open(path, encoding="utf-8") as stream:
        try:
            raw = yaml.safe_load(stream)
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML: {error}") from None
    return spec_from_dict(raw, path=path)


def spec_from_dict(raw: Any, *, path: Path | None = None) -> DatasetSpec:
    """Build and validate a `DatasetSpec` from a parsed YAML mapping.

    Args:
      raw: the mapping `yaml.safe_load` returned.
      path: the file it came from (for messages and relative paths).

    Returns:
      The validated `DatasetSpec`.

    Raises:
      ValueError: naming the file, the key and the allowed values.
    """
    where = str(path) if path else "<spec>"

    def fail(key: str, message: str) -> ValueError:
        return ValueError(f"{where}: key {key!r}: {message}")

    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: a spec must be a YAML mapping, got {type(raw).__name__}.")
    _check_keys(raw, SPEC_KEYS, "", fail)
    for key in ("name", "features", "label", "splits"):
        if key not in raw:
            raise fail(key, "is required.")
    name = str(raw["name"])
    if not isinstance(raw["features"], list) or not raw["features"]:
        raise fail("features", "must be a non-empty list of features.")
    features = tuple(_feature(item, i, fail) for i, item in enumerate(raw["features"]))
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise fail("features", f"feature names must be unique, got {names}.")
    label = _label(raw["label"], fail)
    if label.column in names:
        raise fail("label.column", f"{label.column!r} is also a feature name.")
    splits = _splits(raw["splits"], fail)
    on_error = raw.get("on_error", "raise")
    if on_error not in ON_ERROR_POLICIES:
        raise fail("on_error", f"got {on_error!r}, expected one of {list(ON_ERROR_POLICIES)}.")
    source = raw.get("source")
    source_options = raw.get("source_options") or {}
    if not isinstance(source_options, Mapping):
        raise fail("source_options", "must be a mapping of builder arguments.")
    group = raw.get("group")
    if group is not None and (not isinstance(group, str) or not group):
        raise fail("group", f"got {group!r}, expected the name of a manifest column (e.g. speaker).")
    if group is not None and group == label.column:
        raise fail("group", f"{group!r} is the label column; name a column that says which group a row is in.")
    base = path.parent if path else Path.cwd()
    if path:
        features = tuple(
            dataclasses.replace(f, branch=resolve_branch_paths(f.branch, base)) if f.branch else f for f in features
        )
    if raw.get("data_dir") is not None:
        data_dir = base / os.path.expandvars(os.path.expanduser(str(raw["data_dir"])))
    elif source:
        data_dir = cache_dir() / name
    else:
        data_dir = base
    return DatasetSpec(
        name=name,
        features=features,
        label=label,
        splits=splits,
        data_dir=data_dir,
        source=str(source) if source else None,
        source_options=dict(source_options),
        on_error=on_error,
        path=path,
        group=group,
    )


def resolve_branch_paths(branch: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """A feature's branch arguments with local paths relative to the spec's folder made absolute.

    `weights`, `encoder` and `preprocessor` may name a file or folder
    (`weights: weights.h5`, `encoder: hub:models/use`, `encoder:
    keras_hub:presets/bert`). A relative one is read from the spec's folder
    when it exists there, as `data_dir` is, so a spec works from any working
    directory; anything else (a URL, a preset name, "imagenet", an absolute
    path, a relative path that exists only from the working directory) is
    left as written.

    Args:
      branch: the feature's branch-builder arguments.
      base: the folder the spec file is in.

    Returns:
      A copy of `branch` with those paths resolved.

    Example:
      >>> resolve_branch_paths({"encoder": "hub:models/use"}, Path("/specs"))  # /specs/models/use exists
      {'encoder': 'hub:/specs/models/use'}
    """
    resolved = dict(branch)
    for key in BRANCH_PATH_KEYS:
        value = resolved.get(key)
        if not isinstance(value, str):
            continue
        prefix = next((p for p in ENCODER_PREFIXES if value.startswith(p)), "")
        local = value[len(prefix):]
        if not local or "://" in local or local.startswith("~") or Path(local).is_absolute():
            continue
        candidate = base / local
        if candidate.exists():
            resolved[key] = prefix + str(candidate.resolve())
    return resolved


def _check_keys(raw: Mapping, allowed: tuple[str, ...], prefix: str, fail) -> None:
    for key in raw:
        if key not in allowed:
            raise fail(f"{prefix}{key}", f"unknown key; allowed keys are {list(allowed)}.")


def _feature(raw: Any, index: int, fail) -> FeatureSpec:
    prefix = f"features[{index}]"
    if not isinstance(raw, Mapping):
        raise fail(prefix, "each feature must be a mapping with 'name' and 'modality'.")
    for key in ("name", "modality"):
        if key not in raw:
            raise fail(f"{prefix}.{key}", "is required.")
    modality = raw["modality"]
    if modality not in MODALITY_OPTIONS:
        raise fail(f"{prefix}.modality", f"got {modality!r}, expected one of {sorted(MODALITY_OPTIONS)}.")
    defaults = MODALITY_OPTIONS[modality]
    _check_keys(raw, FEATURE_KEYS + BRANCH_SHORTCUTS + tuple(defaults), f"{prefix}.", fail)
    options = {key: raw.get(key, default) for key, default in defaults.items()}
    _check_options(modality, options, prefix, fail)
    branch = raw.get("branch") or {}
    if not isinstance(branch, Mapping):
        raise fail(f"{prefix}.branch", "must be a mapping of branch-builder arguments.")
    branch = {**branch, **{key: raw[key] for key in BRANCH_SHORTCUTS if key in raw}}
    name = str(raw["name"])
    if not name.isidentifier():
        raise fail(f"{prefix}.name", f"got {name!r}; use letters, digits and '_' (it is a Keras input name).")
    return FeatureSpec(
        name=name, modality=modality, options=options, column=str(raw.get("column", "")), branch=dict(branch)
    )


# Options that count things (whole numbers), and options that measure (any positive number).
POSITIVE_INTEGERS = {
    "text": ("vocab_size", "sequence_length", "max_text_bytes"),
    "image": ("max_image_pixels",),
    "audio": ("sample_rate", "num_mel_bins"),
}
POSITIVE_NUMBERS = {"audio": ("clip_seconds", "frame_ms", "hop_ms", "max_audio_seconds")}


def default_limit(modality: str, options: Mapping[str, Any]) -> int | float:
    """The default size limit of a feature, from its other options.

    Images: a 12-megapixel photo (`PHOTO_PIXELS`, 4032 x 3024), or
    `IMAGE_PIXELS_FACTOR` (64) times the feature's own pixels if that is more,
    at most `MAX_DEFAULT_IMAGE_PIXELS` (16 Mpx, 4096 x 4096). Audio:
    `MIN_DEFAULT_AUDIO_SECONDS` (30 s), or `AUDIO_SECONDS_FACTOR` (4) times
    `clip_seconds` if that is more. Text: `DEFAULT_MAX_TEXT_BYTES` (64 KiB).
    Real inputs come at the size a camera or a speaker made them, whatever the
    model's shape, so the defaults accept a phone photo and a spoken sentence,
    and still refuse what would take a server's memory (a 20000 x 20000 PNG
    would need 1.2 GB decoded, an hour of WAV 230 MB at 16 kHz).

    Args:
      modality: "text", "image" or "audio".
      options: the feature's options (checked: `image_size`, `clip_seconds`).

    Returns:
      The limit, in the unit of `LIMIT_OPTIONS[modality]`.

    Example:
      >>> default_limit("image", {"image_size": (28, 28)})
      12192768
      >>> default_limit("audio", {"clip_seconds": 10.0})
      40.0
    """
    if modality == "image":
        height, width = options["image_size"]
        return min(max(IMAGE_PIXELS_FACTOR * height * width, PHOTO_PIXELS), MAX_DEFAULT_IMAGE_PIXELS)
    if modality == "audio":
        return max(AUDIO_SECONDS_FACTOR * float(options["clip_seconds"]), MIN_DEFAULT_AUDIO_SECONDS)
    return DEFAULT_MAX_TEXT_BYTES


def _is_positive_integer(value) -> bool:
    return is_integer(value) and value > 0


def _check_options(modality: str, options: dict, prefix: str, fail) -> None:
    limit = LIMIT_OPTIONS[modality]
    limit_given = options[limit] is not None  # None: derived from the shape options once they are checked
    if modality == "image":
        size = options["image_size"]
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_positive_integer(s) for s in size)):
            raise fail(f"{prefix}.image_size", f"got {size!r}, expected [height, width] of positive integers.")
        options["image_size"] = (int(size[0]), int(size[1]))
        if isinstance(options["channels"], bool) or options["channels"] not in (1, 3):
            raise fail(f"{prefix}.channels", f"got {options['channels']!r}, expected 1 or 3.")
    for key in POSITIVE_INTEGERS.get(modality, ()):
        if key == limit and not limit_given:
            continue
        if not _is_positive_integer(options[key]):
            raise fail(f"{prefix}.{key}", f"got {options[key]!r}, expected a positive integer.")
        options[key] = int(options[key])
    if modality == "audio" and not isinstance(options["resample"], bool):
        raise fail(f"{prefix}.resample", f"got {options['resample']!r}, expected true or false.")
    for key in POSITIVE_NUMBERS.get(modality, ()):
        value = options[key]
        if key == limit and not limit_given:
            continue
        if not is_number(value) or value <= 0:
            raise fail(f"{prefix}.{key}", f"got {value!r}, expected a positive number.")
    if limit_given:
        _check_limit(modality, options, prefix, fail)
    else:
        options[limit] = default_limit(modality, options)


def _check_limit(modality: str, options: dict, prefix: str, fail) -> None:
    """A limit below the feature's own size would refuse the very data the model takes."""
    if modality == "image":
        height, width = options["image_size"]
        if options["max_image_pixels"] < height * width:
            raise fail(
                f"{prefix}.max_image_pixels",
                f"got {options['max_image_pixels']}, fewer than the feature's own {height} x {width} = "
                f"{height * width} pixels; leave it out for the default or give at least {height * width}.",
            )
    if modality == "audio":
        options["max_audio_seconds"] = float(options["max_audio_seconds"])
        if options["max_audio_seconds"] < options["clip_seconds"]:
            raise fail(
                f"{prefix}.max_audio_seconds",
                f"got {options['max_audio_seconds']!r}, shorter than clip_seconds = {options['clip_seconds']!r}; "
                "leave it out for the default or give at least clip_seconds.",
            )


def _label(raw: Any, fail) -> LabelSpec:
    if not isinstance(raw, Mapping):
        raise fail("label", "must be a mapping with 'column' and 'class_names'.")
    _check_keys(raw, ("column", "class_names"), "label.", fail)
    names = raw.get("class_names")
    if not isinstance(names, list) or len(names) < 2:
        raise fail("label.class_names", f"got {names!r}, expected a list of at least 2 class names.")
    names = tuple(str(n) for n in names)
    if len(set(names)) != len(names):
        raise fail("label.class_names", f"class names must be unique, got {list(names)}.")
    return LabelSpec(column=str(raw.get("column", "label")), class_names=names)


def _splits(raw: Any, fail) -> dict[str, SplitSpec]:
    if not isinstance(raw, Mapping) or not raw:
        raise fail("splits", "must be a mapping of split name -> {manifest: ...} or {tfrecords: ...}.")
    splits = {}
    for name, item in raw.items():
        if isinstance(item, str):
            item = {"manifest": item}
        if not isinstance(item, Mapping):
            raise fail(f"splits.{name}", "must be a path or a mapping with 'manifest' or 'tfrecords'.")
        _check_keys(item, SPLIT_KEYS, f"splits.{name}.", fail)
        if (item.get("manifest") is None) == (item.get("tfrecords") is None):
            raise fail(f"splits.{name}", "give exactly one of 'manifest' and 'tfrecords'.")
        splits[str(name)] = SplitSpec(
            name=str(name),
            manifest=item.get("manifest"),
            tfrecords=item.get("tfrecords"),
            select=None if item.get("select") is None else str(item["select"]),
        )
    return splits
