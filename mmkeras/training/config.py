"""Training configs, split by concern: what is learned, how long, where it runs.

`ModelConfig` says what is learned (the classifier's arguments),
`TrainingConfig` how it is learned (epochs, optimiser, loss, imbalance), and
`RuntimeConfig` where it runs (strategy, precision, compilation). Each is a
small frozen dataclass that validates itself; `load_run_config` is the one thin
adapter from YAML. Nothing here imports TensorFlow, so the CLI stays quick.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mmkeras.checks import is_integer, is_number, is_rate

OPTIMIZERS = ("adamw", "adam", "sgd")
LOSSES = ("crossentropy", "focal")
# The exponent each `class_weight` choice raises the balanced weights to; None weighs every class 1.
CLASS_WEIGHT_POWERS = {"balanced": 1.0, "sqrt": 0.5}
CLASS_WEIGHTS = (None, *CLASS_WEIGHT_POWERS)
BALANCES = ("none", "aux_heads", "ogm_ge", "gradient_blending")
LEARNING_RATE_SCHEDULES = ("constant", "cosine")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
VERBOSITIES = ("auto", 0, 1, 2)
# Top-level keys of a run config file; `spec` is the dataset spec's path or name,
# `features` the names of the features the model reads (a subset for unimodal baselines),
# `search` the search space `mmkeras tune` reads (`mmkeras.tuning.space`); training ignores it.
RUN_CONFIG_KEYS = ("spec", "features", "model", "training", "runtime", "search")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What is learned: the arguments of `build_classifier`.

    Args:
      fusion: a name in `mmkeras.FUSIONS`.
      units: width of the fused features.
      embed_dim: width of every branch's embedding.
      dropout_rate: dropout in branches, fusion and head, in [0, 1).
      modality_dropout: probability of hiding each modality of a training
        example, in [0, 1): one number for all, or a mapping keyed by
        modality or feature name with a rate for every feature (e.g.
        `{"text": 0.5, "image": 0.3, "audio": 0.3}`; `build_classifier`
        checks the keys against the spec).
      fusion_options: extra arguments of the fusion layer.
      branch_options: extra branch-builder arguments keyed by modality or
        feature name (e.g. `{"image": {"stages": [16, 32]}}`).

    Raises:
      ValueError: for a value out of range, naming the field.
    """

    fusion: str = "concat"
    units: int = 256
    embed_dim: int = 128
    dropout_rate: float = 0.3
    modality_dropout: float | Mapping[str, float] = 0.3
    fusion_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    branch_options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.fusion, str) or not self.fusion:
            raise ValueError(f"ModelConfig.fusion must be a fusion name such as 'concat', got {self.fusion!r}.")
        _check_positive_int(self, "units")
        _check_positive_int(self, "embed_dim")
        _check_rate(self, "dropout_rate")
        _check_modality_dropout(self)
        _check_mapping(self, "fusion_options")
        _check_mapping(self, "branch_options")
        for key, options in self.branch_options.items():
            if not isinstance(options, Mapping):
                raise ValueError(  # noqa: TRY004 - bad config values are ValueErrors everywhere in mmkeras
                    f"ModelConfig.branch_options[{key!r}] must be a mapping of branch arguments, got {options!r}."
                )


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """How long and how the model learns.

    The defaults suit small, noisy multimodal data: AdamW with a moderate
    weight decay (biases and normalisation scales are not decayed), a cosine
    learning-rate schedule, auxiliary per-modality heads so that no branch is
    left under-trained, and early stopping on the validation loss. On avmnist
    (concat fusion, modality dropout 0.3, 8 epochs, 2 seeds) the heads took
    test accuracy from 0.818 to 0.867 (benchmarks/results/avmnist_fusion.md).

    Args:
      epochs: number of passes over the training split.
      batch_size: the GLOBAL batch size (split across replicas).
      learning_rate: the optimiser's learning rate (before replica scaling).
        2e-3 by default: on avmnist it reached the logistic-regression floor
        an epoch sooner than 1e-3 and ended higher (time_to_accuracy.md).
      optimizer: one of `OPTIMIZERS` ("adamw", "adam", "sgd").
      weight_decay: AdamW's decoupled weight decay (ignored by the others).
      class_weight: None, "balanced" to weight each class by
        `n_examples / (n_classes * n_examples_of_class)` on the train split,
        or "sqrt" for the square roots of those weights (rescaled to a mean
        weight of 1 per example). "sqrt" by default: on tuxpaint (10 classes
        of 15 to 247 stamps, 8 seeds, 20 epochs) the fused model went from
        0.720 to 0.753 test accuracy (higher on 7 seeds) and macro-F1 from
        0.537 to 0.625, where "balanced" scored 0.717 and 0.601
        (`benchmarks/results/tuxpaint_blend_heads_class_weights.md`). On a
        split with equal classes every weight is 1 (avmnist: no change).
      loss: "crossentropy" or "focal" (down-weights easy examples).
      focal_gamma: the focal loss's focusing exponent (0 = crossentropy).
      label_smoothing: share of the target mass spread over all classes, in
        [0, 1). 0.1 by default: over 8 seeds on tuxpaint (516 training
        examples) the fused model went from 0.611 to 0.651 test accuracy,
        higher on every seed, and over 4 on avmnist from 0.913 to 0.925
        (`benchmarks/results/*_blend_heads_label_smoothing*.md`). The saved
        model is calibrated afterwards (temperature scaling), so its
        probabilities are not left softened.
      early_stopping_patience: epochs without improvement before stopping;
        None never stops early.
      scale_learning_rate_with_replicas: multiply the learning rate by the
        number of replicas in sync (use it when `batch_size` grows with them).
      learning_rate_schedule: "constant", or "cosine" (decay to zero over
        `epochs` after a linear warm-up of `warmup_epochs`).
      warmup_epochs: length of the cosine schedule's linear warm-up, in
        epochs (a fraction is fine; 0 starts at the full rate).
      balance: "none", "aux_heads" (a classifier per branch with its own
        loss), "ogm_ge" (aux heads plus gradient modulation) or
        "gradient_blending" (the default: the fused and aux heads' losses
        weighted by how each generalises, re-estimated every `blend_every`
        epochs on the validation data; without validation data `train`
        falls back to "aux_heads" with a warning); see
        `mmkeras.training.balance`. Gradient blending measured better than
        aux heads on avmnist (0.937 against 0.895, 2 seeds, 8 epochs) and no
        worse on tuxpaint (0.608 against 0.595), with higher accuracies with a
        modality absent on avmnist (benchmarks/results/*_gradient_blending.md).
      aux_weight: weight of the auxiliary heads' loss ("aux_heads", "ogm_ge").
      ogm_alpha: OGM-GE modulation strength.
      blend_every: epochs between two estimates of the gradient-blending
        weights (`mmkeras.training.blending`).
      blend_smoothing: the previous gradient-blending weights' share in each
        new estimate, in [0, 1): an exponential moving average that steadies
        weights estimated on a small validation split; 0 uses each
        estimate alone. 0.8 by default: alone, one epoch's estimate swings a
        head between the 0.05 floor and 0.9 from one epoch to the next, and
        the first one, taken while every head's training loss is still
        falling fast, gave the fused head 0.09 of the second epoch's loss
        on avmnist. With 0.8 the fused head keeps about a third: avmnist
        reached the logistic-regression floor in 16.4 s against 19.7 s and
        ended at 0.926 against 0.914, tuxpaint at 0.622 against 0.599, and
        every accuracy with a modality absent rose (2 seeds each,
        benchmarks/results/time_to_accuracy_*_intel_blend_smoothing.md).
      rare_token_warmup: the share of the epochs over which the text branches'
        frequency-aware token dropout (`rare_token_dropout`) ramps in from
        nothing to full strength, in [0, 1] (`RareTokenDropoutWarmup`); 0 uses
        full strength from the start. 0.5 by default: on tuxpaint (8 seeds)
        it ended at 0.720 against 0.711 with full strength throughout at 20
        epochs, and lost less at 10 (0.637 against 0.620; 0.649 without
        the dropout).
      seed: seed for weights, shuffling and dropout; None draws fresh ones.
      validation_fraction: when the spec has no "validation" split, the share
        of the train split held out for validation (stratified by class, or
        group-disjoint when the spec names a `group` column; see
        `mmkeras.data.validation.carve_validation`), recorded in the run
        folder; 0 holds nothing out (early stopping then watches the
        training loss). A spec's own validation split always wins.

    Raises:
      ValueError: for a value out of range, naming the field and the allowed values.
    """

    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 2e-3
    optimizer: str = "adamw"
    weight_decay: float = 1e-2
    class_weight: str | None = "sqrt"
    loss: str = "crossentropy"
    focal_gamma: float = 2.0
    label_smoothing: float = 0.1
    early_stopping_patience: int | None = 5
    scale_learning_rate_with_replicas: bool = False
    learning_rate_schedule: str = "cosine"
    warmup_epochs: float = 1.0
    balance: str = "gradient_blending"
    aux_weight: float = 0.5
    ogm_alpha: float = 0.5
    blend_every: int = 1
    blend_smoothing: float = 0.8
    rare_token_warmup: float = 0.5
    seed: int | None = None
    validation_fraction: float = 0.1

    def __post_init__(self):
        _check_positive_int(self, "epochs")
        _check_positive_int(self, "batch_size")
        _check_number(self, "learning_rate", minimum=0.0, inclusive=False)
        _check_choice(self, "optimizer", OPTIMIZERS)
        _check_number(self, "weight_decay", minimum=0.0)
        _check_choice(self, "class_weight", CLASS_WEIGHTS)
        _check_choice(self, "loss", LOSSES)
        _check_number(self, "focal_gamma", minimum=0.0)
        _check_rate(self, "label_smoothing")
        if self.early_stopping_patience is not None:
            _check_positive_int(self, "early_stopping_patience", allow_zero=True)
        _check_bool(self, "scale_learning_rate_with_replicas")
        _check_choice(self, "learning_rate_schedule", LEARNING_RATE_SCHEDULES)
        _check_number(self, "warmup_epochs", minimum=0.0)
        _check_choice(self, "balance", BALANCES)
        _check_number(self, "aux_weight", minimum=0.0)
        _check_number(self, "ogm_alpha", minimum=0.0)
        _check_positive_int(self, "blend_every")
        _check_rate(self, "blend_smoothing")
        _check_number(self, "rare_token_warmup", minimum=0.0)
        if self.rare_token_warmup > 1:
            raise _fail(self, "rare_token_warmup", "a number in [0, 1]")
        if self.seed is not None:
            _check_positive_int(self, "seed", allow_zero=True)
        _check_number(self, "validation_fraction", minimum=0.0)
        if self.validation_fraction >= 1:
            raise _fail(self, "validation_fraction", "a share below 1 (0 holds nothing out)")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and how fast the model runs: devices, precision, compilation.

    Args:
      strategy: "auto" (MirroredStrategy over the GPUs, else the default
        strategy), "default", "mirrored" or "multi_worker" (reads `TF_CONFIG`).
      mixed_precision: None (on GPU only), True or False. Half precision is
        `mixed_float16` on GPU and `mixed_bfloat16` on CPU, which only pays
        on CPUs with AMX-BF16 or AVX512-BF16 (`strategy.cpu_supports_bfloat16`).
      jit_compile: XLA compilation; None (on a single GPU only), True or
        False. Models with layers XLA cannot compile (text vectorisation,
        image augmentation) run without it.
      steps_per_execution: training steps per compiled call.
      fused_optimizer: apply Adam and AdamW with one fused TensorFlow op per
        variable (`mmkeras.training.optimizers`; the same updates, a smaller
        graph: on avmnist the first epoch traces faster and every step is
        shorter, see benchmarks/results/optimizer_step_avmnist.md). Ignored
        under a multi-replica strategy, where Keras' own update runs.
      backup_every_steps: also back up the training state every this many
        steps, so a run killed mid-epoch loses at most that many steps of
        learning; None backs up at the end of each epoch only.
      backup_every_seconds: at an epoch's end, write the backup (and the best
        model, held in memory since it improved) only once this many seconds
        have passed since the last write; 0 writes them at every epoch end.
        Each write costs about 0.1-0.3 s (Keras' saving walks the whole
        model); at 30 s (the default) a run whose epochs take 1-2 s spent
        6% (avmnist) to 15% (tuxpaint) of each epoch writing them, and now
        less than 1%, while a killed run loses at most that many seconds
        of training. `train` writes the best model when it ends, however
        long ago the last write was. Ignored (every epoch end is written)
        with `backup_every_steps` or a multi-worker strategy, whose workers
        must back up at the same epochs.
      verbose: Keras progress output: "auto" (a progress bar when the output
        is a terminal, one line per epoch otherwise), 0, 1 or 2.
      intra_op_threads: threads that one TensorFlow op may split its work
        over. None: 1 on a machine without GPUs and with at most 2 cores
        (there the step is many small ops, and the inter-op threads run them
        side by side: steps 0.68x on avmnist and 0.72x on tuxpaint, see
        benchmarks/results/step_options_*__threads.md), TensorFlow's default
        (one per core) elsewhere; 0: TensorFlow's default; N: N threads.
      inter_op_threads: threads that run independent ops at once; None or 0:
        TensorFlow's default (one per core); N: N threads. Both take effect
        only if set before the process's first TensorFlow op (`train` sets
        them first; an explicit value it cannot apply is warned about).

    Raises:
      ValueError: for a value out of range, naming the field and the allowed values.
    """

    strategy: str = "auto"
    mixed_precision: bool | None = None
    jit_compile: bool | None = None
    steps_per_execution: int = 1
    fused_optimizer: bool = True
    backup_every_steps: int | None = None
    backup_every_seconds: float = 30.0
    verbose: str | int = "auto"
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None

    def __post_init__(self):
        _check_choice(self, "strategy", STRATEGIES)
        for name in ("mixed_precision", "jit_compile"):
            if getattr(self, name) is not None:
                _check_bool(self, name)
        _check_positive_int(self, "steps_per_execution")
        _check_bool(self, "fused_optimizer")
        if self.backup_every_steps is not None:
            _check_positive_int(self, "backup_every_steps")
        _check_number(self, "backup_every_seconds", minimum=0.0)
        _check_choice(self, "verbose", VERBOSITIES)
        for name in ("intra_op_threads", "inter_op_threads"):
            if getattr(self, name) is not None:
                _check_positive_int(self, name, allow_zero=True)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything needed to rebuild a run: the spec and the three configs.

    Args:
      model: the `ModelConfig`.
      training: the `TrainingConfig`.
      runtime: the `RuntimeConfig`.
      spec: the dataset spec's path or bundled name, or None.
      features: the spec features the model reads, in order; None for all.
    """

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    spec: str | None = None
    features: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.features is not None:
            if isinstance(self.features, str) or not all(isinstance(name, str) for name in self.features):
                raise ValueError(f"RunConfig.features must be a list of feature names, got {self.features!r}.")
            object.__setattr__(self, "features", tuple(self.features))

    def to_dict(self) -> dict[str, Any]:
        """Return plain YAML-safe data: `{spec, features, model: {...}, training: {...}, runtime: {...}}`."""
        data = {"spec": self.spec} if self.spec is not None else {}
        if self.features is not None:
            data["features"] = list(self.features)
        for key in ("model", "training", "runtime"):
            data[key] = _plain(dataclasses.asdict(getattr(self, key)))
        return data


