"""Calibrating a finished training run on the validation data it early-stopped on."""
from __future__ import annotations

import json
from collections.abc import Iterable

import keras

from mmkeras.models.calibration import fit_calibration
from mmkeras.models.saving import load_classifier
from mmkeras.training.run_dir import RunPaths, save_model


def calibrate_run(
    model: keras.Model,
    validation_data: Iterable,
    paths: RunPaths,
    *,
    per_pattern: bool = False,
    best_is_final: bool = False,
    verbose: bool = True,
) -> keras.Model:
    """Fit temperature scaling for a trained run; save the calibrated models and `calibration.json`.

    `train` calls this after `fit` with the dataset it validated (and
    early-stopped) on, whichever split that came from. The returned model is
    saved as `final.keras`; `best.keras` is calibrated on the same data and
    saved too. When the run says its final weights are the best epoch's
    (`best_is_final`: early stopping restored them, as it does by default),
    the calibrated final model is saved as `best.keras` as well, instead of
    loading that file and fitting the same temperature again.

    Args:
      model: the trained classifier (`train`'s final model).
      validation_data: the (features, labels) batches the run validated on.
      paths: the run folder's paths.
      per_pattern: one temperature per modality-presence pattern.
      best_is_final: whether `model` holds the weights saved in `best.keras`.
      verbose: print what was fitted.

    Returns:
      The calibrated classifier.

    Raises:
      ValueError: if the validation data holds no examples.

    Example:
      >>> calibrated = calibrate_run(model, validation_data, RunPaths("runs/tiny"))
      >>> json.loads(RunPaths("runs/tiny").calibration.read_text())["final"]["temperatures"]
      [1.62]
    """
    calibrated, record = fit_calibration(model, validation_data, per_pattern=per_pattern, verbose=verbose,
                                         description="the run's validation data")
    save_model(calibrated, paths.final_model)
    records = {"final": record}
    if paths.best_model.is_file() and best_is_final:
        save_model(calibrated, paths.best_model)
        records["best"] = record
    elif paths.best_model.is_file():
        best, records["best"] = fit_calibration(load_classifier(paths.best_model), validation_data,
                                                per_pattern=per_pattern, verbose=False)
        save_model(best, paths.best_model)
    paths.calibration.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return calibrated
