"""Hub occurrence and the hub-reducing scorings (CSLS, inverted softmax, centring) on galleries with planted hubs."""
from __future__ import annotations

import numpy as np
import pytest

from mmkeras.alignment.hubness import hub_occurrence, rescore
from mmkeras.alignment.metrics import retrieval_metrics, retrieval_ranks
from mmkeras.alignment.retrieval import retrieve_embeddings


def _unit(array):
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def _planted_hubs(num_queries=200, num_hubs=3, dim=16, seed=0):
    """Queries, a gallery of their noisy partners, and hubs near the queries' mean direction (appended last)."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=dim)
    queries = _unit(rng.normal(size=(num_queries, dim)) + common)
    partners = _unit(queries + 0.3 * rng.normal(size=queries.shape))
    hubs = _unit(common + 0.1 * rng.normal(size=(num_hubs, dim)))
    return queries, np.vstack([partners, hubs]), np.arange(num_queries, num_queries + num_hubs)


def test_planted_hubs_dominate_cosine_lists_and_csls_and_inverted_softmax_break_them_up():
    queries, gallery, hubs = _planted_hubs()
    cosine = hub_occurrence(rescore(queries, gallery, "cosine"), k=5)
    assert cosine["queries_with_hub"] > 0.5 and cosine["skewness"] > 5  # 3 items of 203 in most lists
    for scoring in ("csls", "inverted_softmax"):
        scores = rescore(queries, gallery, scoring, neighbours=10)
        reduced = hub_occurrence(scores, k=5)
        assert reduced["skewness"] < cosine["skewness"] - 1, (scoring, reduced, cosine)
        assert reduced["queries_with_hub"] < cosine["queries_with_hub"] / 2, (scoring, reduced, cosine)
        assert reduced["hub_share"] < cosine["hub_share"], (scoring, reduced, cosine)
        top = np.argsort(-scores, axis=1)[:, :5]
        assert np.isin(top, hubs).mean() < np.isin(np.argsort(-(queries @ gallery.T), axis=1)[:, :5], hubs).mean()
    # With the hubs pushed back, the partners come first more often.
    partners = np.arange(len(queries))
    extended_labels = np.concatenate([partners, -1 - np.arange(len(hubs))])
    kwargs = {"query_labels": partners, "gallery_labels": extended_labels, "ks": (1,)}
    plain = retrieval_metrics(queries, gallery, **kwargs)
    csls = retrieval_metrics(queries, gallery, scoring="csls", hubness_k=5, **kwargs)
    assert csls["recall@1"] > plain["recall@1"]
    assert csls["hubness"]["queries_with_hub"] < 0.3


def test_hub_occurrence_of_a_constructed_case():
    scores = np.array([[0.9, 0.1, 0.2, 0.0], [0.8, 0.3, 0.1, 0.0], [0.7, 0.2, 0.6, 0.0]])
    result = hub_occurrence(scores, k=1, hub_fraction=0.25)
    # Item 0 is every query's nearest: N_1 = (3, 0, 0, 0).
    assert result["hub_share"] == 1.0 and result["queries_with_hub"] == 1.0
    assert result["max_occurrence"] == pytest.approx(4.0) and result["antihub_share"] == 0.75
    assert result["skewness"] == pytest.approx(2 / np.sqrt(3))
    even = hub_occurrence(np.eye(4), k=1)
    assert even["skewness"] == 0.0 and even["antihub_share"] == 0.0


def test_csls_and_inverted_softmax_match_their_formulas():
    rng = np.random.default_rng(1)
    queries, gallery = _unit(rng.normal(size=(6, 4))), _unit(rng.normal(size=(5, 4)))
    cosine = queries @ gallery.T
    k = 2
    query_radius = np.sort(cosine, axis=1)[:, -k:].mean(axis=1)
    gallery_radius = np.sort(cosine, axis=0)[-k:, :].mean(axis=0)
    expected = 2 * cosine - query_radius[:, None] - gallery_radius[None, :]
    np.testing.assert_allclose(rescore(queries, gallery, "csls", neighbours=k), expected)
    temperature = 0.1
    probabilities = np.exp(cosine / temperature) / np.exp(cosine / temperature).sum(axis=0, keepdims=True)
    np.testing.assert_allclose(
        rescore(queries, gallery, "inverted_softmax", temperature=temperature), np.log(probabilities), rtol=1e-10
    )
    # A reference pool measures the gallery's neighbourhood instead of the queries.
    reference = _unit(rng.normal(size=(9, 4)))
    pooled = rescore(queries[:1], gallery, "csls", neighbours=k, reference_embeddings=reference)
    radius = np.sort(reference @ gallery.T, axis=0)[-k:, :].mean(axis=0)
    np.testing.assert_allclose(pooled, 2 * cosine[:1] - query_radius[:1, None] - radius[None, :])
    result = retrieve_embeddings(queries[:1], gallery, k=2, scoring="csls", neighbours=k,
                                 reference_embeddings=reference)
    assert result.indices.tolist() == [np.argsort(-pooled[0])[:2].tolist()]


def _modality_gap(seed, num=300, classes=10, dim=16, offset=3.0, noise=0.8):
    """Class-clustered queries and gallery, each modality shifted by its own offset (two cones, as two towers leave)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    query_labels, gallery_labels = rng.integers(classes, size=num), rng.integers(classes, size=num)
    query_offset, gallery_offset = (offset * _unit(rng.normal(size=(1, dim))) for _ in range(2))
    queries = _unit(centres[query_labels] + noise * rng.normal(size=(num, dim)) + query_offset)
    gallery = _unit(centres[gallery_labels] + noise * rng.normal(size=(num, dim)) + gallery_offset)
    return queries, gallery, query_labels, gallery_labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_centring_closes_a_modality_gap_ranks_classes_better_and_spreads_the_lists(seed):
    queries, gallery, query_labels, gallery_labels = _modality_gap(seed)
    kwargs = {"query_labels": query_labels, "gallery_labels": gallery_labels, "hubness_k": 10, "ks": (1, 10)}
    plain = retrieval_metrics(queries, gallery, **kwargs)
    centred = retrieval_metrics(queries, gallery, scoring="centred", **kwargs)
    assert centred["recall@1"] > plain["recall@1"] + 0.05, (plain, centred)
    assert centred["mean_rank"] < plain["mean_rank"]
    assert centred["hubness"]["skewness"] < plain["hubness"]["skewness"] - 0.5
    assert centred["hubness"]["queries_with_hub"] < plain["hubness"]["queries_with_hub"]


