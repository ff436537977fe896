"""Zero-shot classification: name each class in one modality, classify examples of another by similarity.

A class is described by values of one modality, here called its prompts:
its name or a description (text tower), or a few spoken examples (audio
tower). Their embeddings, averaged and re-normalised, are the class's
prototype; an example of another modality gets the class whose prototype is
most similar to its embedding (cosine). Nothing is trained on the classes, so
classes held out of the encoder's training can be recognised, as far as the
shared space generalises to them.

Prototypes come from prompts (`class_embeddings`) or from K embedded
exemplars per class (`exemplar_prototypes`). In the generalised test, where
seen and unseen classes compete, the seen classes (which the space was
trained on) attract unseen examples; `calibrate_zero_shot` finds, from
examples of seen classes only, a penalty on the seen classes' scores
(calibrated stacking, Chao et al., 2016) and a threshold under which an
example is called "unknown" (`UNKNOWN`), and `zero_shot_classify` applies them.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from mmkeras.alignment.dual_encoder import DualEncoder
from mmkeras.alignment.retrieval import embed
from mmkeras.checks import check_number, check_positive_int

# The prediction of an example no prototype is close enough to (see `unknown_threshold`).
UNKNOWN = -1


class ZeroShotResult(NamedTuple):
    """Zero-shot predictions.

    Attributes:
      predictions: (n,) int index of the best class (into the prototypes
        given), or `UNKNOWN` (-1) under an `unknown_threshold`.
      scores: (n, num_classes) cosine similarities to every class prototype,
        less the calibration penalty on the seen classes.
    """

    predictions: np.ndarray
    scores: np.ndarray


def class_embeddings(
    encoder: DualEncoder, feature_name: str, class_prompts: Sequence[Any], *, batch_size: int = 64
) -> np.ndarray:
    """Embed each class's prompts with one tower and average them into a unit prototype.

    Args:
      encoder: a `DualEncoder`.
      feature_name: the tower that reads the prompts (text or audio, usually).
      class_prompts: one entry per class, in class order: a single value (a
        class name, a description, one recording's bytes or waveform) or a
        sequence of values (several descriptions or recordings), raw or
        decoded as for `embed`.
      batch_size: examples per tower call.

    Returns:
      A (num_classes, embed_dim) float32 array of unit vectors.

    Raises:
      ValueError: for no classes, or a class with no prompt.

    Example:
      >>> prototypes = class_embeddings(encoder, "caption", ["red", "green", "blue"])
      >>> prototypes.shape
      (3, 128)
    """
    feature = encoder.spec.feature(feature_name)
    groups = [_prompt_list(feature, prompts) for prompts in class_prompts]
    if not groups:
        raise ValueError("`class_prompts` must hold one entry (a prompt or a list of prompts) per class.")
    empty = [i for i, group in enumerate(groups) if not group]
    if empty:
        raise ValueError(f"Classes {empty} have no prompt; give at least one value per class.")
    flat = [value for group in groups for value in group]
    if feature.modality != "text" and not isinstance(flat[0], (bytes, str)):
        flat = np.stack([np.asarray(value) for value in flat])
    vectors = embed(encoder, feature_name, flat, batch_size=batch_size)
    bounds = np.cumsum([0] + [len(group) for group in groups])
    prototypes = np.stack([vectors[start:end].mean(axis=0) for start, end in itertools.pairwise(bounds)])
    norms = np.linalg.norm(prototypes, axis=1, keepdims=True)
    return (prototypes / np.maximum(norms, 1e-12)).astype(np.float32)


def zero_shot_classify(
    encoder: DualEncoder,
    inputs: Mapping[str, Any],
    prototypes: np.ndarray,
    *,
    batch_size: int = 64,
    seen: Sequence[bool] | None = None,
    calibration: float = 0.0,
    unknown_threshold: float | None = None,
) -> ZeroShotResult:
    """Classify examples of one modality by their cosine similarity to class prototypes.

    Args:
      encoder: a `DualEncoder`.
      inputs: `{feature_name: values}`, one feature (e.g. the pictures), raw or decoded.
      prototypes: (num_classes, embed_dim) from `class_embeddings` (any subset
        of classes: restrict it to the held-out classes for the classic
        zero-shot test, keep all for the generalised one).
      batch_size: examples per tower call.
      seen, calibration, unknown_threshold: see `classify_scores` (the
        generalised test; `calibrate_zero_shot` finds the last two).

    Returns:
      A `ZeroShotResult` with predictions indexing the rows of `prototypes` (or `UNKNOWN`).

    Raises:
      ValueError: if `inputs` does not name exactly one tower, the
        prototypes' width is not the encoder's, or `seen` does not flag each prototype.

    Example:
      >>> prototypes = class_embeddings(encoder, "caption", ["red", "green", "blue"])
      >>> zero_shot_classify(encoder, {"picture": images}, prototypes).predictions[:4]
      array([0, 2, 2, 1])
    """
    if not isinstance(inputs, Mapping) or len(inputs) != 1:
        raise ValueError("`inputs` must map exactly one tower's feature name to values, e.g. {'picture': images}.")
    prototypes = np.asarray(prototypes, np.float32)
    if prototypes.ndim != 2 or prototypes.shape[1] != encoder.embed_dim:
        raise ValueError(
            f"`prototypes` must be (num_classes, {encoder.embed_dim}) as `class_embeddings` returns, "
            f"got {prototypes.shape}."
        )
    (name, values), = inputs.items()
    scores = embed(encoder, name, values, batch_size=batch_size) @ prototypes.T
    return classify_scores(scores, seen=seen, calibration=calibration, unknown_threshold=unknown_threshold)


def classify_scores(
    scores: np.ndarray,
    *,
    seen: Sequence[bool] | None = None,
    calibration: float = 0.0,
    unknown_threshold: float | None = None,
) -> ZeroShotResult:
    """Zero-shot predictions from prototype similarities, with the generalised test's calibration.

    Args:
      scores: (n, num_classes) cosine similarities to the class prototypes.
      seen: (num_classes,) flags, True for the classes the encoder was trained
        on; needed for a calibration.
      calibration: subtracted from the seen classes' scores (calibrated
        stacking), so that seen classes do not swallow every unseen example.
      unknown_threshold: examples whose best (calibrated) score is below it
        are predicted `UNKNOWN`; None: always a class.

    Returns:
      A `ZeroShotResult`.

    Raises:
      ValueError: for a calibration without `seen`, or `seen` of the wrong length.

    Example:
      >>> classify_scores(np.array([[0.9, 0.8]]), seen=[True, False], calibration=0.2).predictions
      array([1])
    """
    scores = np.array(scores, np.float64)
    if calibration:
        if seen is None:
            raise ValueError("A `calibration` penalises the seen classes: pass `seen`, one flag per prototype.")
        scores[:, _seen_mask(seen, scores.shape[1])] -= float(calibration)
    predictions = np.argmax(scores, axis=1)
    if unknown_threshold is not None:
        predictions = np.where(scores.max(axis=1) < unknown_threshold, UNKNOWN, predictions)
    return ZeroShotResult(predictions, scores)


def calibrate_zero_shot(
    scores: np.ndarray,
    labels: np.ndarray,
    seen: Sequence[bool],
    *,
    max_seen_drop: float = 0.05,
    accept_rate: float = 0.95,
) -> dict:
    """Choose the seen-class penalty and the "unknown" threshold from examples of seen classes only.

    No unseen example is needed (nor allowed: that would leak the test): the
    penalty is the largest one that costs the seen examples at most
    `max_seen_drop` of their accuracy among all classes, and the threshold
    accepts `accept_rate` of them (their best calibrated score is at least it).

    Args:
      scores: (n, num_classes) similarities of held-out examples of seen
        classes (e.g. a validation split) to all prototypes.
      labels: (n,) their class ids (indices into the prototypes).
      seen: (num_classes,) flags of the seen classes.
      max_seen_drop: the seen accuracy the penalty may cost, in [0, 1).
      accept_rate: the share of seen examples that must not be called unknown, in (0, 1].

    Returns:
      `{"calibration": penalty, "unknown_threshold": threshold,
      "seen_accuracy": before, "calibrated_seen_accuracy": after}`.

    Raises:
      ValueError: for labels of unseen classes, mismatched shapes or rates out of range.

    Example:
      >>> calibrate_zero_shot(validation_scores, validation_labels, seen=[c not in held_out for c in classes])
      {'calibration': 0.08, 'unknown_threshold': 0.31, ...}
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels).reshape(-1)
    if scores.ndim != 2 or len(scores) != len(labels) or len(labels) == 0:
        raise ValueError(f"Give (n, num_classes) scores and n labels, n > 0; got {scores.shape} and {labels.shape}.")
    mask = _seen_mask(seen, scores.shape[1])
    if not np.all(mask[labels]):
        raise ValueError(
            "`calibrate_zero_shot` calibrates on examples of seen classes only (an unseen example would leak the "
            f"test); got labels {sorted(set(labels[~mask[labels]].tolist()))} of unseen classes."
        )
    max_seen_drop = check_number(max_seen_drop, "max_seen_drop", inclusive=True)
    accept_rate = check_number(accept_rate, "accept_rate")
    if max_seen_drop >= 1 or accept_rate > 1:
        raise ValueError(f"`max_seen_drop` must be in [0, 1) and `accept_rate` in (0, 1]; got {max_seen_drop}, "
                         f"{accept_rate}.")
    before = float(np.mean(np.argmax(scores, axis=1) == labels))
    # The accuracy only changes where the penalty crosses a gap between a seen and an unseen class's score.
    gaps = scores[:, mask].max(axis=1)[:, None] - scores[:, ~mask] if (~mask).any() else np.zeros((len(scores), 0))
    calibration, after = 0.0, before
    for candidate in np.unique(np.concatenate([[0.0], gaps[gaps > 0].ravel()])):
        accuracy = float(np.mean(classify_scores(scores, seen=mask, calibration=candidate).predictions == labels))
        if accuracy < before - max_seen_drop:
            break
        calibration, after = float(candidate), accuracy
    best = classify_scores(scores, seen=mask, calibration=calibration).scores.max(axis=1)
    threshold = float(np.quantile(best, 1.0 - accept_rate))
    return {"calibration": calibration, "unknown_threshold": threshold, "seen_accuracy": before,
            "calibrated_seen_accuracy": after}


