"""Diversified ranking: maximal marginal relevance (MMR) over a shared space.

Where classes cluster, a query placed in the wrong cluster sees that whole
cluster before any item of its own class: its first relevant item ranks
behind ~170 others on AV-MNIST, and those queries alone put the mean rank
and R@10 below a random ranking's, however good R@1 is. Maximal marginal
relevance (Carbonell and Goldstein, 1998, "The use of MMR, diversity-based
reranking for reordering documents and producing summaries") builds each
list one item at a time, taking the item with the best

    (1 - diversity) * score(query, item) - diversity * max_{chosen} cos(item, chosen)

so that an item very like one already listed waits behind a less likely
item of another region of the space. The first item is the plain ranking's;
a list of ten then covers several clusters, which is what "is a same-class
item among the first K" (Recall@K, the rank of the first relevant item)
rewards, and what a person browsing results for an uncertain query wants.
It costs precision: fewer of the first K items share the query's class
(`retrieval_metrics` reports precision@K next to it for class-level
relevance). It re-ranks; the space is unchanged.
"""
from __future__ import annotations

import numpy as np

from mmkeras.checks import check_positive_int, check_rate

# How many items of each list MMR orders; the rest follow by score. Above the largest K anyone reports.
DEFAULT_DEPTH = 50


def check_diversity(diversity: float) -> float:
    """`diversity` as a float in [0, 1), or a ValueError saying so."""
    return check_rate(diversity, "diversity", hint=" (MMR's weight on redundancy; 0 ranks by score alone, 0.5 is "
                                                   "a common choice)")


def diversified_order(
    scores: np.ndarray,
    gallery_embeddings: np.ndarray,
    *,
    diversity: float = 0.5,
    depth: int = DEFAULT_DEPTH,
    demote: np.ndarray | None = None,
    nearest_first: int = 1,
) -> np.ndarray:
    """The first `depth` gallery indices of each query's list, chosen one at a time by MMR.

    Args:
      scores: (num_queries, num_gallery) relevance scores, higher is better
        (cosines, or dot products in the label space).
      gallery_embeddings: (num_gallery, dim) gallery vectors; their dot
        products measure how alike two listed items are (unit vectors: the cosine).
      diversity: the weight on redundancy in [0, 1); 0 gives the ranking by score.
      depth: how many items to choose per query (clipped to the gallery size).
      demote: optional (num_queries, num_gallery) bool; among items whose MMR
        value ties, these are taken last (the metrics pass the relevant items,
        so that ties count against the query, as in `retrieval_ranks`).
      nearest_first: how many items are listed by score alone before MMR
        takes over (1: classic MMR, whose first item is always the nearest);
        more keeps the head of the list as precise as the plain ranking's.

    Returns:
      A (num_queries, min(depth, num_gallery)) int64 array of gallery indices, best first.

    Raises:
      ValueError: for a bad `diversity` or `depth`, or mismatched shapes.

    Example:
      >>> gallery = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0]])
      >>> diversified_order(np.array([[0.9, 0.89, 0.5]]), gallery, depth=2).tolist()  # the near-copy waits
      [[0, 2]]
    """
    diversity = check_diversity(diversity)
    depth = check_positive_int(depth, "depth")
    nearest_first = check_positive_int(nearest_first, "nearest_first")
    scores = np.asarray(scores, np.float64)
    gallery = np.asarray(gallery_embeddings, np.float64)
    if scores.ndim != 2 or gallery.ndim != 2 or scores.shape[1] != gallery.shape[0]:
        raise ValueError(
            f"Expected scores (num_queries, num_gallery) and gallery (num_gallery, dim); got scores {scores.shape} "
            f"and gallery {gallery.shape}."
        )
    if demote is not None and np.shape(demote) != scores.shape:
        raise ValueError(f"`demote` must have the scores' shape {scores.shape}, got {np.shape(demote)}.")
    num_queries, num_gallery = scores.shape
    depth = min(depth, num_gallery)
    similarity = gallery @ gallery.T
    rows = np.arange(num_queries)
    taken = np.zeros(scores.shape, bool)
    redundancy = None
    order = np.empty((num_queries, depth), np.int64)
    for step in range(depth):
        value = scores if step < nearest_first else (1.0 - diversity) * scores - diversity * redundancy
        value = np.where(taken, -np.inf, value)
        tied = value == value.max(axis=1, keepdims=True)
        if demote is not None:
            preferred = tied & ~demote
            tied = np.where(preferred.any(axis=1, keepdims=True), preferred, tied)
        chosen = tied.argmax(axis=1)
        order[:, step] = chosen
        taken[rows, chosen] = True
        alike = similarity[chosen]
        redundancy = alike if redundancy is None else np.maximum(redundancy, alike)
    return order


def ranked_lists(
    scores: np.ndarray,
    gallery_embeddings: np.ndarray,
    k: int,
    *,
    diversity: float = 0.0,
    demote: np.ndarray | None = None,
    nearest_first: int = 1,
) -> np.ndarray:
    """Each query's first k gallery indices: by score (ties: gallery order, `demote`d items last), or by MMR.

    Args:
      scores, gallery_embeddings, demote, nearest_first: see `diversified_order`.
      k: the list length (clipped to the gallery size).
      diversity: 0 ranks by score; above 0, by `diversified_order`.

    Returns:
      A (num_queries, min(k, num_gallery)) int64 array.
    """
    k = check_positive_int(k, "k")
    if check_diversity(diversity):
        return diversified_order(scores, gallery_embeddings, diversity=diversity, depth=k, demote=demote,
                                 nearest_first=nearest_first)
    scores = np.asarray(scores, np.float64)
    keys = (np.zeros(scores.shape, bool) if demote is None else np.asarray(demote, bool), -scores)
    return np.lexsort(keys, axis=1)[:, : min(k, scores.shape[1])].astype(np.int64)
