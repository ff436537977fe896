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
  the probability with every modality at its baseline.

Integrated gradients also give **per-element maps**, one modality at a time
(the others as given), each integrated inside the branch, where the input
first has one value per element that a gradient reaches, against its own
baseline:

- images: the pixels (the decoded image, as floats), against a black image;
  summed over channels, (n, height, width). Integrated gradients do not
  change under the branch's linear rescaling, so this is also the map of the
  normalised image the convolutions read.
- text: the token embeddings (the text is tokenised inside the model, so
  no gradient reaches the string), against zero embeddings; summed over the
  embedding dimension, (n, sequence_length), with the tokens themselves
  (`tokens`: the standardised word or n-gram, out-of-vocabulary ones too,
  and "" for padding, which the model masks and so scores 0).
- audio: the log-mel spectrogram the branch computes, against that of
  silence; (n, frames, mel_bins), summed over the last axis for one score
  per frame.

A map adds up to the probability minus the probability with that one input
at its baseline. Branches with a pretrained encoder that tokenises or
spectrograms by itself get no map. Occlusion gives only per-modality scores.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mmkeras.branches.log_mel import LogMelSpectrogram
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
      {feature: (n,)}; with integrated gradients also `maps` {feature:
      per-element array} (images (n, height, width), text (n,
      sequence_length), audio (n, frames, mel_bins)) and `tokens` {text
      feature: (n, sequence_length) str array}, the words the text map
      scores; both empty for occlusion.

    Raises:
      ValueError: for an unknown method, a bad `steps`, or inputs that miss a feature.

    Example:
      >>> result = explain(model, batch, method="occlusion")
      >>> result["scores"]["picture"][:3]
      array([0.41, 0.02, 0.37], dtype=float32)
      >>> result = explain(model, batch)
      >>> [f"{t}:{s:.2f}" for t, s in zip(result["tokens"]["caption"][0], result["maps"]["caption"][0]) if t]
      ['a:0.01', 'red:0.52', 'ball:-0.02']
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
        **{key: {name: np.concatenate([part[key][name] for part in parts]) for name in parts[0][key]}
           for key in ("maps", "tokens")},
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


class _ElementPath(NamedTuple):
    """Where a branch's per-element map is integrated: its input -> point (and held tensors) -> its outputs."""

    prefix: Callable  # the branch input -> point, or [*held, point]: held tensors (token ids) stay as they are
    suffix: Callable  # point, or [*held, point] -> the branch's {"embedding", "sequence"}
    zero_input_baseline: bool  # the baseline is the point of an all-zero input (black, silence), else zeros
    summed_axes: tuple  # axes of the point summed into the map (channels, embedding dimension)
    vectorizer: keras.layers.TextVectorization | None  # a text branch's, for the tokens


def _split_at_branches(model: keras.Model, names: list[str]) -> tuple:
    """The classifier cut after its branches: `probe` (inputs -> branch outputs, presence), `head` (-> probabilities).

    Also each feature's `_ElementPath` (None for a branch with no per-element map). A branch is a
    nested functional model, whose `.output` is its own inner graph's; its call in the classifier is
    its first inbound node, hence `_inbound_nodes[0]`.
    """
    branches = [model.get_layer(f"{name}_branch") for name in names]
    branch_outputs = [branch._inbound_nodes[0].output_tensors for branch in branches]
    presence = model.get_layer("presence").output
    head_inputs = [outputs[0] for outputs in branch_outputs] + [outputs[1] for outputs in branch_outputs]
    probe = keras.Model(model.input, head_inputs + [presence])
    head = keras.Model(head_inputs + [presence], model.output[PROBABILITIES])
    return probe, head, {name: _element_path(branch) for name, branch in zip(names, branches)}


def _element_path(branch: keras.Model) -> _ElementPath | None:
    """Where a branch's map is taken (see the module docstring): found by the layers the built-in branches have."""
    by_name = {layer.name: layer for layer in branch.layers}
    if "token_embedding" in by_name:
        vectorizer = next(layer for layer in branch.layers if isinstance(layer, keras.layers.TextVectorization))
        # The padding mask is computed from the token ids, so they are held as a second input.
        cut = [vectorizer.output, by_name["token_embedding"].output]
        return _ElementPath(keras.Model(branch.input, cut), keras.Model(cut, branch.output), False, (-1,), vectorizer)
    log_mel = next((layer for layer in branch.layers if isinstance(layer, LogMelSpectrogram)), None)
    if log_mel is not None:
        cut = log_mel.output
        return _ElementPath(keras.Model(branch.input, cut), keras.Model(cut, branch.output), True, (), None)
    if len(branch.input.shape) == 4:
        # The branch takes uint8 pixels, and a functional model casts what it is given to its input's
        # dtype: the same layers, called on a float input instead, let the gradient reach the pixels.
        pixels = keras.Input(branch.input.shape[1:], dtype="float32", name=f"{branch.name}_pixels")
        floats = keras.models.clone_model(branch, input_tensors=pixels, clone_function=lambda layer: layer)
        return _ElementPath(lambda images, training: tf.cast(images, tf.float32), floats, True, (-1,), None)
    return None


