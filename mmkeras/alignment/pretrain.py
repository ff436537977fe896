"""Alignment pre-training, then fine-tuning: a classifier whose branches start from an aligned encoder.

Labels are expensive, pairs are cheap: a picture with its caption, a clip with
its transcript. `pretrain_encoder` aligns modalities on pairs alone;
`build_classifier_from_encoder` builds the usual `build_classifier` model with
the very same branch options and copies each tower's `<feature>_branch`
weights into the classifier's `<feature>_branch`, checking that every layer
and weight lines up and that the copied branches compute the same embeddings.
The classifier is then trained as usual, typically on few labels.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mmkeras.alignment.common import check_positives
from mmkeras.alignment.contrastive import ContrastiveLoss
from mmkeras.alignment.dual_encoder import (
    BRANCH_SUFFIX,
    DualEncoder,
    build_dual_encoder,
    resolve_features,
)
from mmkeras.branches.kerashub import KerasHubEncoder
from mmkeras.branches.text import make_vectorizer
from mmkeras.branches.token_dropout import TokenDropout
from mmkeras.data.pipeline import make_dataset, read_split, text_corpus
from mmkeras.models.classifier import build_classifier
from mmkeras.models.common import leaf_layers
from mmkeras.spec import DatasetSpec, FeatureSpec
from mmkeras.training.callbacks import RareTokenDropoutWarmup
from mmkeras.training.class_weights import split_labels

# TextVectorization's vocabulary starts with the padding and OOV tokens, which `vocabulary=` must not list.
RESERVED_TOKENS = 2


def pretrain_encoder(
    spec: DatasetSpec,
    modalities: Sequence[str] = ("image", "text"),
    *,
    epochs: int = 10,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    loss: keras.losses.Loss | None = None,
    positives: str = "pairs",
    split: str = "train",
    exclude_classes: Sequence[str] = (),
    seed: int | None = None,
    verbose: int | str = 0,
    rare_token_warmup: float = 0.0,
    **encoder_options: Any,
) -> tuple[DualEncoder, keras.callbacks.History]:
    """Build a dual encoder and align its towers on a split's pairs (no labels needed).

    Args:
      spec: the dataset spec.
      modalities: the modalities or feature names to align (see `build_dual_encoder`).
      epochs: passes over the split.
      batch_size: pairs per step; every other pair of the batch is a negative,
        so larger batches give a harder, better task.
      learning_rate: Adam's learning rate.
      loss: the alignment loss; default `ContrastiveLoss(positives=positives)`
        with a learned temperature.
      positives: the default loss's positives: "pairs" (instance pairing, no
        labels used) or "labels" (label-aware: same-class rows of the batch
        are positives too; better for data paired by class, such as
        AV-MNIST, see `benchmarks/results/alignment_avmnist.md`). Ignored
        when `loss` is given. For data paired by instance that also has
        labels (a picture and its own description), give
        `loss=ContrastiveLoss(positives="labels", partner_share=0.5)`: on
        tuxpaint it beat both at instance and class level
        (`benchmarks/results/alignment_tuxpaint_partner_share.md`).
      split: the split of pairs to train on.
      exclude_classes: class names whose examples are left out, e.g. to test
        zero-shot recognition of classes the encoder never saw; their texts
        are left out of the learned text vocabularies too.
      seed: seed for weights, shuffling and augmentation; with a seed the
        split's decoding also keeps its order, so that a run is reproducible.
      verbose: Keras `fit` verbosity.
      rare_token_warmup: the share of the epochs over which the text towers'
        frequency-aware token dropout ramps in from nothing (see
        `RareTokenDropoutWarmup`); 0 (the default): full strength from the
        first epoch. `mmkeras.train` ramps it over half the epochs; here 0.5
        had no consistent effect on tuxpaint's retrieval and once collapsed a
        seed's text -> image R@1 (`benchmarks/results/alignment_notes.md`).
        Its strength per epoch is in the history (`rare_token_strength`)
        when a tower has it.
      **encoder_options: `build_dual_encoder` arguments (embed_dim, branch_options, ...).

    Returns:
      `(encoder, history)`.

    Raises:
      ValueError: for unknown `positives`, unknown class names in `exclude_classes`, or fewer
        remaining examples than one batch.

    Example:
      >>> encoder, history = pretrain_encoder(load_spec("tiny"), ("image", "audio"), epochs=3, batch_size=16)
    """
    check_positives(positives)
    unknown = sorted(set(exclude_classes) - set(spec.label.class_names))
    if unknown:
        raise ValueError(
            f"Unknown classes {unknown} in `exclude_classes`; the spec's are {list(spec.label.class_names)}."
        )
    excluded = [spec.label.class_names.index(c) for c in exclude_classes]
    if seed is not None:
        keras.utils.set_random_seed(seed)
    if excluded:
        # Their words stay out too: each text branch learns its vocabulary (unless one is given) and the
        # word counts of its frequency-aware token dropout from the other classes' texts.
        features = [f.name for f in resolve_features(spec, modalities)]
        corpora = texts_without_classes(spec, features, excluded, split=split)
        branch_options = dict(encoder_options.get("branch_options") or {})
        for name, texts in corpora.items():
            branch_options[name] = {"corpus": texts, **dict(branch_options.get(name) or {})}
        encoder_options["branch_options"] = branch_options
    encoder = build_dual_encoder(spec, modalities, **encoder_options)
    loss = ContrastiveLoss(positives=positives) if loss is None else loss
    encoder.compile(keras.optimizers.Adam(learning_rate), loss=loss)
    dataset = make_dataset(spec.with_features(list(encoder.feature_names)), split, batch_size=batch_size,
                           training=True, seed=seed, deterministic=seed is not None)
    if excluded:
        kept = int(np.sum(~np.isin(split_labels(spec, split), excluded)))
        if kept < batch_size:
            raise ValueError(
                f"Only {kept} examples of split {split!r} remain without classes {list(exclude_classes)}; use a "
                f"batch_size of at most {kept}."
            )
        dataset = exclude_class_ids(dataset, excluded, batch_size)
        # The filter hides the epoch length from Keras; it is known from the labels.
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(kept // batch_size))
    history = encoder.fit(dataset, epochs=epochs, verbose=verbose, shuffle=False,  # the dataset shuffles
                          callbacks=[RareTokenDropoutWarmup(rare_token_warmup)])
    return encoder, history


def exclude_class_ids(dataset: tf.data.Dataset, class_ids: Sequence[int], batch_size: int) -> tf.data.Dataset:
    """Drop the examples of some classes from a batched `(features, label)` dataset, re-batching the rest.

    `pretrain_encoder` uses it to keep held-out classes (e.g. for zero-shot
    tests) out of alignment. The result has an unknown cardinality; set it with
    `tf.data.experimental.assert_cardinality` if Keras needs the epoch length.

    Args:
      dataset: a batched dataset of `(features, label)` with integer labels.
      class_ids: the class ids whose examples are dropped.
      batch_size: the batch size of the result; a last, smaller batch is dropped.

    Returns:
      The filtered dataset, re-batched to full batches of `batch_size` and prefetched.

    Example:
      >>> dataset = exclude_class_ids(make_dataset(spec, "train", batch_size=32, training=True), [2], 32)
    """
    excluded = tf.constant(list(class_ids), tf.int32)

    def keep(features, label):
        return tf.logical_not(tf.reduce_any(tf.equal(tf.cast(label, tf.int32), excluded)))

    return dataset.unbatch().filter(keep).batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def texts_without_classes(
    spec: DatasetSpec, feature_names: Sequence[str], class_ids: Sequence[int], *, split: str = "train"
) -> dict[str, list[str]]:
    """Read each text feature's texts from a split, leaving out some classes' examples.

    Args:
      spec: the dataset spec.
      feature_names: features to consider (non-text ones are skipped).
      class_ids: the classes whose texts are left out.
      split: the split to read.

    Returns:
      Text feature name -> the texts of the examples that have one, in split order.
    """
    excluded = {int(c) for c in class_ids}
    corpora = {}
    for name in feature_names:
        feature = spec.feature(name)
        if feature.modality != "text":
            continue
        records = read_split(spec.with_features([name]), split).as_numpy_iterator()
        corpora[name] = [raw[name].decode("utf-8", errors="replace") for raw, label in records
                         if raw[feature.presence_key] and int(label) not in excluded]
    return corpora


def vocabularies_without_classes(
    spec: DatasetSpec, feature_names: Sequence[str], class_ids: Sequence[int], *, split: str = "train"
) -> dict[str, list[str]]:
    """Learn each text feature's vocabulary from a split's texts, leaving out some classes' examples.

    Takes the arguments of `texts_without_classes`, whose texts it learns from.

    Returns:
      Text feature name -> token list (for `vocabularies=`), learned as
      `build_classifier` learns it (`make_vectorizer` on the texts).
    """
    return {name: make_vectorizer(spec.feature(name), corpus=texts).get_vocabulary()[RESERVED_TOKENS:]
            for name, texts in texts_without_classes(spec, feature_names, class_ids, split=split).items()}


def encoder_vocabularies(encoder: DualEncoder) -> dict[str, list[str]]:
    """The token list of each text tower, in the form `build_classifier(vocabularies=...)` takes.

    Text towers on a pretrained encoder (a KerasHub preset) tokenise with the
    preset's own tokenizer, so they have no vocabulary here.
    """
    vocabularies = {}
    for name in encoder.feature_names:
        vectorizer = _vectorizer(_branch(encoder, name), name)
        if encoder.spec.feature(name).modality == "text" and vectorizer is not None:
            vocabularies[name] = list(vectorizer.get_vocabulary())[RESERVED_TOKENS:]
    return vocabularies


def build_classifier_from_encoder(
    encoder: DualEncoder,
    spec: DatasetSpec | None = None,
    *,
    freeze_branches: bool = False,
    **classifier_options: Any,
) -> keras.Model:
    """Build a classifier whose branches start from an aligned encoder's towers.

    The classifier is `build_classifier(spec, ...)` with the encoder's branch
    width, branch options and text vocabularies, so its `<feature>_branch`
    sub-models are built exactly like the towers' branches; their weights are
    then copied (see `transfer_tower_weights`). Fusion and head start fresh.

    Args:
      encoder: a (pre-trained) `DualEncoder`.
      spec: the classifier's spec; default the encoder's spec (its features
        only). Features without a tower start from scratch.
      freeze_branches: keep the copied branches fixed while fine-tuning.
      **classifier_options: other `build_classifier` arguments (fusion, units,
        dropout_rate, modality_dropout, seed, ...). Overriding `embed_dim` or
        `branch_options` makes the copy fail unless the branches still line up.

    Returns:
      The uncompiled classifier.

    Raises:
      ValueError: if a branch does not line up with its tower.

    Example:
      >>> classifier = build_classifier_from_encoder(encoder, fusion="concat")
      >>> classifier.compile("adam", loss={"probabilities": "sparse_categorical_crossentropy"})
    """
    spec = encoder.spec if spec is None else spec
    config = encoder.branch_config
    vocabularies = {**encoder_vocabularies(encoder), **dict(classifier_options.pop("vocabularies", None) or {})}
    options = {
        "embed_dim": config.get("embed_dim", 128),
        "branch_options": _with_token_dropout_as_in(encoder, spec, config.get("branch_options")),
        "vocabularies": vocabularies,
        **classifier_options,
    }
    classifier = build_classifier(spec, **options)
    transfer_tower_weights(encoder, classifier, freeze=freeze_branches)
    return classifier


def _with_token_dropout_as_in(encoder: DualEncoder, spec: DatasetSpec, branch_options) -> dict:
    """The encoder's branch options, with each text tower's frequency-aware token dropout reproduced.

    A text branch built from a given vocabulary has `rare_token_dropout` only with a corpus to count words
    in, so a tower that has it gets the classifier's train texts (the copy then brings the tower's counts),
    and one that has not (an encoder saved before the option) gets it turned off, so that the layers line up.
    """
    branch_options = {key: dict(value) for key, value in (branch_options or {}).items()}
    for name in encoder.feature_names:
        if name not in spec.feature_names or spec.feature(name).modality != "text":
            continue
        rare = any(isinstance(layer, TokenDropout) and layer.rare for layer in leaf_layers(_branch(encoder, name)))
        own = branch_options.setdefault(name, {})
        if rare:
            own.setdefault("corpus", text_corpus(spec, name, split="train"))
        else:
            own.setdefault("rare_token_dropout", 0.0)
    return branch_options


def transfer_tower_weights(
    encoder: DualEncoder,
    classifier: keras.Model,
    *,
    feature_names: Sequence[str] | None = None,
    freeze: bool = False,
    check_outputs: bool = True,
) -> list[str]:
    """Copy each tower's branch weights into the classifier's branch of the same feature.

    Both were built by the same branch builder, so their layers and weights
    come in the same order; this is checked (layer types, weight shapes, text
    vocabularies), and with `check_outputs` both branches embed a small probe
    batch to confirm they now compute the same thing.

    Args:
      encoder: the source `DualEncoder`.
      classifier: a model with `<feature>_branch` sub-models (from `build_classifier`).
      feature_names: the features to copy; default every tower the classifier has a branch for.
      freeze: make the copied branches non-trainable.
      check_outputs: compare the branches' embeddings on a probe batch after copying.

    Returns:
      The features whose branches were copied.

    Raises:
      ValueError: if a requested branch is missing or does not line up.
    """
    branch_names = {layer.name for layer in classifier.layers}
    if feature_names is None:
        feature_names = [n for n in encoder.feature_names if f"{n}{BRANCH_SUFFIX}" in branch_names]
    copied = []
    for name in feature_names:
        if f"{name}{BRANCH_SUFFIX}" not in branch_names:
            raise ValueError(f"The classifier {classifier.name!r} has no branch {name}{BRANCH_SUFFIX!r} to copy into.")
        source, target = _branch(encoder, name), classifier.get_layer(f"{name}{BRANCH_SUFFIX}")
        _check_lined_up(encoder.spec.feature(name), source, target)
        target.set_weights(source.get_weights())
        if check_outputs:
            _check_same_outputs(encoder.spec.feature(name), source, target)
        if freeze:
            target.trainable = False
        copied.append(name)
    return copied


def _branch(encoder: DualEncoder, name: str) -> keras.Model:
    return encoder.get_tower(name).get_layer(f"{name}{BRANCH_SUFFIX}")


def _vectorizer(branch: keras.Model, name: str):
    """A text branch's `TextVectorization` layer, or None (a branch on a pretrained encoder has none)."""
    return next((layer for layer in branch.layers if layer.name == f"{name}_vectorizer"), None)


