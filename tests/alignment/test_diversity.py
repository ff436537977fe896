"""Diversified ranking (maximal marginal relevance) on constructed and clustered galleries."""
from __future__ import annotations

import numpy as np
import pytest

from mmkeras.alignment.diversity import diversified_order, ranked_lists
from mmkeras.alignment.hubness import hub_occurrence, list_hub_occurrence
from mmkeras.alignment.metrics import chance_retrieval, retrieval_metrics, retrieval_ranks
from mmkeras.alignment.retrieval import retrieve_embeddings


def _unit(array):
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def _clustered(num_classes=10, per_class=60, dim=32, misplaced=0.3, seed=0):
    """Tight class clusters; each query sits near its own class centre, or (a `misplaced` share) near another's,
    with its own class the second nearest: a space that is right at R@1 for most queries and badly wrong for some."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(num_classes, dim)))
    labels = np.repeat(np.arange(num_classes), per_class)
    gallery = _unit(centres[labels] + 0.15 * rng.normal(size=(len(labels), dim)))
    wrong = (labels + rng.integers(1, num_classes, size=len(labels))) % num_classes
    placed = np.where(rng.random(len(labels)) < misplaced, wrong, labels)
    queries = _unit(centres[placed] + 0.3 * centres[labels] + 0.2 * rng.normal(size=(len(labels), dim)))
    return queries, gallery, labels


def test_a_near_copy_of_a_listed_item_waits_behind_another_region():
    gallery = _unit(np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0]]))
    scores = np.array([[0.9, 0.89, 0.5]])
    assert diversified_order(scores, gallery, diversity=0.5, depth=3).tolist() == [[0, 2, 1]]
    assert diversified_order(scores, gallery, diversity=0.0, depth=3).tolist() == [[0, 1, 2]]
    assert ranked_lists(scores, gallery, 2).tolist() == [[0, 1]]


def test_in_a_clustered_space_mmr_brings_the_mean_rank_below_chance_at_a_cost_in_precision():
    queries, gallery, labels = _clustered()
    kwargs = {"query_labels": labels, "gallery_labels": labels, "ks": (1, 5, 10)}
    plain = retrieval_metrics(queries, gallery, hubness_k=10, **kwargs)
    diverse = retrieval_metrics(queries, gallery, diversity=0.5, hubness_k=10, **kwargs)
    chance = chance_retrieval(len(queries), len(gallery), **kwargs)
    # The plain ranking: good at the first item, worse than random on average (misplaced queries see a whole
    # wrong cluster first).
    assert plain["recall@1"] > 3 * chance["recall@1"]
    assert plain["mean_rank"] > 1.3 * chance["mean_rank"] and plain["recall@10"] < 0.8
    # MMR keeps the first item, lists other clusters early: the mean rank and R@10 beat chance ...
    assert diverse["recall@1"] == pytest.approx(plain["recall@1"])
    assert diverse["mean_rank"] < chance["mean_rank"] and diverse["recall@10"] > max(plain["recall@10"], 0.95)
    # ... and fewer of the first ten share the query's class.
    assert diverse["precision@10"] < plain["precision@10"]
    assert diverse["precision@1"] == pytest.approx(plain["precision@1"])
    assert 0 < chance["precision@10"] == pytest.approx(0.1)
    assert diverse["hubness"]["k"] == 10


def test_listing_the_nearest_first_keeps_the_head_of_the_list_precise():
    queries, gallery, labels = _clustered()
    kwargs = {"query_labels": labels, "gallery_labels": labels, "ks": (1, 5, 10)}
    plain = retrieval_metrics(queries, gallery, **kwargs)
    classic = retrieval_metrics(queries, gallery, diversity=0.5, **kwargs)
    after_5 = retrieval_metrics(queries, gallery, diversity=0.5, nearest_first=5, **kwargs)
    assert after_5["precision@5"] == pytest.approx(plain["precision@5"])
    assert after_5["precision@5"] > classic["precision@5"] + 0.2
    assert after_5["recall@10"] > plain["recall@10"] + 0.1
    scores = queries @ gallery.T
    lists = diversified_order(scores, gallery, diversity=0.5, depth=8, nearest_first=5)
    assert np.array_equal(lists[:, :5], np.argsort(-scores, axis=1, kind="stable")[:, :5])
    assert np.array_equal(retrieve_embeddings(queries, gallery, k=8, diversity=0.5, nearest_first=5).indices, lists)


def test_ranks_agree_with_the_diversified_lists():
    queries, gallery, labels = _clustered(num_classes=5, per_class=12, seed=3)
    scores = queries @ gallery.T
    relevant = labels[:, None] == labels[None, :]
    ranks = retrieval_ranks(queries, gallery, query_labels=labels, gallery_labels=labels, diversity=0.5, depth=60)
    order = diversified_order(scores, gallery, diversity=0.5, depth=60, demote=relevant)
    expected = np.take_along_axis(relevant, order, axis=1).argmax(axis=1) + 1
    assert ranks.tolist() == expected.tolist()
    # A short prefix: past it the list goes on by score, so the same queries rank the same or later.
    short = retrieval_ranks(queries, gallery, query_labels=labels, gallery_labels=labels, diversity=0.5, depth=2)
    assert np.all(short[expected <= 2] == expected[expected <= 2])
    assert np.all(short[expected > 2] > 2)


def test_zero_diversity_is_the_plain_ranking_and_ties_still_count_against_the_query():
    queries, gallery, labels = _clustered(seed=1)
    kwargs = {"query_labels": labels, "gallery_labels": labels}
    assert np.array_equal(retrieval_ranks(queries, gallery, **kwargs),
                          retrieval_ranks(queries, gallery, diversity=0.0, **kwargs))
    collapsed = np.ones((4, 3)) / np.sqrt(3)
    assert retrieval_ranks(collapsed, collapsed, diversity=0.5).tolist() == [4, 4, 4, 4]


def test_retrieve_embeddings_lists_diversely_from_the_same_first_item():
    queries, gallery, _ = _clustered(seed=2)
    plain = retrieve_embeddings(queries, gallery, k=5)
    diverse = retrieve_embeddings(queries, gallery, k=5, diversity=0.5)
    assert np.array_equal(plain.indices[:, 0], diverse.indices[:, 0])
    assert not np.array_equal(plain.indices, diverse.indices)
    scores = queries @ gallery.T
    assert np.allclose(diverse.scores, np.take_along_axis(scores, diverse.indices, axis=1), atol=1e-6)


def test_list_hub_occurrence_matches_hub_occurrence_on_the_same_lists():
    queries, gallery, _ = _clustered(seed=4)
    scores = queries @ gallery.T
    top = np.argsort(-scores, axis=1)[:, :10]
    assert list_hub_occurrence(top, len(gallery)) == pytest.approx(hub_occurrence(scores, 10))
    with pytest.raises(ValueError, match="indices below 3"):
        list_hub_occurrence(np.array([[3]]), 3)


def test_bad_diversities_say_what_is_expected():
    queries, gallery, _ = _clustered(num_classes=3, per_class=4)
    for bad in (1.0, -0.1, "0.5", True):
        with pytest.raises(ValueError, match=r"number in \[0, 1\)"):
            retrieval_ranks(queries, gallery, diversity=bad)
    with pytest.raises(ValueError, match="scoring='cosine', not 'csls'"):
        retrieval_metrics(queries, gallery, scoring="csls", diversity=0.5)
    with pytest.raises(ValueError, match="scores' shape"):
        diversified_order(queries @ gallery.T, gallery, demote=np.zeros((2, 2), bool))
