"""The callbacks of a training run: backup, best model, early stopping and logs.

`make_callbacks` lists them in the order they must run at each epoch end:
replica statistics first, then logs, the best-model save and the backup, so a run killed at any
moment resumes from a state whose history and best model are already written. A `BackupSchedule`
shared by the last two writes them at the same epoch ends, at most every so many seconds.
"""
from __future__ import annotations

import importlib.util
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from mmkeras.branches.token_dropout import TokenDropout
from mmkeras.models.common import leaf_layers
from mmkeras.training.run_dir import RunPaths, fill_keras_save_cache, read_history, save_model


class BackupSchedule:
    """When a run writes its state: at an epoch's end, once `every_seconds` have passed since the last write.

    `BestModelCheckpoint` and `EpochAwareBackupAndRestore` share one, so
    they write at the same epoch ends: the best model on disk is then always
    the best of the epochs the backup holds, which a resumed run relies on.
    The decision is taken once per epoch (by whichever asks first), and the
    clock starts when training does (`start`) and again at every write
    (`wrote`).

    Args:
      every_seconds: the least time between two writes; 0 writes at every epoch end.
      clock: a function returning seconds (`time.monotonic`; tests pass their own).

    Example:
      >>> schedule = BackupSchedule(30.0)
      >>> callbacks = [BestModelCheckpoint(classifier, "run/best.keras", schedule=schedule),
      ...              EpochAwareBackupAndRestore("run/backup", schedule=schedule)]
    """

    def __init__(self, every_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.every_seconds = float(every_seconds)
        self.clock = clock
        self._last = clock()
        self._epoch: int | None = None
        self._due = True

    def start(self) -> None:
        """Start counting from now (training begins)."""
        self._last = self.clock()
        self._epoch = None

    def due(self, epoch: int) -> bool:
        """Whether the end of `epoch` writes (the same answer to every caller in that epoch)."""
        if epoch != self._epoch:
            self._epoch = epoch
            self._due = self.clock() - self._last >= self.every_seconds
        return self._due

    def wrote(self) -> None:
        """Record a write: the next is due `every_seconds` from now."""
        self._last = self.clock()


class EpochAwareBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose step-wise backups record the right epoch after a resume.

    Keras' callback learns the current epoch only when an epoch ends, so in a
    resumed run a backup taken every `save_freq` steps before the first epoch
    end records epoch 0, and a second kill would restart training from the
    beginning. Tracking the epoch when it begins fixes that. Step-wise
    backups are also taken at every epoch end, where Keras takes them only
    every `save_freq` steps.

    With a `schedule` (and `save_freq="epoch"`) an epoch's end is backed up
    only when the schedule says it is due.

    Args:
      backup_dir: the folder of the backup (used by nothing else).
      save_freq: "epoch", or back up every this many training steps too.
      schedule: a `BackupSchedule`, or None to back up at every epoch end.

    Raises:
      ValueError: for a schedule with step-wise backups.
    """

    def __init__(self, backup_dir, save_freq="epoch", schedule: BackupSchedule | None = None, **kwargs):
        super().__init__(backup_dir, save_freq=save_freq, **kwargs)
        if schedule is not None and save_freq != "epoch":
            raise ValueError("A backup schedule goes with save_freq='epoch': step-wise backups are written as asked.")
        self.schedule = schedule
        if save_freq == "epoch":
            # Nothing to do after a step: Keras' no-op hook instead of one that checks the step count
            # (a backend that runs hooks asynchronously could then run the steps without waiting on them).
            self.on_train_batch_end = keras.callbacks.Callback.on_train_batch_end.__get__(self)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.schedule is not None:
            self.schedule.start()

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.schedule is not None and not self.schedule.due(epoch):
            self._current_epoch, self._last_batch_seen = epoch + 1, 0  # what Keras' own method records
            return
        super().on_epoch_end(epoch, logs)
        if self.save_freq != "epoch":
            self._save_model()
            self._batches_seen_since_last_saving = 0

    def _save_model(self):
        fill_keras_save_cache()  # a quarter of each backup otherwise (`mmkeras.training.run_dir`)
        super()._save_model()
        if self.schedule is not None:
            self.schedule.wrote()


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """TensorBoard logs written once per epoch, with no work after each training step.

    Keras' `TensorBoard` logs per epoch by default (`update_freq="epoch"`) but
    still runs a hook after every step, which hands each of the step's logs to
    a summary call that writes nothing: on avmnist's defaults about 2 ms of a
    30-45 ms step (its twelve logs under gradient blending). This one logs the
    same epoch summaries (training and validation metrics, written by Keras)
    and leaves the step hooks to Keras' no-ops.

    Args:
      log_dir: the folder of the event files.
      **kwargs: other `keras.callbacks.TensorBoard` arguments, except
        `update_freq` and `profile_batch`, which need the step hooks.
    """

    def __init__(self, log_dir, **kwargs):
        for needs_steps in ("update_freq", "profile_batch"):
            if needs_steps in kwargs:
                raise ValueError(f"EpochTensorBoard logs per epoch only; use keras.callbacks.TensorBoard for "
                                 f"{needs_steps}={kwargs[needs_steps]!r}.")
        super().__init__(log_dir, update_freq="epoch", profile_batch=0, **kwargs)

    on_train_batch_begin = keras.callbacks.Callback.on_train_batch_begin
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end


class AwaitDecoding(keras.callbacks.Callback):
    """Wait, when the first epoch of a `fit` begins, for a split decoded ahead (`mmkeras.data.DecodeAhead`).

    Place it before the first callback that reads the split at an epoch's start, or anywhere to have the
    split ready for the epoch's first step. With `None` (nothing decoded ahead) it does nothing.

    Args:
      decoding: the split's `DecodeAhead`, or None.

    Raises:
      Whatever decoding the split raised, from `on_epoch_begin`.
    """

    def __init__(self, decoding):
        super().__init__()
        self.decoding = decoding

    def on_epoch_begin(self, epoch, logs=None):
        if self.decoding is not None:
            self.decoding.wait()
            self.decoding = None


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save a model to one `.keras` file whenever the monitored value improves.

    Unlike `keras.callbacks.ModelCheckpoint`, the saved model may differ from
    the one being fitted: training fits a view of the classifier with only its
    probabilities output, and this saves the full classifier (with every
    output) that shares its weights.

    With a `schedule`, an improvement at an epoch end that is not due keeps
    the model's weights in memory (a copy: milliseconds), and the file is
    written at the next due epoch end, or when training ends.

    Args:
      model: the model to save.
      filepath: the `.keras` file, overwritten at each improvement.
      monitor: the log key to watch, e.g. "val_loss".
      mode: "min" or "max": which direction is better.
      initial_best: the best value so far (a resumed run's), or None.
      schedule: a `BackupSchedule` (the backup's), or None to write at every improvement.

    Raises:
      ValueError: for a mode other than "min" or "max".

    Example:
      >>> BestModelCheckpoint(classifier, "run/best.keras", monitor="val_loss")
    """

    def __init__(self, model: keras.Model, filepath, monitor: str = "val_loss", mode: str = "min",
                 initial_best: float | None = None, schedule: BackupSchedule | None = None):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"`mode` must be 'min' or 'max', got {mode!r}.")
        self.model_to_save = model
        self.filepath = str(filepath)
        self.monitor = monitor
        self.mode = mode
        self.best = initial_best
        self.best_epoch: int | None = None
        self.schedule = schedule
        self._pending: list | None = None  # the best weights not yet written

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        value = None if value is None or math.isnan(float(value)) else float(value)
        improved = value is not None and (
            self.best is None or (value < self.best if self.mode == "min" else value > self.best))
        if improved:
            self.best, self.best_epoch = value, epoch
            self._pending = None
        if self.schedule is not None and not self.schedule.due(epoch):
            if improved:
                self._pending = self.model_to_save.get_weights()
            return
        if improved:
            save_model(self.model_to_save, self.filepath)
        else:
            self.flush()

    def on_train_end(self, logs=None):
        self.flush()

    def flush(self) -> None:
        """Write the best weights held in memory, if any, to the file (the model keeps its own weights)."""
        if self._pending is None:
            return
        current = self.model_to_save.get_weights()
        self.model_to_save.set_weights(self._pending)
        try:
            save_model(self.model_to_save, self.filepath)
        finally:
            self.model_to_save.set_weights(current)
        self._pending = None


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` that goes on counting from the epochs a resumed run already logged.

    Keras' callback starts from scratch at each `fit`, so a run killed after
    three epochs without improvement would wait `patience` more epochs after
    a resume, and could restore the weights of an epoch that was not the
    best. This one starts from the monitored values already in the run's
    history (best value, epochs since it), and when the best epoch came
    before the resume and nothing improves after it, restores the weights
    from the best-model file instead of from memory.

    Args:
      previous: the monitored value of each epoch already trained, in order.
      best_model_path: the `.keras` file holding the best epoch's classifier.
      classifier: the model saved there (its weights are the ones restored).
      **kwargs: `keras.callbacks.EarlyStopping` arguments; `mode` must be
        "min" or "auto" with a loss (what training monitors).

    Example:
      >>> ResumableEarlyStopping([0.9, 0.7], "run/best.keras", classifier, monitor="val_loss", patience=5)
    """

    def __init__(self, previous: Sequence[float], best_model_path, classifier: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.previous = [float(value) for value in previous]
        self.best_model_path = Path(best_model_path)
        self.classifier = classifier
        self.best_is_on_disk = False

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        finite = [(value, epoch) for epoch, value in enumerate(self.previous) if not math.isnan(value)]
        if finite:
            self.best, self.best_epoch = min(finite)
            self.wait = len(self.previous) - 1 - self.best_epoch
            self.best_is_on_disk = self.best_model_path.is_file()

    def on_epoch_end(self, epoch, logs=None):
        best_before = self.best
        super().on_epoch_end(epoch, logs)
        if self.best != best_before:
            self.best_is_on_disk = False

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_is_on_disk:
            self.best_weights = None  # Keras would restore the first epoch after the resume
            super().on_train_end(logs)
            self.classifier.load_weights(self.best_model_path)
            return
        super().on_train_end(logs)


class AverageReplicaStatistics(keras.callbacks.Callback):
    """Average the non-trainable float weights across replicas at each epoch end.

    Under a distribution strategy the gradients are summed across replicas,
    so trainable weights stay equal everywhere, but batch-norm moving means
    and variances are updated from each replica's own examples and drift
    apart. Averaging them once per epoch gives every replica (and every
    worker's saved model) statistics of all the data.

    Args:
      strategy: the `tf.distribute.Strategy` the model was built under.
    """

    def __init__(self, strategy):
        super().__init__()
        self.strategy = strategy

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        variables = [v for v in self.model.non_trainable_variables if "float" in str(v.dtype)]
        if not variables:
            return
        # One flat vector: a collective reduce packs the tensors it is given, which must then share one shape
        # (a token dropout's scalar strength and its per-token table do not).
        per_replica = self.strategy.run(lambda: tf.concat([tf.reshape(tf.cast(v.value, tf.float32), [-1])
                                                           for v in variables], axis=0))
        means = self.strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)
        sizes = [int(np.prod(variable.shape)) for variable in variables]
        for variable, mean in zip(variables, tf.split(means, sizes)):
            variable.assign(tf.cast(tf.reshape(mean, variable.shape), variable.dtype))


class RareTokenDropoutWarmup(keras.callbacks.Callback):
    """Ramps the text branches' frequency-aware token dropout in over the first part of training.

    Each `TokenDropout` with `rare` hides a word seen n times with probability
    `strength * alpha / (alpha + n)`. At the start of epoch e (0-based) of E this
    sets `strength = min(1, e / (warmup * E))`: the first epoch sees every word,
    full strength is reached after `warmup * E` epochs. Hiding rare words from
    the start slows what the model learns from them (tuxpaint at 10 epochs:
    0.620 against 0.649 without the dropout); ramped over the first half it
    keeps most of that speed (0.637) and ends higher at 20 epochs (0.720
    against 0.711 with full strength throughout and 0.686 without; 8 seeds,
    `benchmarks/results/generalising_defaults_notes.md`). The strength is set
    from the epoch number alone, so a resumed run picks up where it was; it is
    back at 1 when training ends, and goes into the logs as
    `rare_token_strength` (in `history.csv`).

    Args:
      warmup: the share of the epochs over which the strength rises, in [0, 1];
        0 uses full strength from the first epoch.

    Example:
      >>> model.fit(data, epochs=20, callbacks=[RareTokenDropoutWarmup(0.5)])
    """

    def __init__(self, warmup: float = 0.5):
        super().__init__()
        if isinstance(warmup, bool) or not 0.0 <= float(warmup) <= 1.0:
            raise ValueError(f"RareTokenDropoutWarmup `warmup` must be in [0, 1], got {warmup!r}.")
        self.warmup = float(warmup)
        self._layers: list[TokenDropout] = []
        self._strength = 1.0

    def on_train_begin(self, logs=None):
        self._layers = [layer for layer in leaf_layers(self.model)
                        if isinstance(layer, TokenDropout) and layer.strength is not None]

    def strength_at(self, epoch: int, epochs: int) -> float:
        """The strength for 0-based `epoch` of `epochs`."""
        ramp = self.warmup * epochs
        return 1.0 if ramp <= 0 else min(1.0, epoch / ramp)

    def on_epoch_begin(self, epoch, logs=None):
        if self._layers:
            self._strength = self.strength_at(epoch, int(self.params.get("epochs") or 1))
            for layer in self._layers:
                layer.strength.assign(self._strength)

    def on_epoch_end(self, epoch, logs=None):
        if self._layers and logs is not None:
            logs["rare_token_strength"] = self._strength

    def on_train_end(self, logs=None):
        for layer in self._layers:
            layer.strength.assign(1.0)


def make_callbacks(
    paths: RunPaths,
    model: keras.Model,
    *,
    monitor: str,
    early_stopping_patience: int | None,
    backup_every_steps: int | None = None,
    backup_every_seconds: float = 0.0,
    initial_epoch: int = 0,
    strategy=None,
    extra: Sequence[keras.callbacks.Callback] = (),
) -> list[keras.callbacks.Callback]:
    """Return the run's callbacks, writing into `paths`.

    - `AverageReplicaStatistics` when `strategy` has several replicas;
    - `CSVLogger` to `history.csv`, appending across resumes;
    - `EpochTensorBoard` to `tensorboard/` (when the `tensorboard` package is installed);
    - `BestModelCheckpoint` of the full `model` to `best.keras` on `monitor`,
      starting from the best value already in `history.csv` when resuming;
    - `ResumableEarlyStopping` on `monitor`, restoring the best weights
      and counting patience across resumes (unless `early_stopping_patience`
      is None);
    - `EpochAwareBackupAndRestore` in `backup/`, at each epoch end and every
      `backup_every_steps` steps, so the same call resumes a killed run (it
      is left in place when `fit` ends; the caller removes it); with
      `backup_every_seconds` (and no `backup_every_steps`), the backup and
      the best model are written at the epoch ends of a shared
      `BackupSchedule` instead;
    - then `extra`.

    Args:
      paths: the run folder's paths.
      model: the full classifier to save as the best model.
      monitor: the log key to watch ("val_loss", or "loss" without validation).
      early_stopping_patience: epochs without improvement before stopping, or None.
      backup_every_steps: also back up every this many steps, or None.
      backup_every_seconds: the least time between two epoch-end writes of
        the backup and the best model; 0 (the default here) writes at every
        epoch end. Not used with `backup_every_steps`.
      initial_epoch: the epoch a resumed run goes on from (0 for a new run):
        the history's first `initial_epoch` rows seed the best value and
        early stopping's patience.
      strategy: the distribution strategy, or None.
      extra: more callbacks, run last.

    Returns:
      The callbacks, in order.
    """
    # Epochs past `initial_epoch` were logged but not backed up: they are trained again.
    previous = read_history(paths.history_csv).get(monitor, [])[:initial_epoch]
    schedule = BackupSchedule(backup_every_seconds) if backup_every_seconds and not backup_every_steps else None
    callbacks = []
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        callbacks.append(AverageReplicaStatistics(strategy))
    callbacks.append(keras.callbacks.CSVLogger(str(paths.history_csv), append=True))
    if importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(EpochTensorBoard(log_dir=str(paths.tensorboard), write_graph=False))
    else:
        warnings.warn("TensorBoard is not installed, so no TensorBoard logs are written: `pip install tensorboard`.")
    callbacks.append(
        BestModelCheckpoint(
            model, paths.best_model, monitor=monitor,
            initial_best=min((value for value in previous if not math.isnan(value)), default=None), schedule=schedule,
        )
    )
    if early_stopping_patience is not None:
        callbacks.append(ResumableEarlyStopping(
            previous, paths.best_model, model, monitor=monitor, patience=early_stopping_patience,
            restore_best_weights=True,
        ))
    # The backup outlives `fit`: `train` removes it only once the final model is saved.
    callbacks.append(
        EpochAwareBackupAndRestore(str(paths.backup), save_freq=backup_every_steps or "epoch", schedule=schedule,
                                   delete_checkpoint=False)
    )
    return callbacks + list(extra)