def _check_lined_up(feature: FeatureSpec, source: keras.Model, target: keras.Model) -> None:
    hint = (
        "Build the classifier with the encoder's branch options (build_classifier_from_encoder does) so that "
        "both branches have the same layers."
    )
    source_types = [type(layer).__name__ for layer in leaf_layers(source)]
    target_types = [type(layer).__name__ for layer in leaf_layers(target)]
    if source_types != target_types:
        raise ValueError(f"Branch {feature.name!r}: the layers differ ({source_types} vs {target_types}). {hint}")
    source_shapes = [tuple(w.shape) for w in source.weights]
    target_shapes = [tuple(w.shape) for w in target.weights]
    if source_shapes != target_shapes:
        raise ValueError(
            f"Branch {feature.name!r}: the weight shapes differ ({source_shapes} vs {target_shapes}). {hint}"
        )
    presets = [[layer.preset for layer in leaf_layers(branch) if isinstance(layer, KerasHubEncoder)]
               for branch in (source, target)]
    if presets[0] != presets[1]:
        raise ValueError(
            f"Branch {feature.name!r}: the KerasHub presets differ ({presets[0]} vs {presets[1]}). {hint}"
        )
    vectorizers = [_vectorizer(branch, feature.name) for branch in (source, target)]
    if None not in vectorizers and vectorizers[0].get_vocabulary() != vectorizers[1].get_vocabulary():
        raise ValueError(
            f"Branch {feature.name!r}: the text vocabularies differ, so token ids would not mean the same "
            "words. Pass vocabularies=encoder_vocabularies(encoder) to build_classifier."
        )


