"""The classifier: the one place where branches and fusion meet."""
from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import layers

from mmkeras.branches import BRANCHES
from mmkeras.branches.common import make_input, make_presence_input
from mmkeras.data.pipeline import text_corpus
from mmkeras.fusion import FUSIONS
from mmkeras.models.presence import (
    MissingModalityEmbedding,
    ModalityDropout,
    PresenceFlags,
)
from mmkeras.registry import lookup
from mmkeras.spec import DatasetSpec, FeatureSpec

PROBABILITIES = "probabilities"
MODALITY_WEIGHTS = "modality_weights"
AUX_PREFIX = "aux_"


def build_classifier(
    spec: DatasetSpec,
    *,
    fusion: str = "concat",
    units: int = 256,
    embed_dim: int = 128,
    dropout_rate: float = 0.3,
    modality_dropout: float | Mapping[str, float] = 0.3,
    vocabularies: Mapping[str, Sequence[str]] | None = None,
    branch_options: Mapping[str, Mapping[str, Any]] | None = None,
    fusion_options: Mapping[str, Any] | None = None,
    aux_heads: bool = False,
    seed: int | None = None,
) -> keras.Model:
    """Build a multimodal classifier for a dataset spec.

    One `keras.Input` per feature (named after it) goes through its modality's
    branch; the embeddings, with absent modalities swapped for learned
    stand-ins, are fused and classified. The defaults are tuned for small,
    noisy real data: pooled CNN stages for images, normalised log-mel frames
    for audio, dropout everywhere and light modality dropout.

    Args:
      spec: the dataset spec.
      fusion: a name in `mmkeras.FUSIONS`.
      units: width of the fused features.
      embed_dim: width of every branch's embedding.
      dropout_rate: dropout in branches, fusion and head.
      modality_dropout: probability of hiding each modality of each training
        example: one number for all, or a mapping keyed by modality or by
        feature name (the feature name wins) with a rate for every feature,
        e.g. `{"text": 0.5, "image": 0.3, "audio": 0.3}` to hide a branch that
        memorises more often than the others.
      vocabularies: text feature name -> token list; by default each text
        feature's vocabulary is learned from the spec's train split.
      branch_options: extra branch-builder arguments keyed by modality or by
        feature name (the feature name wins); the spec's per-feature `branch`
        mapping comes first.
      fusion_options: extra arguments for the fusion layer.
      aux_heads: add one classifier per modality on its branch embedding, as
        outputs `aux_<feature>` (trained by `balance="aux_heads"` or `"ogm_ge"`
        so that no branch is left under-trained by a dominant one).
      seed: seed for modality dropout.

    Returns:
      An uncompiled `keras.Model` taking `{name: tensor, "<name>_present": bool
      or None}` and returning `{"probabilities": (batch, num_classes)}`, plus
      `"modality_weights": (batch, M)` for fusions that weight modalities, and
      `"aux_<feature>": (batch, num_classes)` with `aux_heads`.

    Raises:
      ValueError: for an unknown fusion or modality, or bad options; a
        `modality_dropout` mapping with a key that is neither a feature nor a
        modality of the spec, a feature left without a rate, or a rate
        outside [0, 1).

    Example:
      >>> model = build_classifier(load_spec("tiny"), fusion="attention")
      >>> sorted(model.output)
      ['modality_weights', 'probabilities']
    """
    fusion_class = lookup(FUSIONS, fusion, "fusion")
    inputs = {f.name: make_input(f) for f in spec.features}
    flags = {f.presence_key: make_presence_input(f) for f in spec.features}
    branches = [build_branch(spec, f, embed_dim, dropout_rate, vocabularies, branch_options) for f in spec.features]
    outputs = [branch(inputs[f.name]) for branch, f in zip(branches, spec.features)]
    embeddings = [output["embedding"] for output in outputs]
    sequences = [output["sequence"] for output in outputs]
    model_outputs = {}
    if aux_heads:
        for feature, embedding in zip(spec.features, embeddings):
            logits = layers.Dense(spec.num_classes, name=f"{AUX_PREFIX}{feature.name}_logits")(embedding)
            model_outputs[AUX_PREFIX + feature.name] = layers.Activation(
                "softmax", dtype="float32", name=AUX_PREFIX + feature.name
            )(logits)

    presence = PresenceFlags(name="presence")(embeddings, [flags[f.presence_key] for f in spec.features])
    rates = modality_dropout_rates(spec, modality_dropout)
    names = spec.feature_names if isinstance(rates, Mapping) else None
    presence = ModalityDropout(rates, names=names, seed=seed, name="modality_dropout")(presence)
    embeddings = MissingModalityEmbedding(name="missing_embedding")(embeddings, presence)

    produces_logits = getattr(fusion_class, "produces_logits", False)
    options = {"dropout_rate": dropout_rate, **(fusion_options or {})}
    fused = fusion_class(units=spec.num_classes if produces_logits else units, name=f"{fusion}_fusion", **options)(
        embeddings, presence=presence, sequences=sequences
    )
    if isinstance(fused, (tuple, list)):
        fused, weights = fused
        model_outputs[MODALITY_WEIGHTS] = layers.Activation("linear", dtype="float32", name=MODALITY_WEIGHTS)(weights)
    logits = fused
    if not produces_logits:
        logits = layers.Dense(spec.num_classes, name="logits")(layers.Dropout(dropout_rate)(fused))
    model_outputs[PROBABILITIES] = layers.Activation("softmax", dtype="float32", name=PROBABILITIES)(logits)
    return keras.Model({**inputs, **flags}, model_outputs, name=f"{spec.name}_{fusion}_classifier")


