"""ContrastiveLoss and TripletLoss against values computed by hand and by plain NumPy."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from mmkeras.alignment.contrastive import ContrastiveLoss
from mmkeras.alignment.triplet import TripletLoss


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _batch(seed=0, size=5, dim=4):
    rng = np.random.default_rng(seed)
    a = _unit(rng.normal(size=(size, dim)))
    b = _unit(a + 0.7 * rng.normal(size=(size, dim)))
    return a, b


def _stack(a, b):
    return np.stack([a, b], axis=1).astype("float32")


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def numpy_contrastive(a, b, temperature, labels=None, valid=None):
    """Per-example symmetric InfoNCE, written out plainly: rows are anchors, valid columns candidates."""
    n = len(a)
    valid = np.ones(n, bool) if valid is None else valid
    keep = np.flatnonzero(valid)
    positives = np.eye(n, dtype=bool)
    if labels is not None:
        positives |= labels[:, None] == labels[None, :]
    losses = np.zeros(n)
    for direction in ((a, b), (b, a)):
        logits = direction[0] @ direction[1][keep].T / temperature
        log_p = _log_softmax(logits)
        for row in keep:
            target = positives[row, keep].astype(float)
            losses[row] += -(target / target.sum() * log_p[row]).sum() / 2
    return losses


def numpy_triplet(a, b, margin, labels=None, valid=None):
    """Per-example semi-hard triplet loss in both directions, one anchor at a time."""
    n = len(a)
    valid = np.ones(n, bool) if valid is None else valid
    losses = np.zeros(n)
    for anchors, others in ((a, b), (b, a)):
        for i in np.flatnonzero(valid):
            positive = np.sum((anchors[i] - others[i]) ** 2)
            negatives = [
                np.sum((anchors[i] - others[j]) ** 2)
                for j in range(n)
                if j != i and valid[j] and (labels is None or labels[j] != labels[i])
            ]
            if not negatives:
                continue
            farther = [d for d in negatives if d > positive]
            negative = min(farther) if farther else max(negatives)
            losses[i] += max(positive - negative + margin, 0.0) / 2
    return losses


def test_contrastive_matches_a_hand_computed_value():
    # Two perfectly aligned orthogonal pairs at temperature 1: each row's logits are [1, 0].
    pair = _stack(np.eye(2), np.eye(2))
    assert float(ContrastiveLoss(temperature=1.0)(None, pair)) == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    # Swapped partners: each row's partner has logit 0 and the other 1.
    swapped = _stack(np.eye(2), np.eye(2)[::-1])
    assert float(ContrastiveLoss(temperature=1.0)(None, swapped)) == pytest.approx(math.log(1 + math.e), rel=1e-6)


@pytest.mark.parametrize("temperature", [0.07, 0.5, 2.0])
def test_contrastive_matches_numpy_on_a_random_batch(temperature):
    a, b = _batch()
    loss = ContrastiveLoss(temperature=temperature, reduction=None)
    np.testing.assert_allclose(loss(None, _stack(a, b)), numpy_contrastive(a, b, temperature), rtol=1e-5, atol=1e-5)
    reduced = ContrastiveLoss(temperature=temperature)(None, _stack(a, b))
    assert float(reduced) == pytest.approx(numpy_contrastive(a, b, temperature).mean(), rel=1e-5)


def test_contrastive_uses_the_learned_temperature_and_leaves_out_invalid_rows():
    a, b = _batch(seed=1, size=6)
    valid = np.array([True, False, True, True, False, True])
    y_pred = {"embeddings": _stack(a, b), "log_temperature": np.float32(math.log(0.25)), "valid": valid}
    actual = ContrastiveLoss(temperature=5.0, reduction=None)(None, y_pred)  # the fixed 5.0 is ignored
    expected = numpy_contrastive(a, b, 0.25, valid=valid)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(actual)[~valid] == 0)


def test_contrastive_with_label_positives_spreads_the_target_over_the_class():
    a, b = _batch(seed=2, size=6)
    labels = np.array([0, 1, 0, 2, 1, 0])
    actual = ContrastiveLoss(temperature=0.3, positives="labels", reduction=None)(labels, _stack(a, b))
    np.testing.assert_allclose(actual, numpy_contrastive(a, b, 0.3, labels=labels), rtol=1e-5, atol=1e-5)
    pairs_only = ContrastiveLoss(temperature=0.3, reduction=None)(labels, _stack(a, b))
    assert not np.allclose(actual, pairs_only)


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_a_partner_share_mixes_the_pairs_and_labels_losses(share):
    a, b = _batch(seed=5, size=6)
    labels = np.array([0, 1, 0, 2, 1, 0])
    valid = np.array([True, True, False, True, True, True])
    y_pred = {"embeddings": _stack(a, b), "valid": valid}
    mixed = ContrastiveLoss(temperature=0.3, positives="labels", partner_share=share, reduction=None)(labels, y_pred)
    pairs = numpy_contrastive(a, b, 0.3, valid=valid)
    by_class = numpy_contrastive(a, b, 0.3, labels=labels, valid=valid)
    np.testing.assert_allclose(mixed, share * pairs + (1 - share) * by_class, rtol=1e-5, atol=1e-5)


def test_triplet_matches_a_hand_computed_value():
    # Anchor 0 at the origin: partner at distance^2 1, negatives at 4 (semi-hard) and 0.25 (closer).
    a = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    b = np.array([[1.0, 0.0], [2.0, 0.0], [0.5, 0.0]])
    per_example = TripletLoss(margin=4.0, reduction=None)(None, _stack(a, b))
    # a_0 -> b: d_ap = 1, semi-hard negative d = 4: max(1 - 4 + 4, 0) = 1.
    # b_0 -> a: d_ap = 1, negatives at 100 and 101: semi-hard 100: max(1 - 100 + 4, 0) = 0.
    assert float(per_example[0]) == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("margin", [0.0, 0.2, 1.0])
def test_triplet_matches_numpy_on_a_random_batch(margin):
    a, b = _batch(seed=3, size=7)
    actual = TripletLoss(margin=margin, reduction=None)(None, _stack(a, b))
    np.testing.assert_allclose(actual, numpy_triplet(a, b, margin), rtol=1e-5, atol=1e-5)


def test_triplet_with_labels_and_missing_rows_matches_numpy():
    a, b = _batch(seed=4, size=7)
    labels = np.array([0, 1, 0, 2, 1, 2, 0])
    valid = np.array([True, True, True, False, True, True, True])
    loss = TripletLoss(margin=0.5, positives="labels", reduction=None)
    actual = loss(labels, {"embeddings": _stack(a, b), "valid": valid})
    np.testing.assert_allclose(actual, numpy_triplet(a, b, 0.5, labels=labels, valid=valid), rtol=1e-5, atol=1e-5)
    assert float(actual[3]) == 0.0


def test_triplet_uses_the_farthest_negative_when_none_is_farther_than_the_positive():
    a = np.array([[0.0, 0.0], [0.3, 0.0], [0.0, 0.4]])
    b = np.array([[2.0, 0.0], [0.3, 0.1], [0.0, 0.5]])  # anchor 0's partner is farther than every negative
    actual = TripletLoss(margin=0.1, reduction=None)(None, _stack(a, b))
    np.testing.assert_allclose(actual, numpy_triplet(a, b, 0.1), rtol=1e-5, atol=1e-6)
    assert float(actual[0]) > 1.0


@pytest.mark.parametrize("loss", [ContrastiveLoss(temperature=0.2, positives="labels"), TripletLoss(margin=0.3),
                                  ContrastiveLoss(temperature=0.2, positives="labels", partner_share=0.5)])
def test_losses_survive_serialization(loss):
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()
    a, b = _batch()
    labels = np.array([0, 1, 0, 1, 2])
    assert float(restored(labels, _stack(a, b))) == pytest.approx(float(loss(labels, _stack(a, b))), rel=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ContrastiveLoss(temperature=0.0), "temperature"),
        (lambda: ContrastiveLoss(positives="classes"), "positives"),
        (lambda: ContrastiveLoss(positives="labels", partner_share=1.5), r"number in \[0, 1\]"),
        (lambda: ContrastiveLoss(partner_share=0.5), "needs positives='labels'"),
        (lambda: TripletLoss(margin=-1.0), "margin"),
    ],
)
def test_bad_arguments_say_what_is_expected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_inputs_say_how_to_fix_them():
    a, b = _batch()
    with pytest.raises(ValueError, match=r"\(batch, 2, dim\)"):
        ContrastiveLoss()(None, a.astype("float32"))
    with pytest.raises(ValueError, match="class ids"):
        ContrastiveLoss(positives="labels")(None, _stack(a, b))
    with pytest.raises(ValueError, match="embeddings"):
        TripletLoss()(None, {"pairs": _stack(a, b)})