def _integrated_gradients(model: keras.Model, split: tuple, inputs: dict, names: list[str], steps: int) -> dict:
    probe, head, paths = split
    outputs = probe(inputs, training=False)
    # A text branch's sequence carries its padding mask, which cross-attention reads: every point of the
    # path hands it on, or the integral would explain a model that attends to the padding.
    masks = [getattr(value, "_keras_mask", None) for value in outputs]
    values = [tf.cast(value, tf.float32) for value in outputs]
    actual, flags = values[:-1], values[-1]

    def head_at(point):
        with warnings.catch_warnings():
            # Keras warns that `head` hands no mask on to its output; the probabilities need none, and the
            # masks are read inside it (by the fusion), so the warning would only alarm the user.
            warnings.filterwarnings("ignore", message=".*was passed an input with a mask attached", category=UserWarning)
            return head(point + [flags], training=False, mask=masks)

    probabilities = head_at(actual)
    class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    stand_ins = model.get_layer("missing_embedding").missing
    baselines = [tf.broadcast_to(tf.cast(stand_in, tf.float32), tf.shape(value))
                 for stand_in, value in zip(stand_ins, actual)]
    baselines += [tf.zeros_like(value) for value in actual[len(names):]]
    totals = _path_integral(head_at, actual, baselines, class_id, steps)
    count = len(names)
    scores = {
        name: (_sum_per_example(totals[i]) + _sum_per_example(totals[count + i])).numpy()
        for i, name in enumerate(names)
    }
    maps, tokens = {}, {}
    for i, name in enumerate(names):
        path = paths[name]
        if path is None:
            continue
        *held, point = tf.nest.flatten(path.prefix(inputs[name], training=False))

        def predict(point, i=i, held=held, path=path):
            outputs = path.suffix([*held, point[0]] if held else point[0], training=False)
            replaced = list(actual)
            replaced[i], replaced[count + i] = (tf.cast(outputs[key], tf.float32) for key in ("embedding", "sequence"))
            return head_at(replaced)

        maps[name] = _element_map(path, predict, inputs[name], point, class_id, steps)
        if path.vectorizer is not None:
            tokens[name] = _tokens(path.vectorizer, inputs[name], held[0])
    chosen = tf.gather(probabilities, class_id, batch_dims=1)
    return {"class_id": class_id.numpy(), "probability": chosen.numpy(), "scores": scores, "maps": maps,
            "tokens": tokens}


def _element_map(path: _ElementPath, predict: Callable, value, point, class_id, steps: int) -> np.ndarray:
    """One modality's map: integrated gradients at its path's point, against its baseline, summed as the path says."""
    point = tf.cast(point, tf.float32)
    if path.zero_input_baseline:
        baseline = tf.cast(tf.nest.flatten(path.prefix(np.zeros_like(value), training=False))[-1], tf.float32)
    else:
        baseline = tf.zeros_like(point)
    total = _path_integral(predict, [point], [baseline], class_id, steps)[0]
    return tf.reduce_sum(total, axis=path.summed_axes).numpy()


def _tokens(vectorizer: keras.layers.TextVectorization, texts, token_ids) -> np.ndarray:
    """The (n, sequence_length) tokens behind `token_ids`: "" for padding, the word itself when out of vocabulary.

    An out-of-vocabulary id (1, after padding's 0) stands for any word; the vectorizer's own
    standardise-and-split gives the word, which its lookup maps one to one onto ids before truncating
    and padding. Keras has no public way to see those tokens, hence the private `_preprocess`.
    """
    token_ids = np.asarray(token_ids)
    tokens = np.asarray(vectorizer.get_vocabulary(), dtype=object)[token_ids]
    words = vectorizer._preprocess(tf.convert_to_tensor(texts)).to_tensor(default_value=b"", shape=token_ids.shape)
    unknown = token_ids == 1
    tokens[unknown] = [word.decode("utf-8") for word in words.numpy()[unknown]]
    tokens[token_ids == 0] = ""
    return tokens.astype(str)


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
        "tokens": {},
    }