def modality_dropout_rates(
    spec: DatasetSpec, modality_dropout: float | Mapping[str, float]
) -> float | dict[str, float]:
    """Resolve `build_classifier`'s `modality_dropout` into a rate, or one rate per feature name.

    A mapping may be keyed by modality (`"text"`) or by feature name
    (`"caption"`); a feature's own name wins over its modality, as in
    `branch_options`. Every feature needs a rate, so that a misspelt key
    cannot silently leave a modality at some default.

    Args:
      spec: the dataset spec (its features and their modalities).
      modality_dropout: one rate for every feature, or `{modality or feature: rate}`.

    Returns:
      The number unchanged, or `{feature name: rate}` in the spec's feature order.

    Raises:
      ValueError: for a key that is neither a feature nor a modality of the
        spec, or a feature without a rate, naming it and the valid keys. The
        rates themselves are checked by `ModalityDropout`.

    Example:
      >>> modality_dropout_rates(load_spec("tiny"), {"text": 0.5, "image": 0.3, "sound": 0.2})
      {'caption': 0.5, 'picture': 0.3, 'sound': 0.2}
    """
    if not isinstance(modality_dropout, Mapping):
        return modality_dropout
    valid = sorted({f.modality for f in spec.features} | set(spec.feature_names))
    unknown = [key for key in modality_dropout if key not in valid]
    if unknown:
        raise ValueError(
            f"modality_dropout names {unknown[0]!r}, which is neither a modality nor a feature of spec "
            f"{spec.name!r}; expected keys from {valid}."
        )
    rates, missing = {}, []
    for feature in spec.features:
        for key in (feature.name, feature.modality):
            if key in modality_dropout:
                rates[feature.name] = modality_dropout[key]
                break
        else:
            missing.append(feature.name)
    if missing:
        raise ValueError(
            f"modality_dropout gives no rate for feature(s) {missing} of spec {spec.name!r}; give one per "
            f"modality or feature, keys from {valid}, e.g. "
            f"{ {f.modality: 0.3 for f in spec.features}!r}."
        )
    return rates


def build_branch(
    spec: DatasetSpec,
    feature: FeatureSpec,
    embed_dim: int,
    dropout_rate: float,
    vocabularies: Mapping[str, Sequence[str]] | None,
    branch_options: Mapping[str, Mapping[str, Any]] | None,
) -> keras.Model:
    """Build one feature's branch with the classifier's option rules (shared by the dual encoder).

    Options are merged in order: embed_dim and dropout_rate, the spec's
    per-feature `branch` mapping, `branch_options[modality]`, then
    `branch_options[feature name]`. A text feature without a given vocabulary
    learns one from the spec's train split (or a `corpus` option); with both a
    vocabulary and a `corpus`, the vocabulary is kept and the corpus gives the
    word counts of the branch's `rare_token_dropout`.

    Args:
      spec: the dataset spec (its train split gives a text vocabulary).
      feature: the feature whose branch to build.
      embed_dim: width of the branch's outputs.
      dropout_rate: the branch's dropout.
      vocabularies: feature name -> a fixed text vocabulary, or None.
      branch_options: more builder arguments keyed by modality or feature name.

    Returns:
      The branch `keras.Model` (outputs `{"embedding", "sequence"}`).

    Raises:
      ValueError: for an option the modality's builder does not take (naming
        the feature, the spec file and the builder's arguments), or a bad value.

    Example:
      >>> build_branch(spec, spec.feature("picture"), 32, 0.1, None, {"image": {"stages": [8]}}).name
      'picture_branch'
    """
    options = {"embed_dim": embed_dim, "dropout_rate": dropout_rate, **feature.branch}
    options.update((branch_options or {}).get(feature.modality, {}))
    options.update((branch_options or {}).get(feature.name, {}))
    builder = lookup(BRANCHES, feature.modality, "modality")
    accepted = [name for name in inspect.signature(builder).parameters if name != "feature"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        where = f" (spec {spec.path})" if spec.path else ""
        raise ValueError(
            f"Feature {feature.name!r}{where}: {builder.__name__} takes no {unknown}; "
            f"the {feature.modality} branch's options are {accepted}."
        )
    if feature.modality == "text" and "vocabulary" not in options:
        if vocabularies is not None and feature.name in vocabularies:
            options["vocabulary"] = vocabularies[feature.name]  # a given `corpus` then only gives word counts
        elif "corpus" not in options:
            options["corpus"] = text_corpus(spec, feature.name, split="train")
    return builder(feature, **options)
