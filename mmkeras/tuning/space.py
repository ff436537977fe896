"""`SearchSpace`: which training options a search varies, and over which values.

A search space is written as plain data, the same in Python and in the
`search:` section of a run config:

    search:
      fusion: [concat, late, gated]                     # a list: one of these values
      units: [64, 128, 256]
      learning_rate: {min: 3.0e-4, max: 1.0e-2, sampling: log}   # a range
      dropout_rate: {min: 0.1, max: 0.5, step: 0.1}
      modality_dropout: 0.3                             # a single value: fixed in every trial
      weight_decay: null                                # null: not searched (the config's value)
      image.stages: [[16, 32], [24, 48, 96]]           # <modality or feature>.<branch option>
      include_defaults: true                            # start from DEFAULT_SEARCH_SPACE (the default)

A name is a field of `ModelConfig` or `TrainingConfig` (`fusion`, `units`,
`learning_rate`, `balance`, ...) or `<modality or feature>.<argument>` for an
argument of that branch's builder (`image.stages`, `audio.encoder`). The
user's entries replace or extend `DEFAULT_SEARCH_SPACE`; branch entries for
modalities the spec does not have are left out. KerasTuner hyperparameters
hold only numbers, strings and booleans, so a choice among lists (image
stages) is stored as the JSON text of each list and read back here.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mmkeras.branches import BRANCHES
from mmkeras.fusion import FUSIONS
from mmkeras.registry import lookup
from mmkeras.spec import DatasetSpec
from mmkeras.training.config import ModelConfig, TrainingConfig, make_config
from mmkeras.tuning._kerastuner import keras_tuner

# The space a search covers when the user gives none: the options the fusion and
# time-to-accuracy benchmarks showed to matter (rare-token dropout: +3.4 points on
# tuxpaint at 20 epochs, -1.2 at 10, so a search's budget decides). Read-only;
# `SearchSpace` copies it.
DEFAULT_SEARCH_SPACE: Mapping[str, Any] = types.MappingProxyType({
    "fusion": ("concat", "attention", "gated", "late", "low_rank_tensor"),
    "units": (64, 128, 256),
    "embed_dim": (64, 128),
    "dropout_rate": types.MappingProxyType({"min": 0.1, "max": 0.5, "step": 0.1}),
    "modality_dropout": types.MappingProxyType({"min": 0.0, "max": 0.5, "step": 0.1}),
    "balance": ("none", "aux_heads", "ogm_ge", "gradient_blending"),
    "learning_rate": types.MappingProxyType({"min": 3e-4, "max": 1e-2, "sampling": "log"}),
    "weight_decay": types.MappingProxyType({"min": 1e-4, "max": 1e-1, "sampling": "log"}),
    "image.stages": ((16, 32), (24, 48, 96), (32, 64, 128)),
    "audio.encoder": ("lstm", "conv1d"),
    "text.rare_token_dropout": (0.0, 0.25, 1.0),
})
# The switch between "extend the defaults" and "only my entries".
INCLUDE_DEFAULTS_KEY = "include_defaults"
RANGE_KEYS = ("min", "max", "step", "sampling")
SAMPLINGS = ("linear", "log", "reverse_log")
# Config fields a search may vary: what is learned and how (not where it runs).
SEARCHABLE_FIELDS = tuple(
    field.name for cls in (ModelConfig, TrainingConfig) for field in dataclasses.fields(cls)
    if field.name not in ("fusion_options", "branch_options", "epochs", "seed")
)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A checked search space: its entries, and how each becomes a KerasTuner hyperparameter.

    Build it with `make_search_space`; `hyperparameters()` gives the KerasTuner
    space and `training_options(values)` turns one trial's values back into
    `mmkeras.train` options.

    Args:
      entries: hyperparameter name -> a tuple of choices, a range mapping, or
        a fixed value, as described in the module docstring.
      modalities: feature name -> modality, for the branch entries.
    """

    entries: Mapping[str, Any]
    modalities: Mapping[str, str]

    def hyperparameters(self) -> keras_tuner.HyperParameters:
        """Return the KerasTuner space: one hyperparameter per entry, in order.

        Example:
          >>> make_search_space(spec, {"units": [8, 16], "include_defaults": False}).hyperparameters().space
          [Choice(name: 'units', values: [8, 16], ordered: True, default: 8)]
        """
        space = keras_tuner.HyperParameters()
        for name, entry in self.entries.items():
            if isinstance(entry, tuple):
                space.Choice(name, [_encode(value) for value in entry] if _is_encoded(entry) else list(entry))
            elif isinstance(entry, Mapping):
                integer = all(isinstance(entry.get(key, 1), int) for key in ("min", "max", "step"))
                make = space.Int if integer else space.Float
                make(name, entry["min"], entry["max"], step=entry.get("step"),
                     sampling=entry.get("sampling", "linear"))
            else:
                space.Fixed(name, _encode(entry) if _is_encoded(entry) else entry)
        return space

    def training_options(self, values: Mapping[str, Any], branch_options: Mapping[str, Any]) -> dict[str, Any]:
        """Turn one trial's hyperparameter values into `mmkeras.train` options.

        Args:
          values: the trial's values (KerasTuner's own `tuner/...` entries are skipped).
          branch_options: the fixed `ModelConfig.branch_options` the sampled
            branch options are merged into, per modality or feature.

        Returns:
          Config field -> value, with `branch_options` merged.

        Example:
          >>> space.training_options({"units": 64, "image.stages": "[16, 32]"}, {})
          {'units': 64, 'branch_options': {'image': {'stages': [16, 32]}}}
        """
        options: dict[str, Any] = {}
        merged = {key: dict(value) for key, value in branch_options.items()}
        for name, value in values.items():
            if name not in self.entries:
                continue
            if _is_encoded(self.entries[name]):
                value = json.loads(value)
            if "." in name:
                branch, option = name.split(".", 1)
                merged.setdefault(branch, {})[option] = value
            else:
                options[name] = value
        if merged:
            options["branch_options"] = merged
        return options

    def to_dict(self) -> dict[str, Any]:
        """The space as plain YAML/JSON data (tuples as lists), e.g. to compare with a saved search."""
        return json.loads(json.dumps({name: _plain(entry) for name, entry in self.entries.items()}))


