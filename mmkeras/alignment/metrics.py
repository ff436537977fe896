"""Cross-modal retrieval metrics: Recall@K, precision@K, mean and median rank, both directions (NumPy).

A query (an embedding of one modality) ranks the gallery (embeddings of the
other modality) by cosine similarity. Its rank is the 1-based position of
its first relevant gallery item: the item at the same index (instance-level,
for data paired by example such as a picture and its description), or any
item of the same class when labels are given (class-level, for data paired by
class such as AV-MNIST, where no particular recording belongs to a picture).
Recall@K is the share of queries whose rank is at most K.

Ties are counted against the query: a relevant item tied with an irrelevant
one ranks after it, so a collapsed encoder (all embeddings equal) gets the
worst ranks, not the best.

Every function takes a `scoring` ("cosine", "csls", "inverted_softmax",
"centred"; see `mmkeras.alignment.hubness`): the hub-reducing scorings rank by
scores that pull back gallery items close to every query. And a `diversity`: above 0,
each list is ordered by maximal marginal relevance (see
`mmkeras.alignment.diversity`), which lists items of several regions of the
space early instead of one cluster after another.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from mmkeras.alignment.diversity import DEFAULT_DEPTH, check_diversity, diversified_order, ranked_lists
from mmkeras.alignment.hubness import DEFAULT_NEIGHBOURS, hub_occurrence, list_hub_occurrence, rescore

DEFAULT_KS = (1, 5, 10)


def retrieval_ranks(
    query_embeddings: np.ndarray,
    gallery_embeddings: np.ndarray,
    *,
    query_labels: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
    scoring: str = "cosine",
    neighbours: int = DEFAULT_NEIGHBOURS,
    diversity: float = 0.0,
    depth: int = DEFAULT_DEPTH,
    nearest_first: int = 1,
) -> np.ndarray:
    """The 1-based rank of each query's first relevant gallery item.

    Args:
      query_embeddings: (num_queries, dim) embeddings (L2-normalised: the dot
        product is the cosine).
      gallery_embeddings: (num_gallery, dim) embeddings.
      query_labels: (num_queries,) class ids, for class-level relevance;
        None: gallery item i is the one relevant item of query i.
      gallery_labels: (num_gallery,) class ids (with `query_labels`).
      scoring: how the gallery is ranked: "cosine", or a hub-reducing
        "csls" / "inverted_softmax" / "centred" (the queries are the reference pool).
      neighbours: CSLS's neighbourhood size.
      diversity: 0 ranks by score; in (0, 1), the first `depth` items of
        each list are chosen by MMR (`mmkeras.alignment.diversity`; cosine
        scoring only) and the rest follow by score.
      depth: how many items MMR orders per list.
      nearest_first: how many items lead each list by score alone before MMR
        (1: classic MMR; see `mmkeras.alignment.diversity.diversified_order`).

    Returns:
      A (num_queries,) int array of ranks in 1..num_gallery; a query without
      any relevant item gets `num_gallery + 1`.

    Raises:
      ValueError: for mismatched shapes, only one of the two label arrays, or
        a diversity with a scoring other than "cosine".

    Example:
      >>> retrieval_ranks(np.eye(2), np.eye(2)[::-1]).tolist()   # each partner is the other's nearest
      [2, 2]
    """
    return _ranking(query_embeddings, gallery_embeddings, query_labels, gallery_labels, scoring, neighbours,
                    diversity, depth, nearest_first)[2]


def _ranking(query_embeddings, gallery_embeddings, query_labels, gallery_labels, scoring, neighbours, diversity,
             depth, nearest_first) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """`retrieval_ranks`' work, with what `retrieval_metrics` reuses: `(scores, relevant, ranks, order)`, where
    `order` is each list's MMR prefix ((num_queries, depth) gallery indices) or None without a diversity."""
    queries = np.asarray(query_embeddings, dtype=np.float64)
    gallery = np.asarray(gallery_embeddings, dtype=np.float64)
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"Embeddings must be 2D with the same width, got queries {queries.shape} and gallery {gallery.shape}."
        )
    relevant = relevance_matrix(len(queries), len(gallery), query_labels, gallery_labels)
    scores = rescore(queries, gallery, check_diverse_scoring(scoring, diversity), neighbours=neighbours)
    listed = np.zeros(scores.shape, bool)
    position = np.zeros(len(queries), np.int64)
    order = None
    if diversity:
        order = diversified_order(scores, gallery, diversity=diversity, depth=depth, demote=relevant,
                                  nearest_first=nearest_first)
        rows = np.arange(len(queries))[:, None]
        listed[rows, order] = True
        hits = relevant[rows, order]
        position = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)
    # After the MMR prefix (or from the start), by score; ties count against the query.
    rest = relevant & ~listed
    best_relevant = np.where(rest, scores, -np.inf).max(axis=1)
    ahead = np.where(relevant | listed, False, scores >= best_relevant[:, None]).sum(axis=1)
    ranks = np.where(position > 0, position, listed.sum(axis=1) + ahead + 1)
    ranks = np.where(relevant.any(axis=1), ranks, len(gallery) + 1).astype(np.int64)
    return scores, relevant, ranks, order


