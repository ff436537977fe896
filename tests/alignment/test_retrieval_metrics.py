"""Retrieval metrics on constructed cases whose ranks are known."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from mmkeras.alignment.metrics import (
    chance_retrieval,
    cross_modal_retrieval,
    retrieval_metrics,
    retrieval_ranks,
    summarize_ranks,
)


def _from_scores(scores):
    """Query and gallery embeddings whose dot products are `scores` (queries one-hot, gallery = scores^T)."""
    scores = np.asarray(scores, dtype=float)
    return np.eye(scores.shape[0]), scores.T


# Row i: query i's similarity to each gallery item; its partner is gallery item i.
SCORES = [
    [0.9, 0.1, 0.2, 0.0, 0.3, 0.0],  # partner first: rank 1
    [0.8, 0.5, 0.7, 0.0, 0.1, 0.0],  # two items ahead: rank 3
    [0.1, 0.2, 0.6, 0.9, 0.0, 0.0],  # one ahead: rank 2
    [0.9, 0.8, 0.7, 0.1, 0.6, 0.5],  # five ahead: rank 6
    [0.0, 0.0, 0.0, 0.0, 0.5, 0.4],  # rank 1
    [0.3, 0.9, 0.8, 0.7, 0.6, 0.5],  # four ahead: rank 5
]
EXPECTED_RANKS = [1, 3, 2, 6, 1, 5]


def test_instance_ranks_and_summary_on_a_constructed_case():
    queries, gallery = _from_scores(SCORES)
    assert retrieval_ranks(queries, gallery).tolist() == EXPECTED_RANKS
    metrics = retrieval_metrics(queries, gallery, ks=(1, 5, 10))
    assert metrics == pytest.approx({
        "recall@1": 2 / 6, "recall@5": 5 / 6, "recall@10": 1.0, "mean_rank": 3.0, "median_rank": 2.5,
    })


def test_class_level_rank_is_the_first_item_of_the_query_class():
    queries, gallery = _from_scores(SCORES)
    labels = np.array([0, 1, 1, 2, 0, 2])
    # Query 1 (class 1): gallery 2 (class 1) scores 0.7, behind only gallery 0: rank 2.
    # Query 3 (class 2): best class-2 item is gallery 5 (0.5), behind 0, 1, 2, 4: rank 5.
    # Query 5 (class 2): gallery 3 (0.7) is behind gallery 1 and 2: rank 3.
    ranks = retrieval_ranks(queries, gallery, query_labels=labels, gallery_labels=labels)
    assert ranks.tolist() == [1, 2, 2, 5, 1, 3]


def test_ties_count_against_the_query():
    collapsed = np.ones((4, 3))
    assert retrieval_ranks(collapsed, collapsed).tolist() == [4, 4, 4, 4]
    assert summarize_ranks(np.array([4, 4, 4, 4]), ks=(1,))["recall@1"] == 0.0


def test_cross_modal_retrieval_reports_both_directions_and_chance():
    queries, gallery = _from_scores(SCORES)
    results = cross_modal_retrieval({"picture": queries, "caption": gallery}, ks=(1, 5))
    assert set(results) == {"picture_to_caption", "caption_to_picture", "chance"}
    assert results["picture_to_caption"]["recall@1"] == pytest.approx(2 / 6)
    # The other direction ranks pictures for each caption: the transposed score matrix.
    transposed = retrieval_ranks(gallery, queries)
    assert results["caption_to_picture"]["mean_rank"] == pytest.approx(transposed.mean())
    assert results["chance"]["recall@5"] == pytest.approx(5 / 6)


def test_chance_level_matches_an_exhaustive_average_over_random_rankings():
    labels = np.array([0, 0, 1, 1, 1])
    n = len(labels)
    exact = {"recall@1": 0.0, "recall@2": 0.0, "mean_rank": 0.0, "precision@1": 0.0, "precision@2": 0.0}
    permutations = list(itertools.permutations(range(n)))
    for order in permutations:
        # `order` lists the gallery from best to worst for every query.
        scores = np.empty((n, n))
        scores[:, list(order)] = np.arange(n, 0, -1)
        metrics = retrieval_metrics(*_from_scores(scores), query_labels=labels, gallery_labels=labels, ks=(1, 2))
        for key in exact:
            exact[key] += metrics[key] / len(permutations)
    chance = chance_retrieval(n, n, ks=(1, 2), query_labels=labels, gallery_labels=labels)
    for key, value in exact.items():
        assert chance[key] == pytest.approx(value)
    instance = chance_retrieval(10, 10, ks=(1, 5))
    assert instance["recall@5"] == pytest.approx(0.5) and instance["mean_rank"] == pytest.approx(5.5)


def test_mismatched_inputs_say_what_to_pass():
    with pytest.raises(ValueError, match="same count"):
        retrieval_ranks(np.eye(3), np.eye(4)[:, :3])
    with pytest.raises(ValueError, match="both"):
        retrieval_ranks(np.eye(3), np.eye(3), query_labels=np.zeros(3))
    with pytest.raises(ValueError, match="same width"):
        retrieval_ranks(np.eye(3), np.ones((3, 2)))
