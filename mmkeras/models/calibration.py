"""`calibrate`: fit temperature scaling on held-out data and put it inside the classifier.

The fitted temperatures live in a `TemperatureScaling` layer between the
classifier's logits and its "probabilities" softmax, so the `.keras` file,
`evaluate`, `predict` and the SavedModel export all answer with calibrated
probabilities; the argmax (the predicted class) never changes.

Fitting minimises the negative log-likelihood (NLL) of the held-out labels
over log T (a one-dimensional convex problem in 1/T, solved by bounded
Brent search). With `per_pattern=True`, the split is run once as given and
once with each modality marked absent (the `<name>_present` flags the model
takes, see `mmkeras.models.presence`), and a temperature is fitted for each
presence pattern: all present (and any pattern with several absent), and
each single modality missing.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from scipy.optimize import minimize_scalar

from mmkeras.data.pipeline import make_dataset
from mmkeras.models.classifier import PROBABILITIES
from mmkeras.models.temperature import TemperatureScaling
from mmkeras.spec import DatasetSpec, load_spec

TEMPERATURE = "temperature"
PRESENCE = "presence"
# Search range of log T: T from 0.01 to 1000 covers under- and over-confident models alike.
LOG_TEMPERATURE_BOUNDS = (np.log(1e-2), np.log(1e3))


def calibrate(
    model: keras.Model,
    spec: DatasetSpec | str | os.PathLike,
    split: str = "validation",
    *,
    per_pattern: bool = False,
    batch_size: int = 64,
    verbose: bool = True,
) -> keras.Model:
    """Fit temperature scaling on a held-out split; return the model with the temperatures inside.

    Use a split the model was not trained on (the validation split): on the
    training split an over-fitted model looks well calibrated already.

    Args:
      model: a classifier from `build_classifier` (or one calibrated before:
        its temperatures are fitted again from its raw logits).
      spec: its `DatasetSpec`, or a spec name or path.
      split: the held-out split to fit on.
      per_pattern: one temperature per modality-presence pattern (all
        present, each modality missing) instead of one in all.
      batch_size: examples per batch.
      verbose: print the fitted temperatures and the NLL before and after.

    Returns:
      A new `keras.Model` sharing the classifier's weights, with the same
      inputs and outputs, whose "probabilities" are softmax(logits / T).

    Raises:
      ValueError: if the split is unknown or empty, or the model has no
        "probabilities" softmax over logits.

    Example:
      >>> calibrated = calibrate(result.model, spec, "validation")
      >>> calibrated.get_layer("temperature").temperatures.numpy()
      array([1.83], dtype=float32)
    """
    spec = spec if isinstance(spec, DatasetSpec) else load_spec(spec)
    if split not in spec.splits:
        raise ValueError(
            f"Spec {spec.name!r} has no split {split!r} to calibrate on; its splits are {sorted(spec.splits)}. "
            "Give a held-out split (not the training split)."
        )
    dataset = make_dataset(spec, split, batch_size=batch_size, training=False, deterministic=True)
    return fit_calibration(model, dataset.as_numpy_iterator(), per_pattern=per_pattern, verbose=verbose,
                           description=f"split {split!r} of {spec.name!r}")[0]


def fit_calibration(
    model: keras.Model,
    batches: Iterable,
    *,
    per_pattern: bool = False,
    verbose: bool = True,
    description: str = "the held-out batches",
) -> tuple[keras.Model, dict]:
    """Fit temperature scaling on batches; return the calibrated model and what was fitted.

    Training calls this with the validation dataset it early-stops on and
    records the summary in the run folder.

    Args:
      model: the classifier.
      batches: an iterable of (features dict, labels) batches.
      per_pattern: one temperature per presence pattern.
      verbose: print what was fitted.
      description: what the batches are, for the printed line and errors.

    Returns:
      `(calibrated model, {"temperatures", "per_pattern", "num_predictions",
      "nll_before", "nll_after"})`, NLL over the predictions fitted on.

    Raises:
      ValueError: if there are no batches, or the model has no probabilities softmax.
    """
    scaled = with_temperature(model, per_pattern=per_pattern)
    layer = scaled.get_layer(TEMPERATURE)
    logits, presence, labels = collect_logits(scaled, batches, per_pattern=per_pattern)
    if not len(labels):
        raise ValueError(f"Cannot calibrate on {description}: it has no examples.")
    indices = np.asarray(layer.pattern_indices(presence))
    temperatures = np.full(layer.num_patterns, fit_temperature(logits, labels), np.float32)
    for index in range(1, layer.num_patterns) if per_pattern else ():
        rows = indices == index
        if rows.any():  # a pattern never seen keeps the temperature fitted on every row
            temperatures[index] = fit_temperature(logits[rows], labels[rows])
    if per_pattern and (indices == 0).any():
        temperatures[0] = fit_temperature(logits[indices == 0], labels[indices == 0])
    layer.temperatures.assign(temperatures)
    summary = {
        "temperatures": [float(value) for value in temperatures],
        "per_pattern": per_pattern,
        "num_predictions": len(labels),
        "nll_before": nll(logits, labels, 1.0),
        "nll_after": nll(logits, labels, temperatures[indices]),
    }
    if verbose:
        shown = ", ".join(f"{value:.3f}" for value in temperatures)
        print(f"Calibrated on {description} ({len(labels)} predictions): temperatures [{shown}], "
              f"NLL {summary['nll_before']:.4f} -> {summary['nll_after']:.4f}.", file=sys.stderr, flush=True)
    return scaled, summary


def with_temperature(model: keras.Model, *, per_pattern: bool = False) -> keras.Model:
    """Return the classifier with a `TemperatureScaling` layer (temperatures 1.0) before its softmax.

    The new model shares every layer (and so every weight) with `model`; a
    model that already has a temperature layer gets a fresh one on its raw logits.

    Args:
      model: a classifier from `build_classifier`.
      per_pattern: one temperature per presence pattern.

    Returns:
      The new `keras.Model`, named as `model`, with the same inputs and outputs.

    Raises:
      ValueError: if `model` has no "probabilities" softmax layer or no "presence" layer.
    """
    logits = raw_logits(model)
    presence = _layer(model, PRESENCE).output
    num_modalities = int(presence.shape[-1])
    scaled = TemperatureScaling(num_modalities, per_pattern=per_pattern, name=TEMPERATURE)(logits, presence)
    probabilities = layers.Activation("softmax", dtype="float32", name=PROBABILITIES)(scaled)
    outputs = {**model.output, PROBABILITIES: probabilities}
    return keras.Model(model.input, outputs, name=model.name)


def raw_logits(model: keras.Model):
    """The symbolic logits of a classifier, before any temperature (the input of its softmax)."""
    names = {layer.name for layer in model.layers}
    if TEMPERATURE in names:
        return _layer(model, TEMPERATURE).input[0]
    probabilities = _layer(model, PROBABILITIES)
    if not isinstance(probabilities, layers.Activation):
        raise ValueError(
            f"Model {model.name!r}: its {PROBABILITIES!r} layer is a {type(probabilities).__name__}, not the softmax "
            "Activation that build_classifier puts on the logits; only such classifiers can be calibrated."
        )
    return probabilities.input


def temperatures_of(model: keras.Model) -> list[float] | None:
    """The temperatures inside a calibrated classifier, or None if it has no temperature layer."""
    if TEMPERATURE not in {layer.name for layer in model.layers}:
        return None
    return [float(value) for value in np.asarray(model.get_layer(TEMPERATURE).temperatures)]


def collect_logits(model: keras.Model, batches: Iterable, *, per_pattern: bool = False):
    """Run a classifier on batches and return its raw logits, presence matrix and labels, as NumPy.

    Args:
      model: a classifier with a temperature layer (see `with_temperature`).
      batches: (features dict, labels) batches.
      per_pattern: also run every batch with each modality marked absent;
        the rows come as given first, then with each modality absent in turn.

    Returns:
      `(logits (n, C), presence (n, M), labels (n,))`; with `per_pattern`, n
      is (1 + M) times the number of examples.
    """
    layer = model.get_layer(TEMPERATURE)
    probe = keras.Model(model.input, {"logits": layer.input[0], "presence": layer.input[1]})
    flags = [name for name in model.input if name.endswith("_present") and name[: -len("_present")] in model.input]
    runs = [None] + (flags if per_pattern else [])
    collected = {run: ([], [], []) for run in runs}
    infer = None
    for features, labels in batches:
        features = {name: np.asarray(value) for name, value in dict(features).items()}
        size = len(np.asarray(labels))
        for flag in flags:
            features.setdefault(flag, np.ones(size, bool))
        if infer is None:  # one trace for every batch size (`predict_on_batch` traced the last, smaller batch again)
            signature = {name: tf.TensorSpec((None, *value.shape[1:]),
                                             tf.string if value.dtype.kind in "OSU" else tf.as_dtype(value.dtype))
                         for name, value in features.items()}
            infer = tf.function(lambda inputs: probe(inputs, training=False), input_signature=[signature],
                                autograph=False)
        for run in runs:
            inputs = features if run is None else {**features, run: np.zeros(size, bool)}
            outputs = {name: value.numpy() for name, value in infer(inputs).items()}
            for values, value in zip(collected[run], (outputs["logits"], outputs["presence"], labels)):
                values.append(np.asarray(value))
    parts = [np.concatenate(values) if values else np.zeros((0,)) for run in runs for values in collected[run]]
    return (
        np.concatenate(parts[0::3]).astype(np.float64),
        np.concatenate(parts[1::3]),
        np.concatenate(parts[2::3]).astype(np.int64),
    )


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 that minimises the NLL of `labels` under softmax(logits / T).

    Args:
      logits: (n, C) raw logits.
      labels: (n,) class ids.

    Returns:
      T, within [0.01, 1000].

    Example:
      >>> fit_temperature(np.array([[10.0, 0.0], [10.0, 0.0]]), np.array([0, 1]))
      1000.0
    """
    result = minimize_scalar(lambda log_t: nll(logits, labels, np.exp(log_t)), bounds=LOG_TEMPERATURE_BOUNDS,
                             method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def nll(logits: np.ndarray, labels: np.ndarray, temperature=1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / temperature).

    Args:
      logits: (n, C) logits.
      labels: (n,) class ids.
      temperature: a scalar or an (n,) temperature per row.

    Returns:
      The mean NLL in nats.
    """
    scaled = np.asarray(logits, np.float64) / np.reshape(np.asarray(temperature, np.float64), (-1, 1))
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    log_probabilities = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
    return float(-np.mean(log_probabilities[np.arange(len(labels)), np.asarray(labels, int)]))


def _layer(model: keras.Model, name: str):
    try:
        return model.get_layer(name)
    except ValueError:
        raise ValueError(
            f"Model {model.name!r} has no {name!r} layer; calibrate takes classifiers made by "
            "mmkeras.build_classifier (or loaded from their .keras files)."
        ) from None
