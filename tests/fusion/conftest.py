"""Tiny inputs and shared checks for the fusion layer tests."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

DIMS = (8, 4, 6)  # three modalities with different embedding widths
STEPS = (5, 3, 4)  # per-step lengths of their sequences


def _tensor(array):
    import tensorflow as tf

    return tf.constant(array, dtype=tf.float32)


@pytest.fixture
def fusion_batch():
    """Batch of 2: three embeddings, their sequences, and a presence with modality 1 absent in row 0."""
    rng = np.random.default_rng(0)
    return SimpleNamespace(
        embeddings=[_tensor(rng.normal(size=(2, d))) for d in DIMS],
        sequences=[_tensor(rng.normal(size=(2, t, d))) for t, d in zip(STEPS, DIMS)],
        presence=_tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]),
        all_present=_tensor(np.ones((2, len(DIMS)))),
    )


@pytest.fixture
def with_replaced_embedding():
    """Return the batch's embeddings with embedding `index` replaced by large random values."""

    def replace(embeddings, index):
        noise = np.random.default_rng(1).normal(scale=10.0, size=tuple(embeddings[index].shape))
        return [_tensor(noise) if m == index else x for m, x in enumerate(embeddings)]

    return replace


@pytest.fixture
def assert_survives_save_and_load(tmp_path):
    """Check a layer in a functional model (with a presence input) reloads from `.keras` unchanged."""
    import keras

    def check(layer, batch, *, with_sequences=False):
        embedding_inputs = [
            keras.Input((int(x.shape[-1]),), name=f"embedding_{m}") for m, x in enumerate(batch.embeddings)
        ]
        presence_input = keras.Input((len(batch.embeddings),), name="presence")
        inputs, feed = embedding_inputs + [presence_input], list(batch.embeddings) + [batch.presence]
        kwargs = {"presence": presence_input}
        if with_sequences:
            sequence_inputs = [
                keras.Input(tuple(x.shape[1:]), name=f"sequence_{m}") for m, x in enumerate(batch.sequences)
            ]
            kwargs["sequences"] = sequence_inputs
            inputs, feed = inputs + sequence_inputs, feed + list(batch.sequences)
        model = keras.Model(inputs, layer(embedding_inputs, **kwargs))
        path = tmp_path / "fusion.keras"
        model.save(path)
        restored = keras.saving.load_model(path)
        assert type(restored.get_layer(layer.name)) is type(layer)
        expected = keras.tree.flatten(model(feed, training=False))
        actual = keras.tree.flatten(restored(feed, training=False))
        assert len(actual) == len(expected)
        for want, got in zip(expected, actual):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)

    return check


@pytest.fixture
def assert_gradients_reach_inputs():
    """Check the gradient of the output's sum is non-zero for every listed input tensor."""
    import tensorflow as tf

    def check(call, watched):
        with tf.GradientTape() as tape:
            for tensor in watched:
                tape.watch(tensor)
            output = call()
            if isinstance(output, (list, tuple)):
                output = output[0]
            loss = tf.reduce_sum(output * tf.random.stateless_normal(output.shape, seed=(0, 1)))
        for index, gradient in enumerate(tape.gradient(loss, watched)):
            assert gradient is not None, f"no gradient reaches input {index}"
            assert float(tf.reduce_max(tf.abs(gradient))) > 0.0, f"zero gradient for input {index}"

    return check
