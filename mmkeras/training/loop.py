"""`train`: build, compile and fit a classifier under a distribution strategy, into a run folder.

One linear story: resolve the runtime (strategy, precision, XLA), prepare the
run folder (or find the backup of an unfinished run), build the datasets,
build and compile the model inside `strategy.scope()`, fit with the run's
callbacks, and write the final model and history. Calling `train` again with
the same `output_dir` resumes an unfinished run instead of starting over.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras

from mmkeras.data.common import LOGGER
from mmkeras.data.pipeline import DecodeAhead, make_dataset
from mmkeras.data.validation import with_validation_split
from mmkeras.datasets import prepare
from mmkeras.fusion import FUSIONS
from mmkeras.models.classifier import build_classifier
from mmkeras.registry import lookup
from mmkeras.spec import DEFAULT_SPECS_DIR, DatasetSpec, load_spec
from mmkeras.training.balance import BalancedTrainingView
from mmkeras.training.blending import GradientBlending
from mmkeras.training.calibration import calibrate_run
from mmkeras.training.callbacks import (
    AwaitDecoding,
    RareTokenDropoutWarmup,
    ResumableEarlyStopping,
    make_callbacks,
)
from mmkeras.training.class_weights import balanced_class_weights, split_labels
from mmkeras.training.config import (
    CLASS_WEIGHT_POWERS,
    ModelConfig,
    RunConfig,
    RuntimeConfig,
    TrainingConfig,
    load_run_config,
    save_run_config,
    split_overrides,
)
from mmkeras.training.losses import make_loss
from mmkeras.training.metrics import SparseMacroF1Score
from mmkeras.training.optimizers import FusedAdam, FusedAdamW
from mmkeras.training.run_dir import RunPaths, read_history, save_model
from mmkeras.training.schedules import WarmupCosineDecay
from mmkeras.training.strategy import ResolvedRuntime, precision_policy, resolve_runtime
from mmkeras.training.training_view import TrainingView

TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"
# Variables AdamW leaves undecayed: biases and normalisation offsets and scales.
NO_WEIGHT_DECAY = ("bias", "beta", "gamma")


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What `train` returns: the trained model, its history and where everything went.

    Attributes:
      model: the full trained classifier (all outputs), with the weights of
        its best epoch when early stopping is on, calibrated on the
        validation data when there was some (and `calibrate` was left on).
      history: `{metric: [value per epoch]}` over the whole run, resumed
        parts included, with an "epoch" list.
      run_dir: the run folder.
      best_model_path: `best.keras`, the classifier at its best monitored epoch.
      final_model_path: `final.keras`, the classifier as returned.
      config_path: `config.yaml`, enough to rebuild the run.
      history_csv_path: `history.csv`, one row per epoch.
      history_json_path: `history.json`, the same as `history`.
      tensorboard_dir: the TensorBoard log folder.
      initial_epoch: 0, or the epoch a resumed run went on from.
      runtime: the resolved runtime (`ResolvedRuntime.describe()`).
    """

    model: keras.Model
    history: dict[str, list[float]]
    run_dir: Path
    best_model_path: Path
    final_model_path: Path
    config_path: Path
    history_csv_path: Path
    history_json_path: Path
    tensorboard_dir: Path
    initial_epoch: int
    runtime: dict[str, Any]