SECTIONS: Mapping[str, type] = {"model": ModelConfig, "training": TrainingConfig, "runtime": RuntimeConfig}


def load_run_config(path_or_dict: str | os.PathLike | Mapping[str, Any]) -> RunConfig:
    """Read a run config (YAML file or mapping) into its three configs.

    The one adapter between YAML and the dataclasses: sections and fields are
    checked by name, values by the dataclasses themselves. Missing sections
    and fields take their defaults.

    Args:
      path_or_dict: a YAML file path, or the parsed mapping
        `{spec: ..., features: [...], model: {...}, training: {...}, runtime: {...}}`.

    Returns:
      A `RunConfig`.

    Raises:
      FileNotFoundError: if the file does not exist.
      ValueError: for an unknown section or field (naming it and the allowed
        ones) or a bad value.

    Example:
      >>> config = load_run_config({"training": {"epochs": 3}, "runtime": {"strategy": "default"}})
      >>> config.training.epochs, config.model.fusion
      (3, 'concat')
    """
    where = "<run config>"
    raw = path_or_dict
    if not isinstance(path_or_dict, Mapping):
        path = Path(path_or_dict)
        if not path.is_file():
            raise FileNotFoundError(f"No run config file {str(path)!r}. Give the path of a YAML run config.")
        where = str(path)
        with open(path, encoding="utf-8") as stream:
            try:
                raw = yaml.safe_load(stream) or {}
            except yaml.YAMLError as error:
                raise ValueError(f"{where}: not valid YAML: {error}") from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: a run config must be a mapping with sections {list(RUN_CONFIG_KEYS)}.")  # noqa: TRY004
    for key in raw:
        if key not in RUN_CONFIG_KEYS:
            raise ValueError(f"{where}: unknown key {key!r}; allowed keys are {list(RUN_CONFIG_KEYS)}.")
    sections = {}
    for key, cls in SECTIONS.items():
        values = raw.get(key) or {}
        if not isinstance(values, Mapping):
            raise ValueError(f"{where}: section {key!r} must be a mapping of {cls.__name__} fields.")  # noqa: TRY004
        sections[key] = make_config(cls, values, where=f"{where}: {key}")
    spec = raw.get("spec")
    features = raw.get("features")
    if features is not None and not isinstance(features, list):
        raise ValueError(f"{where}: 'features' must be a list of feature names, got {features!r}.")
    return RunConfig(spec=None if spec is None else str(spec), features=features, **sections)