def check_diverse_scoring(scoring: str, diversity: float) -> str:
    """MMR weighs scores against cosines, so it takes the cosine scoring (or dot products in the label space)."""
    if check_diversity(diversity) and scoring != "cosine":
        raise ValueError(
            f"A diversity above 0 re-ranks by maximal marginal relevance, which weighs each score against "
            f"cosines between gallery items; use it with scoring='cosine', not {scoring!r}."
        )
    return scoring


def relevance_matrix(
    num_queries: int,
    num_gallery: int,
    query_labels: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
) -> np.ndarray:
    """(num_queries, num_gallery) bool: which gallery items are relevant to each query.

    Raises:
      ValueError: if only one label array is given, the lengths disagree, or,
        without labels, the query and gallery counts differ.
    """
    if (query_labels is None) != (gallery_labels is None):
        raise ValueError("Give both `query_labels` and `gallery_labels` (class-level relevance) or neither.")
    if query_labels is None:
        if num_queries != num_gallery:
            raise ValueError(
                f"Instance-level retrieval pairs query i with gallery item i, so both need the same count; got "
                f"{num_queries} queries and {num_gallery} gallery items. Pass labels for class-level retrieval."
            )
        return np.eye(num_queries, dtype=bool)
    query_labels = np.asarray(query_labels).reshape(-1)
    gallery_labels = np.asarray(gallery_labels).reshape(-1)
    if len(query_labels) != num_queries or len(gallery_labels) != num_gallery:
        raise ValueError(
            f"Got {len(query_labels)} query labels for {num_queries} queries and {len(gallery_labels)} gallery "
            f"labels for {num_gallery} gallery items."
        )
    return query_labels[:, None] == gallery_labels[None, :]