def make_search_space(spec: DatasetSpec, search_space: Mapping[str, Any] | None = None) -> SearchSpace:
    """Check a search space against the spec and the configs, on top of the defaults.

    Args:
      spec: the dataset spec (its modalities decide which branch entries apply).
      search_space: entries that replace or extend `DEFAULT_SEARCH_SPACE`
        (None: the defaults alone); `include_defaults: false` starts from an
        empty space; an entry set to None is not searched.

    Returns:
      A `SearchSpace`.

    Raises:
      ValueError: for an unknown name (listing the searchable ones), a bad
        range, an empty choice, or a value a config rejects, naming the entry.

    Example:
      >>> make_search_space(load_spec("tiny"), {"fusion": ["concat", "late"], "weight_decay": None})
    """
    given = dict(search_space or {})
    include_defaults = given.pop(INCLUDE_DEFAULTS_KEY, True)
    if not isinstance(include_defaults, bool):
        raise ValueError(  # noqa: TRY004 - bad config values are ValueErrors everywhere in mmkeras
            f"search space: {INCLUDE_DEFAULTS_KEY} must be true or false, got {include_defaults!r}.")
    modalities = {feature.name: feature.modality for feature in spec.features}
    present = set(modalities.values()) | set(modalities)
    entries = {
        name: entry for name, entry in (DEFAULT_SEARCH_SPACE.items() if include_defaults else ())
        if "." not in name or name.split(".", 1)[0] in present
    }
    for name, entry in given.items():
        if entry is None:
            entries.pop(name, None)
        else:
            entries[name] = entry
    checked = {name: _check_entry(name, entry, modalities) for name, entry in entries.items()}
    return SearchSpace(entries=types.MappingProxyType(checked), modalities=types.MappingProxyType(modalities))


