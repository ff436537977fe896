"""Zero-shot classification: name each class in one modality, classify examples of another by similarity.

A class is described by values of one modality, here called its prompts:
its name or a description (text tower), or a few spoken examples (audio
tower). Their embeddings, averaged and re-normalised, are the class's
prototype; an example of another modality gets the class whose prototype is
most similar to its embedding (cosine). Nothing is trained on the classes, so
classes held out of the encoder's training can be recognised, as far as the
shared space generalises to them.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from mmkeras.alignment.dual_encoder import DualEncoder
from mmkeras.alignment.retrieval import embed


class ZeroShotResult(NamedTuple):
    """Zero-shot predictions.

    Attributes:
      predictions: (n,) int index of the best class (into the prototypes given).
      scores: (n, num_classes) cosine similarities to every class prototype.
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
) -> ZeroShotResult:
    """Classify examples of one modality by their cosine similarity to class prototypes.

    Args:
      encoder: a `DualEncoder`.
      inputs: `{feature_name: values}`, one feature (e.g. the pictures), raw or decoded.
      prototypes: (num_classes, embed_dim) from `class_embeddings` (any subset
        of classes: restrict it to the held-out classes for the classic
        zero-shot test, keep all for the generalised one).
      batch_size: examples per tower call.

    Returns:
      A `ZeroShotResult` with predictions indexing the rows of `prototypes`.

    Raises:
      ValueError: if `inputs` does not name exactly one tower, or the
        prototypes' width is not the encoder's.

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
    return ZeroShotResult(np.argmax(scores, axis=1), scores)


def _prompt_list(feature, prompts: Any) -> list:
    """One class's prompts as a list of single values."""
    if isinstance(prompts, (str, bytes)):
        return [prompts]
    if feature.modality != "text":
        array = np.asarray(prompts) if not isinstance(prompts, (list, tuple)) else None
        if array is not None and array.dtype.kind not in "SUO" and array.ndim == len(feature.shape):
            return [array]  # one decoded value
    return list(prompts)
