"""Hubness in a shared space: how often each gallery item is retrieved, and scorings that reduce it.

In high-dimensional spaces a few items ("hubs") sit near most queries of the
other modality: every list then starts with the same few items, and the
rest of the gallery ("anti-hubs") is almost never retrieved. `hub_occurrence`
measures it from the k-occurrence `N_k(y)`, the number of queries that have
gallery item y among their k nearest. `rescore` turns cosine similarities
into scores that penalise hubs:

- "csls", cross-domain similarity local scaling (Conneau et al., 2018,
  "Word translation without parallel data"): `2 cos(x, y) - r(x) - r(y)`,
  where `r(y)` is y's mean cosine to its `neighbours` nearest queries and
  `r(x)` the query's mean cosine to its nearest gallery items; an item close
  to everything is pulled back.
- "inverted_softmax" (Smith et al., 2017, "Offline bilingual word vectors,
  orthogonal transformations and the inverted softmax"): each gallery item's
  similarities are normalised by a softmax over the queries,
  `log P(x | y) = s(x, y) / T - logsumexp_x' s(x', y) / T`, so an item that
  is near every query shares its mass among them.

- "centred", centring (Suzuki et al., 2013, "Centering similarity measures
  to reduce hubs"): each modality's mean embedding is subtracted before the
  cosine, `cos(x - mean_x, y - mean_y)`. Two towers trained apart leave each
  modality in its own cone (the "modality gap", Liang et al., 2022), and the
  items nearest the other cone's centre become hubs; centring removes the
  offset and compares what differs between items.

All three need a pool of query-modality embeddings to measure each gallery item's
neighbourhood (or, for centring, the query modality's mean): the queries
themselves (the default), or a `reference` set when only a few queries are
asked at a time.
"""
from __future__ import annotations

import numpy as np

from mmkeras.checks import check_number, check_positive_int
from mmkeras.registry import lookup

DEFAULT_NEIGHBOURS = 10
# Smith et al. used an inverse temperature of 30.
DEFAULT_INVERTED_SOFTMAX_TEMPERATURE = 1 / 30
HUB_FRACTION = 0.01


def _cosine(scores, reference_scores, neighbours, temperature):
    """The cosines as they are."""
    return scores


def _csls(scores, reference_scores, neighbours, temperature):
    """2 cos(x, y) - r(x) - r(y): each side's mean cosine to its nearest neighbours subtracted."""
    query_radius = _mean_top(scores, neighbours, axis=1)
    gallery_radius = _mean_top(reference_scores, neighbours, axis=0)
    return 2.0 * scores - query_radius[:, None] - gallery_radius[None, :]


def _inverted_softmax(scores, reference_scores, neighbours, temperature):
    """log P(x | y): each gallery item's scores normalised by a softmax over the reference queries."""
    scaled = reference_scores / temperature
    peak = scaled.max(axis=0)
    log_partition = peak + np.log(np.exp(scaled - peak[None, :]).sum(axis=0))
    return scores / temperature - log_partition[None, :]


# Scoring name -> function(scores, reference_scores, neighbours, temperature). Read-only. "centred" moves the
# embeddings themselves (`centred_embeddings`) before the cosines, which it then keeps.
SCORINGS = {"cosine": _cosine, "csls": _csls, "inverted_softmax": _inverted_softmax, "centred": _cosine}
CENTRED = "centred"