def train(
    spec: DatasetSpec | str | os.PathLike,
    *,
    fusion: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    output_dir: str | os.PathLike | None = None,
    strategy: str | None = None,
    model_config: ModelConfig | None = None,
    training_config: TrainingConfig | None = None,
    runtime_config: RuntimeConfig | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    prepare_model: Callable[[keras.Model], Any] | None = None,
    calibrate: bool = True,
    **overrides: Any,
) -> TrainResult:
    """Train a multimodal classifier on a spec's train split, into a run folder.

    Configs come in three parts (see `mmkeras.training.config`); the keyword
    arguments override their fields, so `train("tiny", epochs=3,
    learning_rate=1e-4)` needs no config objects. The model is built and
    compiled inside the strategy's scope, the datasets yield the global batch,
    and the loss is taken on the classifier's "probabilities" output, with
    accuracy and macro-F1 tracked, and their `val_` twins on the validation
    split, which early stopping and the best model watch. A spec without a
    "validation" split gets one carved out of its train split
    (`validation_fraction`, default 0.1; group-disjoint when the spec names a
    `group`; see `mmkeras.data.validation.with_validation_split`), recorded
    in the run folder's `validation_split.json` so that a resumed run and
    `evaluate_run` use the same rows.

    The run folder (see `mmkeras.training.run_dir`) gets `config.yaml`,
    `best.keras`, `final.keras`, `history.csv`, `history.json`,
    `summary.json` and `tensorboard/`; while training, `backup/` holds the
    state that lets the same call resume a killed run, with the same total
    number of epochs. With validation data, the trained model is then
    calibrated on it (temperature scaling, see `mmkeras.calibrate`): the
    saved and returned models hold the temperature, and `calibration.json`
    records it.

    Args:
      spec: a `DatasetSpec`, or a spec's path or bundled name ("tiny").
      fusion: a name in `mmkeras.FUSIONS` (overrides `model_config.fusion`).
      epochs: number of epochs (overrides `training_config.epochs`).
      batch_size: the global batch size (overrides `training_config.batch_size`).
      output_dir: the run folder; by default `runs/<spec>-<fusion>-<time>`.
        An existing folder holding an unfinished run is resumed.
      strategy: "auto", "default", "mirrored" or "multi_worker" (overrides
        `runtime_config.strategy`).
      model_config, training_config, runtime_config: the configs (defaults
        when None).
      callbacks: extra Keras callbacks, run after the run's own.
      prepare_model: a function called with the built classifier inside the
        strategy scope, before compiling (e.g. to load weights or freeze
        layers, see `mmkeras.training.fine_tune`). A resumed run's backup is
        restored after it.
      calibrate: fit temperature scaling on the validation data after
        training (only when there is validation data).
      **overrides: any other field of the three configs, e.g.
        `learning_rate=1e-4`, `class_weight="balanced"`, `units=64`.

    Returns:
      A `TrainResult`.

    Raises:
      ValueError: for an unknown option or fusion, a bad value, or an
        unfinished run in `output_dir` whose model config differs.
      FileExistsError: if `output_dir` holds a finished run.

    Example:
      >>> result = train("tiny", fusion="attention", epochs=2, batch_size=8, output_dir="runs/tiny-attention")
      >>> sorted(result.history)
      ['accuracy', 'epoch', 'loss', 'macro_f1', 'val_accuracy', 'val_loss', 'val_macro_f1']
    """
    spec = spec if isinstance(spec, DatasetSpec) else load_spec(spec)
    named = {"fusion": fusion, "epochs": epochs, "batch_size": batch_size, "strategy": strategy}
    config = make_run_config(
        spec, model_config, training_config, runtime_config,
        **{key: value for key, value in named.items() if value is not None}, **overrides,
    )
    # Before any data is read: a background decode still running when a bad option ends the process aborts it.
    lookup(FUSIONS, config.model.fusion, "fusion")
    runtime = resolve_runtime(config.runtime)  # first: a multi-worker strategy must set TensorFlow up
    paths = _run_paths(spec, config, output_dir, runtime)
    initial_epoch = _start_run(paths, config)
    training = config.training
    verbose = _verbosity(config.runtime.verbose)
    if initial_epoch and verbose:
        print(f"Resuming the run in {paths.run_dir} at epoch {initial_epoch + 1}/{training.epochs}.", flush=True)
    if training.seed is not None:
        keras.utils.set_random_seed(training.seed)
    data_seed = training.seed
    # Workers shard the training data by element (DATA policy): each must see the same order,
    # so the shuffle seed is shared and the parallel reads keep their order.
    multi_worker = runtime.strategy_name == "multi_worker"
    if data_seed is None and multi_worker:
        data_seed = 0

    prepare(spec)
    spec, carve = with_validation_split(spec, training.validation_fraction, seed=training.seed or 0,
                                        record=paths.validation_split)
    if verbose and carve is not None:
        print(f"{carve.describe()} Recorded in {paths.validation_split}.", flush=True)
    elif verbose and VALIDATION_SPLIT not in spec.splits:
        print("No validation split (validation_fraction=0): early stopping and the best model watch the "
              "training loss.", flush=True)
    config = _balance_for_validation(spec, config, paths)
    training = config.training
    # Without a distribution strategy `fit` reads the pipelines as built, so their caches can be filled in the
    # background while the model is built and traced (a strategy rewrites them, and would decode again).
    ahead = runtime.strategy_name == "default"
    decodings: list[DecodeAhead | None] = []  # waited for if the set-up fails (see `_settled`)
    with _settled(decodings):
        train_data, train_report, train_decoding = _make_dataset(
            spec, TRAIN_SPLIT, ahead, batch_size=training.batch_size, training=True, seed=data_seed,
            deterministic=True if multi_worker else None,
        )
        decodings.append(train_decoding)
        validation_data = validation_decoding = None
        if VALIDATION_SPLIT in spec.splits:
            validation_data, _, validation_decoding = _make_dataset(spec, VALIDATION_SPLIT, ahead,
                                                                    batch_size=training.batch_size)
            decodings.append(validation_decoding)
        class_weight = None
        if training.class_weight is not None:
            class_weight = balanced_class_weights(split_labels(spec, TRAIN_SPLIT), spec.num_classes,
                                                  power=CLASS_WEIGHT_POWERS[training.class_weight])

        steps_per_epoch = max(train_report.kept // training.batch_size, 1)
        model, trainer = build_and_compile(spec, config.model, training, runtime, prepare_model=prepare_model,
                                           steps_per_epoch=steps_per_epoch)
        runtime = dataclasses.replace(runtime, jit_compile=bool(trainer.jit_compile))  # Keras may refuse XLA
        trainer.build_for(train_data.element_spec)  # so that the first step is traced once, not twice

    monitor = "val_loss" if validation_data is not None else "loss"
    # Blending first: its weights go into the epoch's logs before they are written, and into the backup.
    blending = []
    if training.balance == "gradient_blending":
        blending.append(GradientBlending(validation_data, blend_every=training.blend_every,
                                         smoothing=training.blend_smoothing))
    # The validation split must be in its cache before blending evaluates the untrained model, the training
    # split before the first epoch's iterator is made.
    run_callbacks = [AwaitDecoding(validation_decoding), *blending, AwaitDecoding(train_decoding),
                     RareTokenDropoutWarmup(training.rare_token_warmup), *make_callbacks(
        paths, model, monitor=monitor, early_stopping_patience=training.early_stopping_patience,
        backup_every_steps=config.runtime.backup_every_steps, initial_epoch=initial_epoch, strategy=runtime.strategy,
        # Workers must back up at the same epochs: each would judge the time by its own clock.
        backup_every_seconds=0.0 if multi_worker else config.runtime.backup_every_seconds, extra=callbacks,
    )]
    started = time.time()
    with _settled(decodings):  # an error (or Ctrl-C) before the first epoch's wait leaves a split decoding
        trainer.fit(
            train_data, validation_data=validation_data, epochs=training.epochs,
            class_weight=class_weight, callbacks=run_callbacks, verbose=verbose, shuffle=False,
        )
    if calibrate and validation_data is not None:
        with runtime.strategy.scope():  # the temperature's variable is made where the model's were
            model = calibrate_run(model, validation_data, paths, best_is_final=_restored_best(run_callbacks),
                                  verbose=bool(verbose))
    else:
        save_model(model, paths.final_model)
    history = read_history(paths.history_csv)
    paths.history_json.write_text(json.dumps(history, indent=1), encoding="utf-8")
    _write_summary(paths, spec, config, runtime, history, monitor, initial_epoch, class_weight, model,
                   seconds=time.time() - started, carve=carve)
    shutil.rmtree(paths.backup, ignore_errors=True)  # last: until now a rerun would resume
    return TrainResult(
        model=model,
        history=history,
        run_dir=paths.run_dir,
        best_model_path=paths.best_model,
        final_model_path=paths.final_model,
        config_path=paths.config,
        history_csv_path=paths.history_csv,
        history_json_path=paths.history_json,
        tensorboard_dir=paths.tensorboard,
        initial_epoch=initial_epoch,
        runtime=runtime.describe(),
    )


def _make_dataset(spec: DatasetSpec, split: str, ahead: bool, **options: Any) -> tuple:
    """`make_dataset(spec, split, **options)`, its `ScanReport` (how many examples it keeps: no second scan to count
    them) and its `DecodeAhead` when `ahead` (else, or when the split is not cached, None)."""
    if not ahead:
        return (*make_dataset(spec, split, return_report=True, **options), None)
    return make_dataset(spec, split, decode_ahead=True, return_report=True, **options)


@contextlib.contextmanager
def _settled(decodings: Sequence[DecodeAhead | None]):
    """Let the splits decoding in the background finish before an error leaves `train`: a process that exits
    while a tf.data pass still runs in a thread can abort in TensorFlow's C++ teardown, hiding the error.
    `decodings` is read when the error comes, so a list filled inside the block covers what started by then."""
    try:
        yield
    except BaseException:
        for decoding in decodings:
            if decoding is not None:
                with contextlib.suppress(Exception):  # the error being raised is the one to report
                    decoding.wait()
        raise


def _restored_best(run_callbacks: Sequence[keras.callbacks.Callback]) -> bool:
    """Whether the run's early stopping put the best epoch's weights (those of `best.keras`) back at the end.

    It restores them whenever it is on (`ResumableEarlyStopping`, from the best-model file after a resume),
    unless the user added an `EarlyStopping` of their own, which runs after it and restores weights of its
    own choosing.
    """
    ours = [callback for callback in run_callbacks if isinstance(callback, ResumableEarlyStopping)]
    others = [callback for callback in run_callbacks
              if isinstance(callback, keras.callbacks.EarlyStopping) and callback not in ours]
    return bool(ours) and ours[0].restore_best_weights and not others


def build_and_compile(
    spec: DatasetSpec,
    model_config: ModelConfig,
    training: TrainingConfig,
    runtime: ResolvedRuntime,
    *,
    prepare_model: Callable[[keras.Model], Any] | None = None,
    steps_per_epoch: int | None = None,
) -> tuple[keras.Model, keras.Model]:
    """Build the classifier and its compiled `TrainingView` under the runtime's strategy and precision.

    Args:
      spec: the dataset spec.
      model_config: the classifier's arguments.
      training: optimiser, loss and seed.
      runtime: the resolved runtime (strategy, precision, XLA, steps per execution).
      prepare_model: called with the built classifier before compiling, or None.
      steps_per_epoch: training steps per epoch (needed by the "cosine" schedule).

    Returns:
      `(classifier, trainer)`: the full classifier (every output; the model to
      save) and the compiled view of it that `fit` trains. They share weights.
      `trainer.jit_compile` says whether Keras accepted XLA for this model.

    Example:
      >>> model, trainer = build_and_compile(spec, ModelConfig(), TrainingConfig(), resolve_runtime())
      >>> trainer.fit(make_dataset(spec, "train", training=True), epochs=1)
    """
    with runtime.strategy.scope(), precision_policy(runtime.mixed_precision, runtime.device_type):
        balanced = training.balance != "none"
        model = build_classifier(spec, seed=training.seed, aux_heads=balanced, **dataclasses.asdict(model_config))
        if prepare_model is not None:
            prepare_model(model)
        if balanced:
            trainer = BalancedTrainingView(
                model, method=training.balance, aux_weight=training.aux_weight, alpha=training.ogm_alpha
            )
        else:
            trainer = TrainingView(model)
        learning_rate = effective_learning_rate(training, runtime)
        if training.learning_rate_schedule == "cosine":
            learning_rate = cosine_schedule(learning_rate, training.epochs, steps_per_epoch,
                                            warmup_epochs=training.warmup_epochs)
        trainer.compile(
            optimizer=make_optimizer(training, learning_rate, fused=runtime.fused_optimizer),
            loss=make_loss(training),
            metrics=["accuracy", SparseMacroF1Score(spec.num_classes)],
            jit_compile=runtime.jit_compile,
            steps_per_execution=runtime.steps_per_execution,
        )
        # Outside a strategy Keras creates the optimizer's slots while tracing the first step, where
        # each variable is lifted out of the graph one by one (about a third of the first step's
        # trace on avmnist); created here, eagerly, they cost milliseconds.
        trainer.optimizer.build(trainer.trainable_variables)
    return model, trainer


def make_run_config(
    spec: DatasetSpec,
    model_config: ModelConfig | None = None,
    training_config: TrainingConfig | None = None,
    runtime_config: RuntimeConfig | None = None,
    **overrides: Any,
) -> RunConfig:
    """Combine the three configs (defaults when None) with keyword overrides of their fields.

    Raises:
      ValueError: for an unknown field name or a bad value.

    Example:
      >>> make_run_config(spec, epochs=3, fusion="gated").model.fusion
      'gated'
    """
    sections = split_overrides(overrides)
    return RunConfig(
        model=dataclasses.replace(model_config or ModelConfig(), **sections["model"]),
        training=dataclasses.replace(training_config or TrainingConfig(), **sections["training"]),
        runtime=dataclasses.replace(runtime_config or RuntimeConfig(), **sections["runtime"]),
        spec=_spec_reference(spec),
        features=spec.feature_names,
    )


def _spec_reference(spec: DatasetSpec) -> str:
    """A bundled spec's name (portable across machines), else its file's path, else its name."""
    if spec.path is None:
        return spec.name
    path = Path(spec.path).resolve()
    return spec.name if path == (DEFAULT_SPECS_DIR / f"{spec.name}.yaml").resolve() else str(path)


def effective_learning_rate(training: TrainingConfig, runtime: ResolvedRuntime) -> float:
    """The learning rate the optimiser gets: scaled by the replica count when the config asks for it.

    Example:
      >>> effective_learning_rate(TrainingConfig(learning_rate=1e-3, scale_learning_rate_with_replicas=True),
      ...                         runtime_with_two_replicas)
      0.002
    """
    scale = runtime.num_replicas if training.scale_learning_rate_with_replicas else 1
    return float(training.learning_rate) * scale


def cosine_schedule(learning_rate: float, epochs: int, steps_per_epoch: int | None, *, warmup_epochs: float = 1.0):
    """Cosine decay to zero over the run after a linear warm-up of `warmup_epochs` (one by default).

    The warm-up keeps the first steps of a freshly initialised model (batch
    norm statistics still settling) from overshooting; the decay lets the
    last epochs settle instead of bouncing between minima. A one-epoch run
    has no warm-up, and a warm-up never takes the whole run.

    Raises:
      ValueError: if `steps_per_epoch` is unknown.
    """
    if not steps_per_epoch:
        raise ValueError("The cosine learning-rate schedule needs `steps_per_epoch`.")
    total = epochs * steps_per_epoch
    warmup = min(round(warmup_epochs * steps_per_epoch), total - 1) if epochs > 1 else 0
    return WarmupCosineDecay(learning_rate, decay_steps=max(total - warmup, 1), warmup_steps=warmup)


def make_optimizer(config: TrainingConfig, learning_rate, fused: bool = True) -> keras.optimizers.Optimizer:
    """Return the optimiser a `TrainingConfig` names, at `learning_rate` (a float or a schedule).

    AdamW decays every weight but biases and normalisation parameters; SGD
    uses Nesterov momentum 0.9. Adam and AdamW are Keras' own updates applied
    with one fused TensorFlow op per variable (`mmkeras.training.optimizers`),
    which shortens the first epoch's tracing and every step; `fused=False`
    gives Keras' own classes.

    Example:
      >>> make_optimizer(TrainingConfig(), 1e-3).weight_decay
      0.01
    """
    if config.optimizer == "adamw":
        optimizer = (FusedAdamW if fused else keras.optimizers.AdamW)(learning_rate, weight_decay=config.weight_decay)
        optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
        return optimizer
    if config.optimizer == "adam":
        return (FusedAdam if fused else keras.optimizers.Adam)(learning_rate)
    return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)