def summarize_ranks(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict:
    """Recall@K for each K, and the mean and median rank.

    Turns the ranks of `retrieval_ranks` into the figures `retrieval_metrics`
    and `cross_modal_retrieval` report.

    Args:
      ranks: 1-based ranks, one per query (see `retrieval_ranks`).
      ks: the K of each Recall@K.

    Returns:
      `{"recall@<k>": share of ranks <= k, ..., "mean_rank": ..., "median_rank": ...}`,
      all floats (NaN for no ranks).

    Example:
      >>> summarize_ranks(np.array([1, 2, 7]), ks=(1, 5))
      {'recall@1': 0.333..., 'recall@5': 0.666..., 'mean_rank': 3.333..., 'median_rank': 2.0}
    """
    ranks = np.asarray(ranks)
    result = {f"recall@{k}": float(np.mean(ranks <= k)) for k in ks}
    result["mean_rank"] = float(np.mean(ranks))
    result["median_rank"] = float(np.median(ranks))
    return result


def retrieval_metrics(
    query_embeddings: np.ndarray,
    gallery_embeddings: np.ndarray,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    query_labels: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
    scoring: str = "cosine",
    neighbours: int = DEFAULT_NEIGHBOURS,
    hubness_k: int | None = None,
    diversity: float = 0.0,
    depth: int = DEFAULT_DEPTH,
    nearest_first: int = 1,
) -> dict:
    """Recall@K, mean rank and median rank of one retrieval direction, optionally with its hubness.

    With class labels it also gives precision@K, the mean share of the first
    K items that share the query's class: what a diversified ranking gives up
    for its recall.

    Args:
      query_embeddings, gallery_embeddings, query_labels, gallery_labels,
        scoring, neighbours, diversity, depth, nearest_first: see `retrieval_ranks`.
      ks: the K of each Recall@K (and precision@K).
      hubness_k: also report `hub_occurrence` of the top-`hubness_k` lists
        (under the same scoring and diversity) as "hubness"; None: leave it out.

    Returns:
      `{"recall@1": ..., "recall@5": ..., "recall@10": ..., "mean_rank": ..., "median_rank": ...}`
      (and "precision@<k>" with labels, "hubness" with `hubness_k`).
    """
    scores, relevant, ranks, order = _ranking(query_embeddings, gallery_embeddings, query_labels, gallery_labels,
                                              scoring, neighbours, diversity, depth, nearest_first)
    result = summarize_ranks(ranks, ks)
    longest = max([*ks, hubness_k or 0]) if query_labels is not None or hubness_k is not None else 0
    if longest:
        if order is not None and order.shape[1] >= min(longest, scores.shape[1]):
            lists = order[:, :longest]  # MMR is greedy: a longer prefix starts with the shorter one
        else:
            lists = ranked_lists(scores, gallery_embeddings, longest, diversity=diversity, demote=relevant,
                                 nearest_first=nearest_first)
        if query_labels is not None:
            hits = np.take_along_axis(relevant, lists, axis=1)
            result.update({f"precision@{k}": float(hits[:, :k].mean()) for k in ks})
        if hubness_k is not None:
            result["hubness"] = (hub_occurrence(scores, hubness_k) if not diversity
                                 else list_hub_occurrence(lists[:, :hubness_k], scores.shape[1]))
    return result


def cross_modal_retrieval(
    embeddings: Mapping[str, np.ndarray],
    *,
    labels: np.ndarray | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    scoring: str = "cosine",
    neighbours: int = DEFAULT_NEIGHBOURS,
    hubness_k: int | None = None,
    diversity: float = 0.0,
    depth: int = DEFAULT_DEPTH,
    nearest_first: int = 1,
) -> dict:
    """Retrieval metrics in both directions between every two modalities of the same examples.

    Args:
      embeddings: feature name -> (num_examples, dim) embeddings; row i of
        every modality is example i.
      labels: (num_examples,) class ids for class-level relevance; None for
        instance-level (the same example).
      ks: the K of each Recall@K.
      scoring, neighbours, hubness_k, diversity, depth, nearest_first: see `retrieval_metrics`.

    Returns:
      `"<query>_to_<gallery>"` -> `retrieval_metrics` for every ordered pair,
      plus `"chance"` -> the same metrics for a random ranking.

    Example:
      >>> cross_modal_retrieval({"picture": z_image, "caption": z_text})["picture_to_caption"]["recall@1"]
      0.41...
    """
    names = list(embeddings)
    if len(names) < 2:
        raise ValueError(f"Cross-modal retrieval needs two or more modalities, got {names}.")
    results = {}
    for query in names:
        for gallery in names:
            if query != gallery:
                results[f"{query}_to_{gallery}"] = retrieval_metrics(
                    embeddings[query], embeddings[gallery], ks=ks, query_labels=labels, gallery_labels=labels,
                    scoring=scoring, neighbours=neighbours, hubness_k=hubness_k, diversity=diversity, depth=depth,
                    nearest_first=nearest_first,
                )
    count = len(embeddings[names[0]])
    results["chance"] = chance_retrieval(count, count, ks=ks, query_labels=labels, gallery_labels=labels)
    return results


def chance_retrieval(
    num_queries: int,
    num_gallery: int,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    query_labels: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
) -> dict:
    """The Recall@K and ranks a uniformly random ranking gets on average: the chance level.

    With `r` relevant items among `n`, the first relevant one is in the top K
    with probability `1 - C(n - r, K) / C(n, K)`, and its expected rank is
    `(n + 1) / (r + 1)`; both are averaged over the queries. The "median_rank"
    entry is the median over queries of those expected ranks.

    Returns:
      A dict with the keys of `retrieval_metrics`.

    Example:
      >>> chance_retrieval(100, 100, ks=(1, 5))["recall@5"]    # instance-level: K / n
      0.05
    """
    relevant = relevance_matrix(num_queries, num_gallery, query_labels, gallery_labels).sum(axis=1)
    n = num_gallery
    result = {}
    for k in ks:
        misses = [math.comb(n - r, k) / math.comb(n, k) if k <= n else 0.0 for r in relevant]
        result[f"recall@{k}"] = float(np.mean([1.0 - m if r > 0 else 0.0 for m, r in zip(misses, relevant)]))
    expected = np.where(relevant > 0, (n + 1) / (relevant + 1), n + 1)
    result["mean_rank"] = float(np.mean(expected))
    result["median_rank"] = float(np.median(expected))
    if query_labels is not None:  # any K: each listed item is relevant with probability r / n
        result.update({f"precision@{k}": float(np.mean(relevant / n)) for k in ks})
    return result