def _check_same_outputs(feature: FeatureSpec, source: keras.Model, target: keras.Model) -> None:
    probe = _probe_batch(feature)
    expected = np.asarray(source(probe, training=False)["embedding"])
    actual = np.asarray(target(probe, training=False)["embedding"])
    if not np.allclose(expected, actual, atol=1e-5, rtol=1e-5):
        raise ValueError(
            f"Branch {feature.name!r}: after copying the weights the classifier's branch computes other embeddings "
            f"than the tower's (largest difference {np.abs(expected - actual).max():.3g})."
        )


def _probe_batch(feature: FeatureSpec) -> tf.Tensor:
    """Two deterministic examples of a feature's decoded input."""
    rng = np.random.default_rng(0)
    if feature.modality == "text":
        return tf.constant(["a b c", "the end"])
    if feature.modality == "image":
        return tf.constant(rng.integers(0, 256, (2, *feature.shape)).astype(np.uint8))
    return tf.constant(rng.uniform(-0.5, 0.5, (2, *feature.shape)).astype(np.float32))


def label_fraction_indices(labels: np.ndarray, fraction: float, *, seed: int = 0) -> np.ndarray:
    """Indices of a stratified random subset: `fraction` of each class (at least one example each).

    Example:
      >>> label_fraction_indices(np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]), 0.1).size
      2
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"`fraction` must be in (0, 1], got {fraction!r}.")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, round(fraction * len(members)))
        chosen.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen))

