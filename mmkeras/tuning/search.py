"""`tune`: a KerasTuner search over fusions, branches and training options, each trial a `mmkeras.train` run.

KerasTuner's oracle (Hyperband, Bayesian optimisation or random search) picks
each trial's hyperparameters; the trial itself is `mmkeras.train` into its own
run folder, so it goes through the same pipeline, losses, strategy scope and
callbacks as any run, and any trial (the best one first) exports with
`mmkeras export`. The output folder:

    <output_dir>/
      search.json        the search's settings, checked when a rerun resumes it
      kerastuner/        KerasTuner's project (oracle state, one trial.json per trial)
      trials/trial-<id>/ each trial's run folder (config.yaml, best.keras, history.csv, ...)
      trials.csv         one row per trial: hyperparameters, objective, epochs, seconds
      best_config.yaml   the best trial's run config: `mmkeras train SPEC --config best_config.yaml`
      search.png         the objective against the most influential hyperparameters

Rerunning the same call resumes the search: finished trials are kept, and the
trial that was running when the search was killed is run again, resuming its
own run folder from its last backup (so at most that trial's last epoch is lost).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras

from mmkeras.checks import check_positive_int
from mmkeras.registry import lookup
from mmkeras.spec import DatasetSpec, load_spec
from mmkeras.training.config import RunConfig, load_run_config, save_run_config
from mmkeras.training.loop import VALIDATION_SPLIT, make_run_config, train
from mmkeras.training.run_dir import RunPaths, read_history
from mmkeras.tuning._kerastuner import keras_tuner
from mmkeras.tuning.report import influence, plot_search, write_trials_csv
from mmkeras.tuning.space import SearchSpace, load_search_space, make_search_space

ORACLES = {
    "hyperband": keras_tuner.oracles.HyperbandOracle,
    "bayesian": keras_tuner.oracles.BayesianOptimizationOracle,
    "random": keras_tuner.oracles.RandomSearchOracle,
}
PROJECT_NAME = "kerastuner"
TRIALS_DIR = "trials"
TRIALS_CSV = "trials.csv"
BEST_CONFIG = "best_config.yaml"
PLOT = "search.png"
SEARCH_RECORD = "search.json"
# Hyperband's successive halving keeps the best third of each round.
HYPERBAND_FACTOR = 3


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """What `tune` returns: the best trial, every trial, and where the files went.

    Attributes:
      best_config: the best trial's `RunConfig` (the search's epochs per trial).
      best_config_path: `best_config.yaml`, for `mmkeras train SPEC --config`.
      best_trial: the best trial's id.
      best_value: its objective value (the best epoch's).
      best_run_dir: the best trial's run folder (exportable like any run).
      objective: the objective's name, e.g. "val_accuracy".
      trials: one dict per trial (the rows of `trials.csv`), in start order.
      trials_csv_path: `trials.csv`.
      plot_path: `search.png`.
      influence: hyperparameter -> how much it moved the objective (see
        `mmkeras.tuning.report.influence`), highest first.
      output_dir: the search's folder.
      trials_run: how many trials this call ran (the rest were done before).
    """

    best_config: RunConfig
    best_config_path: Path
    best_trial: str
    best_value: float
    best_run_dir: Path
    objective: str
    trials: tuple[dict[str, Any], ...]
    trials_csv_path: Path
    plot_path: Path
    influence: dict[str, float]
    output_dir: Path
    trials_run: int


def tune(
    spec: DatasetSpec | str | os.PathLike,
    *,
    search_space: Mapping[str, Any] | str | os.PathLike | None = None,
    algorithm: str = "hyperband",
    max_trials: int = 10,
    epochs: int = 5,
    objective: str = "val_accuracy",
    output_dir: str | os.PathLike | None = None,
    seed: int = 0,
    **train_options: Any,
) -> TuneResult:
    """Search fusions, branch shapes and training options with KerasTuner; every trial is a `train` run.

    Use it instead of a hand-run grid: the best fusion and options differ by
    dataset. Each trial trains `epochs` epochs (Hyperband: at most `epochs`,
    promising trials going on from shorter ones' weights) on the train split
    and is scored on the validation split; trials are not calibrated (the
    score is accuracy; retraining `best_config.yaml` with `train` calibrates).
    `train_options` are fixed in every
    trial (e.g. `batch_size=64` or `model_config=...`) and are what the space
    does not vary; trials run quietly (`verbose=0`) unless they say otherwise,
    and a line per trial reports its result.

    Args:
      spec: a `DatasetSpec`, or a spec's path or bundled name; it needs a
        "validation" split.
      search_space: entries that narrow or extend `DEFAULT_SEARCH_SPACE`
        (see `mmkeras.tuning.space`), or a run config YAML whose `search:`
        section they are (its model/training/runtime sections then fix the
        trials' other options). None: the default space.
      algorithm: "hyperband", "bayesian" or "random".
      max_trials: the number of trials, the ones of earlier calls included
        (raise it and rerun to search further).
      epochs: epochs per trial (Hyperband's largest budget).
      objective: a metric of the run history, e.g. "val_accuracy",
        "val_macro_f1" or "val_loss" (minimised, as is any "loss").
      output_dir: the search's folder; by default `tuning/<spec>-<algorithm>`.
        A folder holding an unfinished search with the same settings resumes it.
      seed: seeds KerasTuner's sampling and, unless the options set one, each
        trial's training, so trials differ only in their hyperparameters.
      **train_options: `mmkeras.train` options fixed in every trial: config
        fields (`batch_size=64`, `early_stopping_patience=2`), config objects
        (`model_config=...`) or `callbacks`.

    Returns:
      A `TuneResult`.

    Raises:
      ValueError: for a spec without a validation split and validation_fraction 0, an unknown algorithm,
        objective or option, a bad search space, a folder holding a search
        with other settings, or a trial whose options a config rejects.
      ImportError: when KerasTuner is missing (`pip install "mmkeras[tune]"`).

    Example:
      >>> result = tune("tiny", algorithm="random", max_trials=2, epochs=1, output_dir="tuning/tiny")
      >>> result.best_config_path.name, len(result.trials)
      ('best_config.yaml', 2)
    """
    spec = spec if isinstance(spec, DatasetSpec) else load_spec(spec)
    oracle_class = lookup(ORACLES, algorithm, "search algorithm")
    check_positive_int(max_trials, "max_trials")
    check_positive_int(epochs, "epochs")
    check_positive_int(seed, "seed", allow_zero=True)
    if isinstance(search_space, (str, os.PathLike)):
        file_config = load_run_config(search_space)
        for key in ("model", "training", "runtime"):
            train_options.setdefault(f"{key}_config", getattr(file_config, key))
        search_space = load_search_space(search_space)
    space = make_search_space(spec, search_space)
    callbacks = tuple(train_options.pop("callbacks", ()))
    base = make_run_config(spec, **train_options)
    spec = search_spec(spec, base.training.validation_fraction)
    if base.training.seed is None:
        base = dataclasses.replace(base, training=dataclasses.replace(base.training, seed=seed))
    quiet = "verbose" not in train_options and base.runtime.verbose == "auto"  # the per-trial line says enough
    trial_runtime = dataclasses.replace(base.runtime, verbose=0) if quiet else base.runtime

    output = Path(output_dir) if output_dir is not None else Path("tuning") / f"{spec.name}-{algorithm}"
    _check_search_record(output, {
        "spec": spec.name, "algorithm": algorithm, "objective": objective, "epochs": epochs, "seed": seed,
        "search_space": space.to_dict(),
        "fixed": {key: value for key, value in base.to_dict().items() if key in ("model", "training")},
    })
    direction = "min" if "loss" in objective else "max"
    oracle_options = {"max_epochs": epochs, "factor": HYPERBAND_FACTOR, "hyperband_iterations": None} \
        if algorithm == "hyperband" else {"max_trials": max_trials}
    oracle = oracle_class(
        objective=keras_tuner.Objective(objective, direction), seed=seed, hyperparameters=space.hyperparameters(),
        allow_new_entries=False, tune_new_entries=False, **oracle_options,
    )
    oracle.max_trials = max_trials  # Hyperband has no such argument; the base oracle stops there
    tuner = _TrainTuner(
        oracle, directory=str(output), project_name=PROJECT_NAME,
        trial=functools.partial(_run_trial, spec=spec, space=space, base=base, epochs=epochs, objective=objective,
                                runtime=trial_runtime, callbacks=callbacks, trials_dir=output / TRIALS_DIR),
        report=functools.partial(_report_trial, output=output, space=space, objective=objective,
                                 max_trials=max_trials),
    )
    try:
        tuner.search(verbose=0)
    except keras_tuner.errors.FatalError as error:
        raise ValueError(f"The search in {output} stopped: {error}") from error.__cause__
    return _finish(output, spec, space, base, oracle, objective, epochs, tuner.trials_run)


def search_spec(spec: DatasetSpec, validation_fraction: float) -> DatasetSpec:
    """Return the spec a search trains its trials on, after checking that they will have validation data.

    The one place a search decides where its objective is measured: the
    trials are `train` runs, which validate on the spec's "validation" split
    or, when it has none, on the share `validation_fraction` of the train
    split that `train` holds out (`mmkeras.data.validation.with_validation_split`).
    Every trial trains with the same seed, so every trial holds out the
    same rows, and each records them in its run folder.

    Raises:
      ValueError: if the spec has no "validation" split and `validation_fraction`
        is 0, naming the spec and the two ways to give it one.

    Example:
      >>> search_spec(load_spec("tiny"), 0.1).splits["validation"]
    """
    if VALIDATION_SPLIT in spec.splits or validation_fraction > 0:
        return spec
    where = f" ({spec.path})" if spec.path is not None else ""
    raise ValueError(
        f"Spec {spec.name!r}{where} has no {VALIDATION_SPLIT!r} split and validation_fraction is 0, and a search "
        f"scores its trials on validation data (splits: {sorted(spec.splits)}). Leave validation_fraction above 0 "
        f"(the default holds out 0.1 of the train split), or add a split under `splits:` in the spec, e.g. "
        f"`{VALIDATION_SPLIT}: {{manifest: manifest.csv, select: {VALIDATION_SPLIT}}}` for rows whose split column "
        f"says {VALIDATION_SPLIT!r}, or `{VALIDATION_SPLIT}: {{tfrecords: \"tfrecords/{VALIDATION_SPLIT}-*.tfrecord\"}}`."
    )


def trial_config(space: SearchSpace, base: RunConfig, values: Mapping[str, Any], epochs: int) -> RunConfig:
    """The run config of one trial: the fixed config with the trial's values and epochs.

    Example:
      >>> trial_config(space, base, {"fusion": "late", "units": 64}, epochs=3).model.fusion
      'late'
    """
    options = space.training_options(values, base.model.branch_options)
    sections = {key: getattr(base, key) for key in ("model", "training", "runtime")}
    model = dataclasses.replace(sections["model"], **{k: v for k, v in options.items() if k in _fields("model")})
    training = dataclasses.replace(sections["training"], epochs=epochs,
                                   **{k: v for k, v in options.items() if k in _fields("training")})
    return dataclasses.replace(base, model=model, training=training)


class _TrainTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """A KerasTuner tuner whose trial is an `mmkeras.train` run (`trial(trial) -> objective value`)."""

    def __init__(self, oracle, *, trial, report, **kwargs):
        super().__init__(oracle, **kwargs)
        self._trial = trial
        self._report = report
        self.trials_run = 0

    def on_search_begin(self):
        self.save()  # from now on a rerun reloads the oracle, and retries the trial that was running

    def run_trial(self, trial, *args, **kwargs):
        return self._trial(trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        self.trials_run += 1
        self._report(self.oracle, trial)


def _run_trial(trial, *, spec, space, base, epochs, objective, runtime, callbacks, trials_dir) -> float:
    """Train one trial (or read its finished run) and return its best objective value."""
    values = trial.hyperparameters.values
    total_epochs = int(values.get("tuner/epochs", epochs))
    initial_epoch = int(values.get("tuner/initial_epoch", 0))
    config = trial_config(space, base, values, total_epochs - initial_epoch)
    paths = RunPaths(trials_dir / f"trial-{trial.trial_id}")
    if not (paths.final_model.is_file() and not paths.can_resume()):  # a finished run is read, not retrained
        parent = values.get("tuner/trial_id")
        # Hyperband goes on from the weights of the shorter trial it promotes.
        prepare = None if parent is None else functools.partial(
            _load_weights, path=RunPaths(trials_dir / f"trial-{parent}").final_model)
        try:
            # Uncalibrated: a promoted trial loads these weights into a model without a temperature
            # layer, and trials are scored on accuracy, which the temperature does not change.
            train(spec, output_dir=paths.run_dir, model_config=config.model, training_config=config.training,
                  runtime_config=runtime, callbacks=callbacks, prepare_model=prepare, calibrate=False)
        except (ValueError, FileNotFoundError) as error:  # a configuration mistake: every trial would fail
            raise keras_tuner.errors.FatalValueError(f"trial {trial.trial_id}: {error}") from error
    history = read_history(paths.history_csv)
    if objective not in history:
        raise keras_tuner.errors.FatalValueError(
            f"objective {objective!r} is not in the trials' history (metrics: {sorted(history)}); "
            "give one of those, e.g. 'val_accuracy' or 'val_loss'."
        )
    finite = [value for value in history[objective] if math.isfinite(value)]
    if not finite:
        raise keras_tuner.errors.FailedTrialError(f"trial {trial.trial_id}: {objective} was never finite (diverged).")
    return min(finite) if "loss" in objective else max(finite)


def _load_weights(model: keras.Model, *, path: Path) -> None:
    model.load_weights(path)


def _rows(oracle, space: SearchSpace, objective: str, output: Path) -> list[dict[str, Any]]:
    """One row per trial in start order: its values, objective, epochs and seconds (from its run folder)."""
    rows = []
    for trial_id in oracle.start_order:
        trial = oracle.trials[trial_id]
        run_dir = Path(TRIALS_DIR) / f"trial-{trial_id}"
        summary_path = RunPaths(output / run_dir).summary
        summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
        values = trial.hyperparameters.values
        rows.append({
            "trial": trial_id,
            "status": str(trial.status),
            **{name: values.get(name) for name in space.entries},
            objective: trial.score,
            "epochs": summary.get("epochs_completed"),
            "seconds": summary.get("train_seconds"),
            "run_dir": str(run_dir),
        })
    return rows


def _report_trial(oracle, trial, *, output: Path, space: SearchSpace, objective: str, max_trials: int) -> None:
    """Print the trial's line and rewrite trials.csv, so a killed search still has its table."""
    rows = _rows(oracle, space, objective, output)
    write_trials_csv(rows, list(space.entries), objective, output / TRIALS_CSV)
    row = next(row for row in rows if row["trial"] == trial.trial_id)
    best = oracle.get_best_trials(1)
    score = row[objective]
    result = f"{objective} {score:.4f}" if score is not None else row["status"].lower()
    best_text = f"best {best[0].score:.4f} (trial {best[0].trial_id})" if best and best[0].score is not None else ""
    varied = " ".join(f"{name}={_short(row[name])}" for name in space.entries if not _is_fixed(space, name))
    print(f"trial {len(rows)}/{max_trials} [{trial.trial_id}]: {result}, {best_text}; "
          f"{row['epochs']} epochs, {row['seconds']} s; {varied}", flush=True)


def _short(value):
    """A value for the progress line: floats to 4 significant digits (0.30000000000000004 -> 0.3)."""
    return f"{value:.4g}" if isinstance(value, float) else value


def _finish(output, spec, space, base, oracle, objective, epochs, trials_run) -> TuneResult:
    """Write trials.csv, best_config.yaml and the plot; return the result."""
    rows = _rows(oracle, space, objective, output)
    trials_csv = write_trials_csv(rows, list(space.entries), objective, output / TRIALS_CSV)
    best = [trial for trial in oracle.get_best_trials(1) if trial.score is not None]
    if not best:
        raise ValueError(f"No trial of the search in {output} finished; see the errors in {output / PROJECT_NAME}.")
    best_trial = best[0]
    values = best_trial.hyperparameters.values
    config = trial_config(space, base, values, int(values.get("tuner/epochs", epochs)))
    best_config_path = save_run_config(config, output / BEST_CONFIG)
    searched = [name for name in space.entries if not _is_fixed(space, name)]
    scores = influence(rows, searched, objective, categorical=[n for n in searched if isinstance(space.entries[n], tuple)])
    log_scaled = [name for name in searched
                  if isinstance(space.entries[name], Mapping) and space.entries[name].get("sampling") == "log"]
    plot_path = plot_search(rows, scores, objective, output / PLOT, log_scaled=log_scaled,
                            best_trial=best_trial.trial_id)
    return TuneResult(
        best_config=config, best_config_path=best_config_path, best_trial=best_trial.trial_id,
        best_value=float(best_trial.score), best_run_dir=output / TRIALS_DIR / f"trial-{best_trial.trial_id}",
        objective=objective, trials=tuple(rows), trials_csv_path=trials_csv, plot_path=plot_path,
        influence=scores, output_dir=output, trials_run=trials_run,
    )


def _check_search_record(output: Path, record: Mapping[str, Any]) -> None:
    """Write the search's settings, or check that a folder's earlier search had the same ones."""
    path = output / SEARCH_RECORD
    record = json.loads(json.dumps(record))
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        differences = sorted(key for key in set(saved) | set(record) if saved.get(key) != record.get(key))
        if differences:
            raise ValueError(
                f"{output} holds a search with other settings ({', '.join(differences)} differ); a rerun resumes it "
                "only with the same spec, algorithm, objective, epochs, seed, search space and fixed options. "
                "Give another output folder, or delete that one to start over."
            )
        return
    output.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1), encoding="utf-8")


def _is_fixed(space: SearchSpace, name: str) -> bool:
    entry = space.entries[name]
    return not isinstance(entry, (tuple, Mapping)) or (isinstance(entry, tuple) and len(entry) == 1)


def _fields(section: str) -> set[str]:
    config = RunConfig()
    return {field.name for field in dataclasses.fields(getattr(config, section))}
