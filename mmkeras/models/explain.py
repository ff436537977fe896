"""`explain`: how much each modality drove each prediction, by integrated gradients or occlusion.

Both methods score, per example, the probability of the class the model
predicts (calibrated, when the model holds a temperature layer):

- `"occlusion"`: the probability with every input as given, minus the
  probability when that one modality is marked absent through its
  `<name>_present` flag (the model then uses its learned stand-in, see
  `mmkeras.models.presence`). M + 1 forward passes, no gradients; the
  exported `serving_explain` signature computes it with the same function,
  `occlusion_scores`. A modality that is already absent scores 0.
- `"integrated_gradients"` (Sundararajan et al., 2017): the path integral
  of the gradient of that probability with respect to each branch's outputs
  (its embedding and its sequence), from a **baseline** to the example's
  values, times their difference, summed over the modality's elements. The
  baseline of a modality is what the model uses when it is absent: its
  learned "missing" embedding, and zeros for its sequence. The scores add up
  (to the integral's accuracy, `steps` midpoints) to the probability minus
  the probability with every modality at its baseline. Audio features also
  get a per-sample map: integrated gradients of the same probability with
  respect to the waveform, against silence.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mmkeras.models.classifier import PROBABILITIES

METHODS = ("integrated_gradients", "occlusion")
PRESENT_SUFFIX = "_present"


def explain(
    model: keras.Model,
    inputs: Mapping[str, np.ndarray] | Iterable,
    method: str = "integrated_gradients",
    *,
    steps: int = 32,
) -> dict:
    """Score each modality's part in each prediction (see the module docstring for the two methods).

    Args:
      model: a classifier from `build_classifier` (calibrated or not).
      inputs: a batch of the model's decoded inputs (a dict as `make_dataset`
        yields; missing `<name>_present` flags mean present), or an iterable of
        such batches or of (batch, labels) pairs, e.g. a `make_dataset` split.
      method: "integrated_gradients" or "occlusion".
      steps: integration steps for integrated gradients.

    Returns:
      A dict: `method`, `features` (the M feature names), `class_id` (n,)
      the predicted class, `probability` (n,) its probability, `scores`
      {feature: (n,)} and `maps` {feature: per-element array} (integrated
      gradients on audio waveforms: (n, samples); empty for occlusion).

    Raises:
      ValueError: for an unknown method, a bad `steps`, or inputs that miss a feature.

    Example:
      >>> result = explain(model, batch, method="occlusion")
      >>> result["scores"]["picture"][:3]
      array([0.41, 0.02, 0.37], dtype=float32)
    """
    if method not in METHODS:
        raise ValueError(f"Unknown explanation method {method!r}. Expected one of {list(METHODS)}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive integer, got {steps!r}.")
    names = feature_names(model)
    split = _split_at_branches(model, names) if method == "integrated_gradients" else None
    batches = [inputs] if isinstance(inputs, Mapping) else inputs
    parts = []
    for batch in batches:
        if isinstance(batch, tuple):
            batch = batch[0]
        batch = _complete(batch, names)
        if method == "occlusion":
            # predict_on_batch runs Keras' compiled predict function: traced once, not eager per batch.
            predict = lambda features: model.predict_on_batch(features)[PROBABILITIES]
            tensors = {key: tf.convert_to_tensor(value) for key, value in batch.items()}
            parts.append(_numpy(occlusion_scores(predict, tensors, names)))
        else:
            parts.append(_integrated_gradients(model, split, batch, names, steps))
    if not parts:
        raise ValueError("explain got no examples: give a batch dict or a non-empty iterable of batches.")
    joined = {key: np.concatenate([part[key] for part in parts]) for key in ("class_id", "probability")}
    return {
        "method": method,
        "features": names,
        **joined,
        "scores": {name: np.concatenate([part["scores"][name] for part in parts]) for name in names},
        "maps": {name: np.concatenate([part["maps"][name] for part in parts]) for name in parts[0].get("maps", {})},
    }


def feature_names(model: keras.Model) -> list[str]:
    """The classifier's feature names, in the order of its presence matrix (the spec's order).

    Raises:
      ValueError: if the model has no `presence` layer (not made by `build_classifier`).
    """
    try:
        flags = model.get_layer("presence").input
    except ValueError:
        raise ValueError(
            f"Model {model.name!r} has no 'presence' layer; explain takes classifiers made by "
            "mmkeras.build_classifier."
        ) from None
    flags = flags[len(flags) // 2 :]
    return [flag.name[: -len(PRESENT_SUFFIX)] for flag in flags]


def occlusion_scores(predict: Callable, inputs: Mapping, names: list[str]) -> dict:
    """Occlusion scores with backend ops, so it runs eagerly and inside an exported graph alike.

    Args:
      predict: decoded inputs (with every `<name>_present` flag) -> (batch, C) probabilities.
      inputs: the decoded inputs, flags included.
      names: the feature names.

    Returns:
      `{"probabilities": (batch, C), "class_id": (batch,), "probability": (batch,),
      "scores": {name: (batch,)}}`: the predicted class's probability minus
      its probability with that modality's flag set to False.
    """
    probabilities = ops.cast(predict(inputs), "float32")
    class_id = ops.cast(ops.argmax(probabilities, axis=-1), "int32")

    def chosen(values):
        return ops.squeeze(ops.take_along_axis(values, ops.expand_dims(class_id, -1), axis=-1), -1)

    probability = chosen(probabilities)
    scores = {}
    for name in names:
        flag = name + PRESENT_SUFFIX
        hidden = {**inputs, flag: ops.zeros_like(inputs[flag])}
        scores[name] = probability - chosen(ops.cast(predict(hidden), "float32"))
    return {"probabilities": probabilities, "class_id": class_id, "probability": probability, "scores": scores}


def _split_at_branches(model: keras.Model, names: list[str]) -> tuple[keras.Model, keras.Model]:
    """The classifier cut after its branches: `probe` (inputs -> branch outputs, presence), `head` (-> probabilities).

    A branch is a nested functional model, whose `.output` is its own inner graph's; its call in the
    classifier is its first inbound node, hence `_inbound_nodes[0]`.
    """
    branch_outputs = [model.get_layer(f"{name}_branch")._inbound_nodes[0].output_tensors for name in names]
    presence = model.get_layer("presence").output
    head_inputs = [outputs[0] for outputs in branch_outputs] + [outputs[1] for outputs in branch_outputs]
    return keras.Model(model.input, head_inputs + [presence]), keras.Model(head_inputs + [presence],
                                                                          model.output[PROBABILITIES])


def _integrated_gradients(model: keras.Model, split: tuple, inputs: dict, names: list[str], steps: int) -> dict:
    probe, head = split
    values = [tf.cast(value, tf.float32) for value in probe(inputs, training=False)]
    actual, flags = values[:-1], values[-1]
    probabilities = head(actual + [flags], training=False)
    class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    stand_ins = model.get_layer("missing_embedding").missing
    baselines = [tf.broadcast_to(tf.cast(stand_in, tf.float32), tf.shape(value))
                 for stand_in, value in zip(stand_ins, actual)]
    baselines += [tf.zeros_like(value) for value in actual[len(names):]]
    totals = _path_integral(lambda point: head(point + [flags], training=False), actual, baselines, class_id, steps)
    count = len(names)
    scores = {
        name: (_sum_per_example(totals[i]) + _sum_per_example(totals[count + i])).numpy()
        for i, name in enumerate(names)
    }
    maps = {}
    tensors = {key: tf.convert_to_tensor(value) for key, value in inputs.items()}
    for name in names:
        value = inputs[name]
        if value.dtype.kind != "f":  # strings and uint8 pixels: the graph casts them, so no gradient reaches them
            continue

        def predict(point, name=name):
            return model({**tensors, name: point[0]}, training=False)[PROBABILITIES]

        value = tf.convert_to_tensor(value, tf.float32)
        maps[name] = _path_integral(predict, [value], [tf.zeros_like(value)], class_id, steps)[0].numpy()
    chosen = tf.gather(probabilities, class_id, batch_dims=1)
    return {"class_id": class_id.numpy(), "probability": chosen.numpy(), "scores": scores, "maps": maps}


def _path_integral(function: Callable, actual: list, baselines: list, class_id, steps: int) -> list:
    """Integrated gradients of function(point)[class_id] along the straight path, midpoint rule."""
    sums = [tf.zeros_like(value) for value in actual]
    for step in range(steps):
        alpha = (step + 0.5) / steps
        point = [base + alpha * (value - base) for value, base in zip(actual, baselines)]
        with tf.GradientTape() as tape:
            tape.watch(point)
            chosen = tf.gather(tf.cast(function(point), tf.float32), class_id, batch_dims=1)
        gradients = tape.gradient(chosen, point, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        sums = [total + gradient for total, gradient in zip(sums, gradients)]
    return [(value - base) * total / steps for value, base, total in zip(actual, baselines, sums)]


def _sum_per_example(values):
    return tf.reduce_sum(tf.reshape(values, (tf.shape(values)[0], -1)), axis=1)


def _complete(batch: Mapping, names: list[str]) -> dict:
    """The batch as NumPy, with a True flag for every feature that has none."""
    batch = {key: np.asarray(value) for key, value in dict(batch).items()}
    missing = [name for name in names if name not in batch]
    if missing:
        raise ValueError(
            f"explain inputs miss features {missing}; give every feature of the model ({names}) as make_dataset "
            "yields them (an absent modality: any value with its `<name>_present` flag False)."
        )
    size = len(batch[names[0]])
    for name in names:
        batch.setdefault(name + PRESENT_SUFFIX, np.ones(size, bool))
    return batch


def _numpy(result: dict) -> dict:
    return {
        "class_id": np.asarray(result["class_id"]),
        "probability": np.asarray(result["probability"]),
        "scores": {name: np.asarray(value) for name, value in result["scores"].items()},
        "maps": {},
    }