def load_search_space(path: str | os.PathLike) -> dict[str, Any]:
    """Read the `search:` section of a run config YAML file.

    Returns:
      The section's entries (an empty dict when the file has none).

    Raises:
      FileNotFoundError: if the file does not exist.
      ValueError: if the file is not YAML or its `search:` section is no mapping.

    Example:
      >>> load_search_space("run.yaml")
      {'fusion': ['concat', 'late'], 'units': [64, 128]}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No run config file {str(path)!r}. Give the path of a YAML run config.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    section = raw.get("search") if isinstance(raw, Mapping) else None
    if section is not None and not isinstance(section, Mapping):
        raise ValueError(f"{path}: the 'search' section must map option names to values or ranges, got {section!r}.")
    return dict(section or {})


def _check_entry(name: str, entry: Any, modalities: Mapping[str, str]) -> Any:
    """Check one entry; return it as a tuple of choices, a range mapping or a fixed value."""
    where = f"search space entry {name!r}"
    if not isinstance(name, str) or not name:
        raise ValueError(f"search space: entry names must be option names, got {name!r}.")
    if "." in name:
        _check_branch_option(name, modalities)
    elif name not in SEARCHABLE_FIELDS:
        raise ValueError(
            f"Unknown {where}. Searchable options are {list(SEARCHABLE_FIELDS)}, and "
            "'<modality or feature>.<branch argument>' such as 'image.stages'."
        )
    if isinstance(entry, Mapping):
        unknown = sorted(set(entry) - set(RANGE_KEYS))
        if unknown or "min" not in entry or "max" not in entry:
            raise ValueError(f"{where}: a range is {{min: ..., max: ..., step: ..., sampling: ...}} "
                             f"(min and max required), got {dict(entry)!r}.")
        if not all(isinstance(entry[key], (int, float)) and not isinstance(entry[key], bool)
                   for key in ("min", "max")) or entry["min"] >= entry["max"]:
            raise ValueError(f"{where}: a range needs numbers min < max, got {dict(entry)!r}.")
        if entry.get("sampling", "linear") not in SAMPLINGS:
            raise ValueError(f"{where}: sampling must be one of {list(SAMPLINGS)}, got {entry['sampling']!r}.")
        if entry.get("sampling") == "log" and entry["min"] <= 0:
            raise ValueError(f"{where}: a log range needs min > 0, got {entry['min']!r}.")
        _check_values(name, [entry["min"], entry["max"]], where)
        return types.MappingProxyType(dict(entry))
    if isinstance(entry, (list, tuple)):
        choices = tuple(_freeze(value) for value in entry)
        if not choices or len(set(map(_encode, choices))) != len(choices):
            raise ValueError(f"{where}: a choice needs distinct values, got {list(entry)!r}.")
        _check_values(name, choices, where)
        return choices
    _check_values(name, [entry], where)
    return _freeze(entry)


def _check_branch_option(name: str, modalities: Mapping[str, str]) -> None:
    branch, option = name.split(".", 1)
    modality = modalities.get(branch, branch)
    if modality not in set(modalities.values()):
        raise ValueError(
            f"Unknown search space entry {name!r}: {branch!r} is no feature or modality of the spec "
            f"(features {dict(modalities)}). Write '<modality or feature>.<branch argument>'."
        )
    arguments = [parameter for parameter in inspect.signature(lookup(BRANCHES, modality, "modality")).parameters
                 if parameter != "feature"]
    if option not in arguments:
        raise ValueError(f"Unknown search space entry {name!r}: the {modality} branch has no argument {option!r}; "
                         f"its arguments are {arguments}.")


def _check_values(name: str, values, where: str) -> None:
    """Let the configs (and the fusion table) judge each value an entry can take."""
    if "." in name:
        return  # branch arguments are checked by their builder, in the first trial
    for value in values:
        if name == "fusion":
            lookup(FUSIONS, value, "fusion")
        cls = ModelConfig if name in {field.name for field in dataclasses.fields(ModelConfig)} else TrainingConfig
        try:
            make_config(cls, {name: value})
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None


def _freeze(value: Any) -> Any:
    return tuple(_freeze(item) for item in value) if isinstance(value, (list, tuple)) else value


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return [_plain(item) for item in value] if isinstance(value, tuple) else value


def _is_encoded(entry: Any) -> bool:
    """Whether an entry's values are stored as JSON text.

    KerasTuner choices hold one type among int, float, str and bool; anything
    else (lists, None, mixed types) is stored as the JSON of each value.
    """
    if isinstance(entry, Mapping):
        return False
    kinds = {type(value) for value in (entry if isinstance(entry, tuple) else (entry,))}
    return len(kinds) != 1 or not kinds <= {int, float, str, bool}


def _encode(value: Any) -> str:
    return json.dumps(_plain(value))