def exemplar_prototypes(
    embeddings: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    num_exemplars: int | None = None,
    *,
    seed: int | None = None,
) -> np.ndarray:
    """Class prototypes from K embedded exemplars per class: their mean, re-normalised.

    Use it when a class is named by examples (a few recordings, a few
    descriptions) already embedded, e.g. to draw many K-shot prototype sets
    from one embedding pass.

    Args:
      embeddings: (n, dim) embeddings of the exemplars.
      labels: (n,) their class ids in 0..num_classes-1.
      num_classes: the number of prototypes.
      num_exemplars: K, drawn at random per class (all of a class if it has
        fewer); None: every exemplar.
      seed: seed (or a NumPy Generator) of the draw.

    Returns:
      A (num_classes, dim) float32 array of unit vectors.

    Raises:
      ValueError: for a class without exemplars, or mismatched shapes.

    Example:
      >>> exemplar_prototypes(embed(encoder, "sound", waves), labels, 10, num_exemplars=5, seed=0).shape
      (10, 128)
    """
    embeddings = np.asarray(embeddings, np.float64)
    labels = np.asarray(labels).reshape(-1)
    num_classes = check_positive_int(num_classes, "num_classes")
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise ValueError(f"Give (n, dim) embeddings and n labels; got {embeddings.shape} and {labels.shape}.")
    missing = [c for c in range(num_classes) if not np.any(labels == c)]
    if missing:
        raise ValueError(f"Classes {missing} have no exemplar; every prototype needs at least one.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    prototypes = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if num_exemplars is not None:
            count = min(check_positive_int(num_exemplars, "num_exemplars"), len(members))
            members = rng.choice(members, size=count, replace=False)
        mean = embeddings[members].mean(axis=0)
        prototypes.append(mean / max(np.linalg.norm(mean), 1e-12))
    return np.stack(prototypes).astype(np.float32)


def _seen_mask(seen: Sequence[bool], num_classes: int) -> np.ndarray:
    mask = np.asarray(seen, bool).reshape(-1)
    if len(mask) != num_classes:
        raise ValueError(f"`seen` must flag each of the {num_classes} prototypes, got {len(mask)} flags.")
    return mask


def _prompt_list(feature, prompts: Any) -> list:
    """One class's prompts as a list of single values."""
    if isinstance(prompts, (str, bytes)):
        return [prompts]
    if feature.modality != "text":
        array = np.asarray(prompts) if not isinstance(prompts, (list, tuple)) else None
        if array is not None and array.dtype.kind not in "SUO" and array.ndim == len(feature.shape):
            return [array]  # one decoded value
    return list(prompts)
