"""The fused Adam/AdamW updates equal Keras' own, step by step."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import keras
from mmkeras.training.optimizers import FusedAdam, FusedAdamW


def _train(optimizer, steps: int = 6, sparse: bool = False, strategy=None):
    """Apply `steps` seeded updates to a weight, a bias and (optionally) an embedding table."""
    rng = np.random.default_rng(0)
    scope = strategy.scope() if strategy else _NullScope()
    with scope:
        kernel = keras.Variable(rng.normal(size=(3, 4)).astype("float32"), name="kernel")
        bias = keras.Variable(np.zeros(4, "float32"), name="bias")
        table = keras.Variable(rng.normal(size=(5, 2)).astype("float32"), name="table")
        variables = [kernel, bias, table]
        optimizer.build(variables)

    @tf.function
    def step(g_kernel, g_bias, g_table):
        if sparse:
            g_table = tf.IndexedSlices(g_table[:2], tf.constant([1, 3]), tf.constant([5, 2]))
        optimizer.apply([g_kernel, g_bias, g_table], variables)

    for _ in range(steps):
        grads = [rng.normal(size=v.shape).astype("float32") for v in variables]
        if strategy:
            strategy.run(step, args=tuple(tf.constant(g) for g in grads))
        else:
            step(*(tf.constant(g) for g in grads))
    return [np.array(v.numpy()) for v in variables]


class _NullScope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("sparse", [False, True])
def test_fused_adamw_matches_keras_adamw(sparse):
    def make(cls):
        optimizer = cls(1e-2, weight_decay=0.1)
        optimizer.exclude_from_weight_decay(var_names=["bias"])
        return optimizer

    expected = _train(make(keras.optimizers.AdamW), sparse=sparse)
    fused = _train(make(FusedAdamW), sparse=sparse)
    for want, got in zip(expected, fused):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected[0], _train(make(keras.optimizers.AdamW), steps=1)[0])  # the steps matter


def test_fused_adam_matches_keras_adam_with_a_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=2, decay_rate=0.5)
    expected = _train(keras.optimizers.Adam(schedule))
    for want, got in zip(expected, _train(FusedAdam(schedule))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_fused_adamw_falls_back_under_a_strategy():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        optimizer = FusedAdamW(1e-2, weight_decay=0.1)
    expected = _train(keras.optimizers.AdamW(1e-2, weight_decay=0.1), steps=3)
    for want, got in zip(expected, _train(optimizer, steps=3, strategy=strategy)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_fused_adamw_round_trips_through_its_config():
    optimizer = FusedAdamW(3e-3, weight_decay=0.02, beta_2=0.98)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is FusedAdamW
    assert restored.get_config() == optimizer.get_config()
