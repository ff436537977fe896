"""Cross-modal retrieval with a dual encoder: embed values, find the nearest items of another modality.

Values may be given raw, as a client or a manifest holds them (text strings,
encoded image bytes, WAV bytes), or decoded, as the tf.data pipeline yields
them (strings, uint8 images, float32 waveforms). Raw values are decoded by
`mmkeras.data.decoders.decode_batch`, the pipeline's and the serving export's
own decoders, so the three can never disagree.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from mmkeras.alignment.diversity import DEFAULT_DEPTH, ranked_lists
from mmkeras.alignment.dual_encoder import DualEncoder
from mmkeras.alignment.hubness import DEFAULT_NEIGHBOURS, rescore
from mmkeras.alignment.metrics import DEFAULT_KS, check_diverse_scoring, cross_modal_retrieval
from mmkeras.checks import check_positive_int
from mmkeras.data.decoders import decode_batch
from mmkeras.data.pipeline import make_dataset
from mmkeras.spec import DatasetSpec


class RetrievalResult(NamedTuple):
    """The top-k gallery items of each query, best first.

    Attributes:
      indices: (num_queries, k) int gallery row numbers.
      scores: (num_queries, k) float scores: cosine similarities, or the
        CSLS / inverted-softmax scores the items were ranked by.
    """

    indices: np.ndarray
    scores: np.ndarray


def is_raw(modality: str, values: Any) -> bool:
    """Whether image or audio values are raw (encoded bytes, strings) rather than decoded arrays; text is raw."""
    if modality == "text":
        return True
    return np.asarray(values if not isinstance(values, tf.Tensor) else values.numpy()).dtype.kind in "SUO"


def decode_values(spec: DatasetSpec, feature_name: str, values: Any) -> np.ndarray | tf.Tensor:
    """Decode raw values of one feature with `decode_batch`; pass decoded values through.

    Args:
      spec: a spec holding the feature (e.g. `encoder.spec`).
      feature_name: the feature.
      values: (n,) raw values, or (n, *feature.shape) decoded values.

    Returns:
      The decoded (n, *feature.shape) values (text: a string tensor).

    Raises:
      ValueError: if decoded values do not have the feature's shape.
      tf.errors.InvalidArgumentError: for corrupt raw bytes (the message names the feature).
    """
    feature = spec.feature(feature_name)
    if not is_raw(feature.modality, values):
        array = np.asarray(values)
        if array.shape[1:] != feature.shape:
            raise ValueError(
                f"Decoded values of {feature_name!r} must have shape (n, {', '.join(map(str, feature.shape))}), "
                f"got {array.shape}. Pass raw file bytes instead to have them decoded."
            )
        return array
    strings = tf.constant([v.encode("utf-8") if isinstance(v, str) else v for v in _as_list(values)], tf.string)
    return decode_batch(spec.with_features([feature_name]), {feature_name: strings})[feature_name]


def embed(encoder: DualEncoder, feature_name: str, values: Any, *, batch_size: int = 64) -> np.ndarray:
    """Embed values of one modality with its tower.

    Args:
      encoder: a `DualEncoder`.
      feature_name: the tower's feature.
      values: (n,) raw values (text strings, image bytes, WAV bytes) or
        (n, *feature.shape) decoded values. An empty raw value decodes as a
        missing modality (zeros), whose embedding means nothing: leave such
        rows out.
      batch_size: examples per tower call.

    Returns:
      A (n, embed_dim) float32 array of unit vectors.

    Example:
      >>> embed(encoder, "caption", ["a red ball", "a blue box"]).shape
      (2, 128)
    """
    decoded = decode_values(encoder.spec, feature_name, values)
    if len(decoded) == 0:
        return np.zeros((0, encoder.embed_dim), np.float32)
    # Through tf.data: string tensors (text) go in as they are.
    batches = tf.data.Dataset.from_tensor_slices(decoded).batch(batch_size)
    return np.asarray(encoder.get_tower(feature_name).predict(batches, verbose=0), np.float32)


SPACES = ("embedding", "classes")


def class_space(encoder: DualEncoder, embeddings: Mapping[str, np.ndarray]) -> dict:
    """Map embeddings into the label space: each tower's head's class probabilities.

    An encoder trained with classification heads (`classification_weight` >
    0; `classification_head="shared"` gives every modality the same head)
    places every modality in one more shared space: the classes. The dot
    product of two items' probability vectors is the probability that they
    are of the same class (if the heads' errors are independent), so ranking
    a gallery by it puts first the items most likely to share the query's
    class, confident ones ahead of unsure ones. It needs labels to train,
    knows only the trained classes, and puts whole classes together, so it
    raises class-level R@1 where the heads are accurate and lowers R@10 and
    the mean rank of queries whose head is wrong (a wrong class's items all
    come first): `benchmarks/results/alignment_avmnist_shared_head.md`
    measures both.

    Args:
      encoder: a `DualEncoder` with classification heads.
      embeddings: feature name -> (n, embed_dim) embeddings of that feature's tower.

    Returns:
      Feature name -> (n, num_classes) float32 softmax probabilities, ready for
      `retrieve_embeddings` (whose "cosine" scoring is then their dot product;
      they are not unit vectors, so keep to that scoring).

    Raises:
      ValueError: if the encoder has no classification heads.

    Example:
      >>> vectors = class_space(encoder, {"picture": embed(encoder, "picture", images)})
      >>> vectors["picture"].shape, vectors["picture"].sum(axis=1)[0]
      ((n, 10), 1.0)
    """
    logits = encoder.class_logits({name: np.asarray(value, np.float32) for name, value in embeddings.items()})
    return {name: tf.nn.softmax(tf.cast(value, tf.float32)).numpy() for name, value in logits.items()}


def _check_space(space: str, scoring: str) -> str:
    if space not in SPACES:
        raise ValueError(f"`space` must be one of {list(SPACES)}, got {space!r}.")
    if space == "classes" and scoring != "cosine":
        raise ValueError(
            f"space='classes' ranks by the dot product of class probabilities (scoring='cosine'); the "
            f"hub-reducing scoring {scoring!r} assumes unit embeddings. Use scoring='cosine' there."
        )
    return space


def retrieve_embeddings(
    query_embeddings: np.ndarray,
    gallery_embeddings: np.ndarray,
    k: int = 5,
    *,
    scoring: str = "cosine",
    neighbours: int = DEFAULT_NEIGHBOURS,
    reference_embeddings: np.ndarray | None = None,
    diversity: float = 0.0,
    nearest_first: int = 1,
) -> RetrievalResult:
    """The k best gallery embeddings of each query embedding, by cosine or a hub-reducing scoring.

    Args:
      query_embeddings: (num_queries, dim) unit vectors.
      gallery_embeddings: (num_gallery, dim) unit vectors.
      k: how many gallery items to return per query.
      scoring: "cosine", "csls", "inverted_softmax" or "centred" (see `mmkeras.alignment.hubness.rescore`).
      neighbours: CSLS's neighbourhood size.
      reference_embeddings: query-modality embeddings that measure each
        gallery item's neighbourhood for CSLS / inverted softmax, and whose
        mean centres the queries for "centred" (default the queries; pass a
        larger pool when asking a few queries at a time).
      diversity: 0 lists by score; in (0, 1), by maximal marginal relevance
        (`mmkeras.alignment.diversity`, cosine scoring only): items much like
        one already listed wait, so the list spans several regions of the space.
      nearest_first: with a diversity, how many items lead the list by score
        alone before MMR takes over (1: classic MMR; 5 keeps the first five
        as the plain ranking has them).

    Raises:
      ValueError: if k is not a positive integer, for an unknown scoring, or a
        diversity outside [0, 1) or with a scoring other than "cosine".

    Example:
      >>> retrieve_embeddings(np.eye(2), np.eye(2)[::-1], k=1).indices.tolist()
      [[1], [0]]
    """
    k = check_positive_int(k, "k")
    scores = rescore(
        query_embeddings, gallery_embeddings, check_diverse_scoring(scoring, diversity), neighbours=neighbours,
        reference_embeddings=reference_embeddings,
    ).astype(np.float32)
    # Equal scores stay in gallery order.
    indices = ranked_lists(scores, gallery_embeddings, k, diversity=diversity, nearest_first=nearest_first)
    return RetrievalResult(indices, np.take_along_axis(scores, indices, axis=1))


def retrieve(
    encoder: DualEncoder,
    queries: Mapping[str, Any],
    gallery: Mapping[str, Any],
    k: int = 5,
    *,
    batch_size: int = 64,
    scoring: str = "cosine",
    neighbours: int = DEFAULT_NEIGHBOURS,
    reference: Mapping[str, Any] | None = None,
    space: str = "embedding",
    diversity: float = 0.0,
    nearest_first: int = 1,
) -> RetrievalResult:
    """Find, for each query, the k nearest gallery items of another modality.

    Args:
      encoder: a `DualEncoder` with towers for both features.
      queries: `{feature_name: values}`, one feature, raw or decoded (see `embed`).
      gallery: `{feature_name: values}`, one feature (usually another
        modality; the same one gives within-modality search).
      k: how many gallery items to return per query.
      batch_size: examples per tower call.
      scoring: "cosine"; or "csls" / "inverted_softmax" / "centred", which rank
        down "hub" items that come back for most queries (see `hub_occurrence`).
      neighbours: CSLS's neighbourhood size.
      reference: `{feature_name: values}` of the queries' feature, the pool
        that measures each gallery item's neighbourhood for the hub-reducing
        scorings; default the queries themselves (fine for a large query set,
        needed for one or a few queries).
      space: "embedding" (the shared embedding space) or "classes" (the
        classification heads' label space, see `class_space`; needs an
        encoder trained with heads).
      diversity, nearest_first: 0 lists the nearest items; a diversity in
        (0, 1) gives a diversified list (see `retrieve_embeddings`), for
        queries whose class is uncertain.

    Returns:
      A `RetrievalResult` of (num_queries, k) gallery indices and scores, best first.

    Raises:
      ValueError: if `queries`, `gallery` or `reference` does not name exactly
        one feature of the encoder (`reference` the queries' one), k is not
        positive, or the scoring is unknown.

    Example:
      >>> result = retrieve(encoder, {"caption": ["a red ball"]}, {"picture": png_bytes_list}, k=3)
      >>> result.indices.shape
      (1, 3)
    """
    _check_space(space, scoring)
    query_name, query_values = _single(encoder, queries, "queries")
    gallery_name, gallery_values = _single(encoder, gallery, "gallery")

    def vectors(name, values):
        embedded = embed(encoder, name, values, batch_size=batch_size)
        return class_space(encoder, {name: embedded})[name] if space == "classes" else embedded

    reference_embeddings = None
    if reference is not None:
        reference_name, reference_values = _single(encoder, reference, "reference")
        if reference_name != query_name:
            raise ValueError(
                f"`reference` holds values of the queries' feature {query_name!r} (it stands for the queries), "
                f"got {reference_name!r}."
            )
        reference_embeddings = vectors(reference_name, reference_values)
    return retrieve_embeddings(
        vectors(query_name, query_values),
        vectors(gallery_name, gallery_values),
        k,
        scoring=scoring,
        neighbours=neighbours,
        reference_embeddings=reference_embeddings,
        diversity=diversity,
        nearest_first=nearest_first,
    )


def embed_dataset(encoder: DualEncoder, dataset: tf.data.Dataset) -> tuple[dict, np.ndarray, np.ndarray]:
    """Embed every batch of a `make_dataset` pipeline with every tower.

    Args:
      encoder: a `DualEncoder`.
      dataset: batches of `(features, label)` as `make_dataset` yields them.

    Returns:
      `(embeddings, labels, complete)`: feature name -> (n, embed_dim) array,
      the (n,) class ids, and a (n,) bool array, True where every tower's
      modality is present (the rows retrieval is measured on).
    """
    chunks: dict[str, list] = {name: [] for name in encoder.feature_names}
    labels, complete = [], []
    for features, label in dataset:
        outputs = encoder(features, training=False)
        present = np.ones(len(label), bool)
        for name in encoder.feature_names:
            chunks[name].append(np.asarray(outputs[name]))
            flag = features.get(f"{name}_present")
            if flag is not None:
                present &= np.asarray(flag, bool)
        labels.append(np.asarray(label))
        complete.append(present)
    embeddings = {name: np.concatenate(parts) for name, parts in chunks.items()}
    return embeddings, np.concatenate(labels), np.concatenate(complete)


def evaluate_retrieval(
    encoder: DualEncoder,
    split: str = "test",
    *,
    spec: DatasetSpec | None = None,
    by_class: bool = False,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 64,
    scoring: str = "cosine",
    neighbours: int = DEFAULT_NEIGHBOURS,
    hubness_k: int | None = DEFAULT_NEIGHBOURS,
    space: str = "embedding",
    diversity: float = 0.0,
    depth: int = DEFAULT_DEPTH,
    nearest_first: int = 1,
) -> dict:
    """Cross-modal retrieval metrics of an encoder on a split, in both directions, with the chance level.

    Args:
      encoder: a `DualEncoder`.
      split: the split to embed.
      spec: the spec to read it from (default `encoder.spec`); give it when
        the data moved since the encoder was built.
      by_class: count any gallery item of the query's class as a match (for
        data paired by class); default: only the same example.
      ks: the K of each Recall@K.
      batch_size: examples per batch.
      scoring: "cosine", "csls", "inverted_softmax" or "centred" (the
        hub-reducing scorings use the split's queries as their reference pool).
      neighbours: CSLS's neighbourhood size.
      hubness_k: report each direction's `hub_occurrence` of its top-k lists
        under "hubness"; None: leave it out.
      space: "embedding" or "classes" (the heads' label space, see `class_space`).
      diversity, depth, nearest_first: rank each list by maximal marginal relevance (see
        `mmkeras.alignment.metrics.retrieval_ranks`); with `by_class`, the
        results' precision@K says what it costs.

    Returns:
      `cross_modal_retrieval`'s dict, plus `"num_examples"`: the examples
      with every modality present, which are the ones measured.

    Example:
      >>> evaluate_retrieval(encoder, "test")["picture_to_caption"]["recall@5"]
      0.73...
    """
    _check_space(space, scoring)
    spec = spec if spec is not None else encoder.spec
    dataset = make_dataset(spec.with_features(list(encoder.feature_names)), split, batch_size=batch_size)
    embeddings, labels, complete = embed_dataset(encoder, dataset)
    kept = {name: values[complete] for name, values in embeddings.items()}
    if space == "classes":
        kept = class_space(encoder, kept)
    results = cross_modal_retrieval(
        kept, labels=labels[complete] if by_class else None, ks=ks, scoring=scoring, neighbours=neighbours,
        hubness_k=hubness_k, diversity=diversity, depth=depth, nearest_first=nearest_first,
    )
    results["num_examples"] = int(complete.sum())
    return results


def _single(encoder: DualEncoder, values: Mapping[str, Any], what: str) -> tuple[str, Any]:
    if not isinstance(values, Mapping) or len(values) != 1:
        raise ValueError(
            f"`{what}` must be a mapping with exactly one feature name of the encoder {list(encoder.feature_names)}, "
            f"e.g. {{'{encoder.feature_names[0]}': [...]}}; got {type(values).__name__} "
            f"{sorted(values) if isinstance(values, Mapping) else ''}."
        )
    (name, data), = values.items()
    encoder.get_tower(name)  # raises with the list of towers
    return name, data


def _as_list(values: Any) -> list:
    if isinstance(values, tf.Tensor):
        values = values.numpy()
    if isinstance(values, (str, bytes)):
        raise TypeError("Pass a sequence of values (one per example), not a single string.")
    return list(np.asarray(values, dtype=object).reshape(-1))