def _balance_for_validation(spec: DatasetSpec, config: RunConfig, paths: RunPaths) -> RunConfig:
    """Gradient blending weighs heads by their validation losses: without any, train with aux heads instead.

    Decided on the spec after carving (no split of its own, and none carved:
    validation_fraction=0, or a TFRecord train split); the run's
    `config.yaml` is rewritten to record the balance that is used.
    """
    training = config.training
    if training.balance != "gradient_blending" or VALIDATION_SPLIT in spec.splits:
        return config
    LOGGER.warning(
        "balance='gradient_blending' needs validation data to measure how each head generalises, but the spec %r "
        "has no 'validation' split and none was carved: training with balance='aux_heads' instead. Give it a "
        "validation split, or validation_fraction > 0 (default 0.1) for a manifest train split, to blend.",
        spec.name,
    )
    config = dataclasses.replace(config, training=dataclasses.replace(training, balance="aux_heads"))
    save_run_config(config, paths.config)
    return config


def _run_paths(spec: DatasetSpec, config: RunConfig, output_dir, runtime: ResolvedRuntime) -> RunPaths:
    if output_dir is None:
        output_dir = Path("runs") / f"{spec.name}-{config.model.fusion}-{time.strftime('%Y%m%d-%H%M%S')}"
    paths = RunPaths(Path(output_dir))
    # Non-chief workers write their own copies aside, never over the chief's files.
    return paths if runtime.is_chief else paths.worker(runtime.task_name)