def test_centring_matches_its_formula_and_needs_a_pool():
    rng = np.random.default_rng(2)
    queries, gallery, reference = (rng.normal(size=(size, 4)) for size in (6, 5, 9))
    queries, gallery, reference = _unit(queries), _unit(gallery), _unit(reference)
    expected = _unit(queries - queries.mean(axis=0)) @ _unit(gallery - gallery.mean(axis=0)).T
    np.testing.assert_allclose(rescore(queries, gallery, "centred"), expected)
    # One query is centred by a reference pool's mean, the gallery by its own.
    pooled = rescore(queries[:1], gallery, "centred", reference_embeddings=reference)
    np.testing.assert_allclose(pooled, _unit(queries[:1] - reference.mean(axis=0))
                               @ _unit(gallery - gallery.mean(axis=0)).T)
    with pytest.raises(ValueError, match="query modality's mean embedding.*`reference` pool"):
        rescore(queries[:1], gallery, "centred")
    with pytest.raises(ValueError, match="gallery modality's mean"):
        rescore(queries, gallery[:1], "centred")
    with pytest.raises(ValueError, match="scoring='cosine', not 'centred'"):
        retrieval_metrics(queries[:5], gallery, scoring="centred", diversity=0.5)


def test_bad_scorings_and_sizes_say_what_is_expected():
    with pytest.raises(ValueError, match="Unknown scoring 'knn'"):
        retrieval_ranks(np.eye(3), np.eye(3), scoring="knn")
    with pytest.raises(ValueError, match="neighbours"):
        rescore(np.eye(3), np.eye(3), "csls", neighbours=0)
    with pytest.raises(ValueError, match="same width"):
        rescore(np.eye(3), np.eye(3), "csls", reference_embeddings=np.ones((2, 2)))
    with pytest.raises(ValueError, match="hub_fraction"):
        hub_occurrence(np.eye(3), hub_fraction=2.0)