def rescore(
    query_embeddings: np.ndarray,
    gallery_embeddings: np.ndarray,
    scoring: str = "cosine",
    *,
    neighbours: int = DEFAULT_NEIGHBOURS,
    temperature: float = DEFAULT_INVERTED_SOFTMAX_TEMPERATURE,
    reference_embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """The (num_queries, num_gallery) scores of a scoring: cosine, CSLS, inverted softmax or centred cosine.

    Use "csls", "inverted_softmax" or "centred" when a few gallery items come
    back for most queries (see `hub_occurrence`); ranking by the result instead
    of the cosine spreads the lists over the gallery.

    Args:
      query_embeddings: (num_queries, dim) unit vectors.
      gallery_embeddings: (num_gallery, dim) unit vectors.
      scoring: one of `SCORINGS`.
      neighbours: CSLS's neighbourhood size (clipped to the pool sizes).
      temperature: the inverted softmax's temperature (> 0).
      reference_embeddings: (num_reference, dim) query-modality embeddings
        that measure each gallery item's neighbourhood (for "centred": whose
        mean is the query modality's centre); default the queries.

    Returns:
      A float64 array; higher is better. For "cosine", the cosines.

    Raises:
      ValueError: for an unknown scoring, bad sizes, mismatched widths, or
        "centred" with a pool of one query or one gallery item.

    Example:
      >>> hub = np.array([[1.0, 1.0]]) / np.sqrt(2)
      >>> rescore(np.eye(2), np.vstack([np.eye(2), hub]), "csls", neighbours=1).round(2)
      array([[ 0.  , -2.  , -0.29],
             [-2.  ,  0.  , -0.29]])
    """
    function = lookup(SCORINGS, scoring, "scoring")
    neighbours = check_positive_int(neighbours, "neighbours")
    temperature = check_number(temperature, "temperature", finite=True)
    queries = np.asarray(query_embeddings, np.float64)
    gallery = np.asarray(gallery_embeddings, np.float64)
    reference = queries if reference_embeddings is None else np.asarray(reference_embeddings, np.float64)
    for name, array in (("queries", queries), ("gallery", gallery), ("reference", reference)):
        if array.ndim != 2 or array.shape[1] != gallery.shape[-1]:
            raise ValueError(
                f"Embeddings must be 2D with the same width; got {name} {array.shape} and gallery {gallery.shape}."
            )
    if scoring == CENTRED:
        queries, gallery, reference = centred_embeddings(queries, gallery, reference)
    scores = queries @ gallery.T
    reference_scores = scores if reference_embeddings is None else reference @ gallery.T
    return function(scores, reference_scores, neighbours, temperature)


def centred_embeddings(queries: np.ndarray, gallery: np.ndarray,
                       reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The "centred" scoring's vectors: queries and reference less the reference's mean, gallery less its own, unit.

    Raises:
      ValueError: if the reference or the gallery has a single row (its mean is
        the item itself, and nothing would be left to compare).
    """
    for name, pool in (("query", reference), ("gallery", gallery)):
        if len(pool) < 2:
            raise ValueError(
                f"The 'centred' scoring subtracts the {name} modality's mean embedding, which one item cannot "
                "give: pass more gallery items, or a `reference` pool of query-modality embeddings."
            )
    query_centre, gallery_centre = reference.mean(axis=0), gallery.mean(axis=0)
    return _unit(queries - query_centre), _unit(gallery - gallery_centre), _unit(reference - query_centre)


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def hub_occurrence(scores: np.ndarray, k: int = DEFAULT_NEIGHBOURS, *, hub_fraction: float = HUB_FRACTION) -> dict:
    """How unevenly the gallery is retrieved: the k-occurrence of every item, summarised.

    `N_k(y)` counts the queries whose top k holds gallery item y; a random
    ranking gives every item about `k * num_queries / num_gallery`. A
    right-skewed `N_k` (a few items in most lists) is hubness.

    Args:
      scores: (num_queries, num_gallery) scores (e.g. from `rescore`), higher is better.
      k: the list length.
      hub_fraction: the share of the gallery counted as "the top hubs" (at least one item).

    Returns:
      A dict: "k"; "skewness" of `N_k` (0 for a symmetric spread, > 1 is
      strong hubness); "hub_share", the share of all top-k slots taken by the
      `hub_fraction` most retrieved items (a random ranking gives about
      `hub_fraction`); "queries_with_hub", the share of queries with one of
      those items in their top k; "max_occurrence" over the expected
      occurrence; "antihub_share", the share of gallery items in no list.

    Raises:
      ValueError: for a score matrix that is not 2D, or bad k / fraction.

    Example:
      >>> scores = np.array([[0.9, 0.1, 0.2], [0.8, 0.3, 0.1], [0.7, 0.2, 0.6]])
      >>> hub_occurrence(scores, k=1)["hub_share"]          # item 0 is every query's nearest
      1.0
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or 0 in scores.shape:
        raise ValueError(f"`scores` must be a non-empty (num_queries, num_gallery) matrix, got {scores.shape}.")
    k = min(check_positive_int(k, "k"), scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return list_hub_occurrence(top, scores.shape[1], hub_fraction=hub_fraction)


def list_hub_occurrence(lists: np.ndarray, num_gallery: int, *, hub_fraction: float = HUB_FRACTION) -> dict:
    """`hub_occurrence` of given top-k lists (e.g. a diversified ranking's), not of the lists a score matrix gives.

    Args:
      lists: (num_queries, k) gallery indices, each row one query's list.
      num_gallery: the gallery's size (items in no list count as anti-hubs).
      hub_fraction: see `hub_occurrence`.

    Returns:
      The dict of `hub_occurrence`.

    Raises:
      ValueError: for empty lists, indices outside the gallery, or a bad fraction.

    Example:
      >>> list_hub_occurrence(np.array([[0], [0], [2]]), 3, hub_fraction=0.34)["hub_share"]
      0.666...
    """
    top = np.asarray(lists)
    if top.ndim != 2 or 0 in top.shape or top.min() < 0 or top.max() >= num_gallery:
        raise ValueError(f"`lists` must be a non-empty (num_queries, k) array of indices below {num_gallery}, "
                         f"got shape {top.shape}.")
    hub_fraction = check_number(hub_fraction, "hub_fraction")
    if hub_fraction > 1:
        raise ValueError(f"`hub_fraction` is a share of the gallery in (0, 1], got {hub_fraction}.")
    k = top.shape[1]
    counts = np.bincount(top.ravel(), minlength=num_gallery).astype(np.float64)
    num_hubs = max(1, round(hub_fraction * len(counts)))
    hubs = np.argsort(-counts, kind="stable")[:num_hubs]
    spread = counts.std()
    expected = counts.mean()
    return {
        "k": int(k),
        "skewness": float(np.mean((counts - expected) ** 3) / spread**3) if spread > 0 else 0.0,
        "hub_share": float(counts[hubs].sum() / counts.sum()),
        "queries_with_hub": float(np.isin(top, hubs).any(axis=1).mean()),
        "max_occurrence": float(counts.max() / expected),
        "antihub_share": float(np.mean(counts == 0)),
    }


def _mean_top(scores: np.ndarray, count: int, axis: int) -> np.ndarray:
    """The mean of the `count` largest values along an axis (count clipped to the axis length)."""
    count = min(count, scores.shape[axis])
    top = -np.partition(-scores, count - 1, axis=axis)
    return np.take(top, np.arange(count), axis=axis).mean(axis=axis)