def _start_run(paths: RunPaths, config: RunConfig) -> int:
    """Create the run folder or check the unfinished run in it; return the epoch to go on from."""
    initial_epoch = 0
    if paths.can_resume():
        if paths.config.is_file():
            saved = load_run_config(paths.config).to_dict()["model"]
            if saved != config.to_dict()["model"]:
                raise ValueError(
                    f"{paths.run_dir} holds an unfinished run with another model config ({saved}); its backup "
                    "cannot be restored into this model. Use the same model options to resume, or another output_dir."
                )
        metadata = paths.backup / "training_metadata.json"
        if metadata.is_file():
            initial_epoch = int(json.loads(metadata.read_text(encoding="utf-8")).get("epoch", 0))
    elif paths.final_model.exists():
        raise FileExistsError(
            f"{paths.run_dir} already holds a finished run ({paths.final_model.name}). "
            "Give another output_dir, or delete that folder to train again."
        )
    else:
        # A run killed before its first backup (see `RuntimeConfig.backup_every_seconds`) starts over:
        # the epochs it logged and the best model it wrote belong to no state that can be resumed.
        for stale in (paths.history_csv, paths.best_model):
            stale.unlink(missing_ok=True)
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    save_run_config(config, paths.config)
    return initial_epoch


def _verbosity(verbose: str | int) -> int:
    """Keras' progress output: a progress bar in a terminal, one line per epoch in logs."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(verbose)


def _write_summary(paths, spec, config, runtime, history, monitor, initial_epoch, class_weight, model, *, seconds,
                   carve=None):
    values = history.get(monitor, [])
    finite = [(value, epoch) for value, epoch in zip(values, history.get("epoch", [])) if not math.isnan(value)]
    best_value, best_epoch = min(finite) if finite else (None, None)
    summary = {
        "spec": spec.name,
        "fusion": config.model.fusion,
        "epochs_requested": config.training.epochs,
        "epochs_completed": len(history.get("epoch", [])),
        "initial_epoch": initial_epoch,
        "monitor": monitor,
        "best_epoch": best_epoch,
        "best_value": best_value,
        "learning_rate": effective_learning_rate(config.training, runtime),
        "class_weight": None if class_weight is None else {str(k): v for k, v in class_weight.items()},
        "num_parameters": int(model.count_params()),
        "validation_split": None if carve is None else {
            "carved": len(carve.validation_rows), "of": len(carve.train_rows) + len(carve.validation_rows),
            "group": carve.group, "file": paths.validation_split.name,
        },
        "train_seconds": round(seconds, 2),
        "runtime": runtime.describe(),
    }
    paths.summary.write_text(json.dumps(summary, indent=1), encoding="utf-8")