def save_run_config(config: RunConfig, path: str | os.PathLike) -> Path:
    """Write a `RunConfig` as YAML that `load_run_config` reads back unchanged.

    Returns:
      The file's path.
    """
    path = Path(path)
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    return path


def make_config(cls: type, values: Mapping[str, Any], *, where: str = "") -> Any:
    """Build config dataclass `cls` from a mapping, rejecting unknown field names.

    Raises:
      ValueError: naming the unknown field and the allowed ones.
    """
    allowed = [field.name for field in dataclasses.fields(cls)]
    for key in values:
        if key not in allowed:
            prefix = f"{where}: " if where else ""
            raise ValueError(f"{prefix}unknown {cls.__name__} field {key!r}; allowed fields are {allowed}.")
    return cls(**values)


def split_overrides(overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Sort keyword overrides into the section whose dataclass has that field.

    Field names are unique across the three configs, so `learning_rate=1e-4`
    goes to "training" and `mixed_precision=True` to "runtime".

    Returns:
      `{"model": {...}, "training": {...}, "runtime": {...}}`.

    Raises:
      ValueError: for a name that is no field of any config, listing them all.
    """
    owners = {field.name: key for key, cls in SECTIONS.items() for field in dataclasses.fields(cls)}
    sorted_overrides: dict[str, dict[str, Any]] = {key: {} for key in SECTIONS}
    for name, value in overrides.items():
        if name not in owners:
            raise ValueError(f"Unknown training option {name!r}; allowed options are {sorted(owners)}.")
        sorted_overrides[owners[name]][name] = value
    return sorted_overrides


def _plain(value: Any) -> Any:
    """Tuples to lists and mappings to dicts, recursively, for `yaml.safe_dump`."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _fail(config: Any, name: str, expected: str) -> ValueError:
    return ValueError(f"{type(config).__name__}.{name} must be {expected}, got {getattr(config, name)!r}.")


def _check_positive_int(config: Any, name: str, *, allow_zero: bool = False) -> None:
    # `mmkeras.checks` decides what an integer is; the message keeps the config's "Class.field" form.
    value = getattr(config, name)
    if not is_integer(value) or value < (0 if allow_zero else 1):
        raise _fail(config, name, "a non-negative integer" if allow_zero else "a positive integer")
    object.__setattr__(config, name, int(value))  # numpy integers stored as plain ints, for YAML


def _check_number(config: Any, name: str, *, minimum: float, inclusive: bool = True) -> None:
    value = getattr(config, name)
    if not is_number(value):
        raise _fail(config, name, "a number")
    if value < minimum or (not inclusive and value == minimum):
        raise _fail(config, name, f"{'>=' if inclusive else '>'} {minimum}")


def _check_rate(config: Any, name: str) -> None:
    if not is_rate(getattr(config, name)):
        raise _fail(config, name, "a number in [0, 1)")


def _check_modality_dropout(config: Any) -> None:
    # One rate, or a non-empty {modality or feature name: rate}; the names are checked against the spec later.
    value = config.modality_dropout
    if not isinstance(value, Mapping):
        _check_rate(config, "modality_dropout")
        return
    if not value:
        raise _fail(config, "modality_dropout", "a number in [0, 1) or a mapping {modality: rate} with entries")
    for key, rate in value.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"ModelConfig.modality_dropout's keys must be modality or feature names, got {key!r}.")
        if not is_rate(rate):
            raise ValueError(f"ModelConfig.modality_dropout[{key!r}] must be a number in [0, 1), got {rate!r}.")


def _check_choice(config: Any, name: str, choices: tuple) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or value not in choices:
        raise _fail(config, name, f"one of {list(choices)}")


def _check_bool(config: Any, name: str) -> None:
    if not isinstance(getattr(config, name), bool):
        raise _fail(config, name, "true or false")


def _check_mapping(config: Any, name: str) -> None:
    if not isinstance(getattr(config, name), Mapping):
        raise _fail(config, name, "a mapping")
