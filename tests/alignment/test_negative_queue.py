"""The memory queue of negatives: FIFO of detached embeddings, InfoNCE over batch + queue, training and reload."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.alignment import ContrastiveLoss, DualEncoder, TripletLoss, build_dual_encoder
from mmkeras.alignment.negative_queue import NegativeQueue
from mmkeras.spec import load_spec

SMALL = {
    "embed_dim": 8,
    "branch_dim": 8,
    "dropout_rate": 0.0,
    "branch_options": {"image": {"stages": (4,), "convs_per_stage": 1}, "audio": {"encoder": "conv1d",
                                                                                 "conv_stages": (4,)}},
}


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_the_queue_fills_first_in_first_out_with_detached_embeddings():
    queue = NegativeQueue(4, ("a", "b"), embed_dim=2)
    embeddings, present, labels = queue.read()
    assert not np.any(present["a"]) and np.all(np.array(labels) == -1)  # empty slots: absent, no class
    source = tf.Variable(np.arange(6, dtype="float32").reshape(3, 2))
    with tf.GradientTape() as tape:
        first = source * 2.0
        queue.enqueue({"a": first, "b": -first}, labels=[7, 8, 9], present={"b": [True, False, True]})
        stored = queue.read()[0]["a"]
    assert tape.gradient(tf.reduce_sum(stored), source) is None  # detached
    queue.enqueue({"a": np.full((2, 2), 100.0, "float32"), "b": np.zeros((2, 2), "float32")}, labels=None)
    embeddings, present, labels = queue.read()
    # Rows 0-2 held the first batch; the second wrote slot 3 and wrapped round to overwrite the oldest, slot 0.
    np.testing.assert_array_equal(np.array(embeddings["a"]), [[100, 100], [4, 6], [8, 10], [100, 100]])
    np.testing.assert_array_equal(np.array(labels), [-1, 8, 9, -1])
    np.testing.assert_array_equal(np.array(present["b"]), [True, False, True, True])
    assert int(np.array(queue.position)) == 1
    assert not queue.trainable_weights
    # A batch longer than the queue keeps its last rows.
    queue.enqueue({"a": np.arange(10, dtype="float32").reshape(5, 2), "b": np.zeros((5, 2), "float32")})
    np.testing.assert_array_equal(np.array(queue.read()[0]["a"])[[1, 2, 3, 0]], [[2, 3], [4, 5], [6, 7], [8, 9]])
    with pytest.raises(ValueError, match="size"):
        NegativeQueue(0, ("a", "b"), embed_dim=2)


def _hand_infonce(a, b, queue_a, queue_b, temperature, positives):
    """Symmetric InfoNCE written out: candidates are the batch then the queue; `positives` (n, n + k) targets."""
    losses = []
    for row in range(len(a)):
        target = positives[row] / positives[row].sum()
        total = 0.0
        for anchor, candidates in ((a[row], np.concatenate([b, queue_b])), (b[row], np.concatenate([a, queue_a]))):
            logits = candidates @ anchor / temperature
            log_p = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
            total += -(target * log_p).sum() / 2
        losses.append(total)
    return np.mean(losses)


@pytest.mark.parametrize("positives", ["pairs", "labels"])
def test_the_loss_with_a_queue_is_infonce_over_batch_and_queue(positives):
    rng = np.random.default_rng(0)
    a, b = _unit(rng.normal(size=(3, 4))), _unit(rng.normal(size=(3, 4)))
    queue_a, queue_b = _unit(rng.normal(size=(3, 4))), _unit(rng.normal(size=(3, 4)))
    labels, queue_labels = np.array([0, 1, 0]), np.array([1, 0, 2])
    queue_valid = np.array([True, True, False])  # an empty slot: no candidate at all
    pair = {"embeddings": np.stack([a, b], 1).astype("float32"),
            "queue": np.stack([queue_a, queue_b], 1).astype("float32"),
            "queue_valid": queue_valid, "queue_labels": queue_labels}
    loss = ContrastiveLoss(temperature=0.5, positives=positives)(labels if positives == "labels" else None, pair)
    targets = np.concatenate([np.eye(3), np.zeros((3, 3))], axis=1)
    if positives == "labels":  # every same-class candidate, queued ones included, is a positive
        targets = np.maximum(targets, labels[:, None] == np.concatenate([labels, queue_labels])[None, :])
    keep = np.concatenate([np.ones(3, bool), queue_valid])
    expected = _hand_infonce(a, b, queue_a[queue_valid], queue_b[queue_valid], 0.5, targets[:, keep])
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # The queue's negatives raise the loss of the same batch.
    assert float(loss) > float(ContrastiveLoss(0.5, positives)(labels if positives == "labels" else None,
                                                               pair["embeddings"]))


@pytest.mark.slow
def test_an_encoder_with_a_queue_trains_enqueues_its_batches_and_reloads_it(tmp_path):
    keras.utils.set_random_seed(0)
    spec = load_spec("tiny")
    encoder = build_dual_encoder(spec, ("image", "audio"), queue_size=6, min_temperature=0.05,
                                 max_temperature=0.5, **SMALL)
    encoder.compile(keras.optimizers.Adam(0.01), loss=ContrastiveLoss(positives="labels"))
    rng = np.random.default_rng(0)
    batch = {"picture": rng.integers(0, 255, (4, 16, 16, 3)).astype("uint8"),
             "sound": rng.uniform(-1, 1, (4, 2000)).astype("float32")}
    labels = np.array([0, 1, 0, 2], "int32")
    before = encoder(batch, training=True)  # batch statistics, as in the step (no dropout: rate 0)
    encoder.train_on_batch(batch, labels)
    embeddings, present, queue_labels = encoder.negative_queue.read()
    # The first 4 slots hold the (pre-update) embeddings of the batch, in order; the rest are still empty.
    np.testing.assert_allclose(np.array(embeddings["sound"])[:4], np.array(before["sound"]), atol=1e-5)
    np.testing.assert_array_equal(np.array(queue_labels), [0, 1, 0, 2, -1, -1])
    np.testing.assert_array_equal(np.array(present["picture"]), [True] * 4 + [False] * 2)
    loss = encoder.train_on_batch(batch, labels)  # the second step sees the first batch as queued candidates
    assert np.isfinite(loss) and int(np.array(encoder.negative_queue.position)) == 2
    assert 0.05 <= encoder.temperature <= 0.5
    encoder.evaluate(batch, labels, verbose=0)  # evaluation leaves the queue alone
    assert int(np.array(encoder.negative_queue.position)) == 2
    encoder.save(tmp_path / "queued.keras")
    restored = keras.saving.load_model(tmp_path / "queued.keras")
    assert isinstance(restored, DualEncoder)
    assert (restored.queue_size, restored.min_temperature, restored.max_temperature) == (6, 0.05, 0.5)
    for name in ("picture", "sound"):  # the queue is state saved with the weights
        np.testing.assert_array_equal(np.array(restored.negative_queue.read()[0][name]),
                                      np.array(encoder.negative_queue.read()[0][name]))
    with pytest.raises(ValueError, match="only a ContrastiveLoss"):
        encoder.compile("adam", loss=TripletLoss())
    assert build_dual_encoder(spec, ("image", "audio"), **SMALL).negative_queue is None
