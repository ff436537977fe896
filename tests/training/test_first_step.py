"""The first training step: its variables are made before the trace, so the step is traced once."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.data.pipeline import make_dataset
from mmkeras.training.config import ModelConfig, RuntimeConfig, TrainingConfig
from mmkeras.training.loop import build_and_compile
from mmkeras.training.strategy import resolve_runtime


def _trained(spec, settings, batch, *, balance: str, prebuild: bool, traces: list):
    keras.utils.set_random_seed(0)
    data = tf.data.Dataset.from_tensors(batch)
    _, trainer = build_and_compile(spec, ModelConfig(**settings), TrainingConfig(seed=0, epochs=2, balance=balance),
                                   resolve_runtime(RuntimeConfig()), steps_per_epoch=2)
    assert trainer.optimizer.built  # its slots exist before any step
    if prebuild:
        trainer.build_for(data.element_spec)
    step = trainer.train_step

    def counted(batch):
        traces.append(1)
        return step(batch)

    trainer.train_step = counted
    history = trainer.fit(data, epochs=1, verbose=0)
    return history.history["loss"][0]


@pytest.mark.parametrize("balance", ["aux_heads", "none"])
def test_a_prebuilt_step_is_traced_once_and_computes_the_same_loss(tiny_spec, tiny_model, balance):
    settings = tiny_model()
    batch = next(iter(make_dataset(tiny_spec, "train", batch_size=8, training=True, seed=0)))
    once, unbuilt = [], []
    prebuilt_loss = _trained(tiny_spec, settings, batch, balance=balance, prebuild=True, traces=once)
    loss = _trained(tiny_spec, settings, batch, balance=balance, prebuild=False, traces=unbuilt)
    assert len(once) == 1, "the first step was traced more than once although its variables existed"
    assert len(unbuilt) == 2  # what Keras does without it: one trace creates the variables, one uses them
    # The same step on the same batch (fixed: the pipeline's parallel decode promises no order)
    # from the same initial weights.
    assert prebuilt_loss == pytest.approx(loss, rel=1e-5)


def _fitted(spec, settings, data, *, ahead: bool, run_eagerly: bool = False):
    """Fit the tiny model 2 epochs from seed 0; return (traced ahead?, traces per step, losses, val losses, weights)."""
    keras.utils.set_random_seed(0)
    _, trainer = build_and_compile(spec, ModelConfig(**settings), TrainingConfig(seed=0, epochs=2),
                                   resolve_runtime(RuntimeConfig()), steps_per_epoch=2)
    trainer.run_eagerly = run_eagerly
    trainer.build_for(data.element_spec)
    traces = {"train": 0, "test": 0}
    for kind in traces:
        step = getattr(trainer, f"{kind}_step")

        def counted(batch, kind=kind, step=step):
            traces[kind] += 1
            return step(batch)

        setattr(trainer, f"{kind}_step", counted)
    traced = trainer.trace_ahead(data.element_spec, data.element_spec) if ahead else None
    history = trainer.fit(data, validation_data=data, epochs=2, verbose=0).history
    return traced, traces, history["loss"], history["val_loss"], trainer.get_weights()


def test_steps_traced_ahead_are_traced_once_and_train_the_same_model(tiny_spec, tiny_model):
    settings = tiny_model()
    batch = next(iter(make_dataset(tiny_spec, "train", batch_size=8, training=True, seed=0)))
    data = tf.data.Dataset.from_tensors(batch).repeat(2)
    traced, traces, losses, val_losses, weights = _fitted(tiny_spec, settings, data, ahead=True)
    assert traced is True
    assert traces == {"train": 1, "test": 1}, "fit traced a step again that was traced ahead"
    _, plain_traces, plain_losses, plain_val_losses, plain_weights = _fitted(tiny_spec, settings, data, ahead=False)
    assert plain_traces == {"train": 1, "test": 1}
    assert losses == pytest.approx(plain_losses, rel=1e-5)
    assert val_losses == pytest.approx(plain_val_losses, rel=1e-5)
    for value, plain in zip(weights, plain_weights):  # blending's reference is NaN until a blending callback runs
        np.testing.assert_allclose(value, plain, rtol=1e-4, atol=1e-6, equal_nan=True)


def test_an_eager_model_is_not_traced_ahead(tiny_spec, tiny_model):
    batch = next(iter(make_dataset(tiny_spec, "train", batch_size=8, training=True, seed=0)))
    data = tf.data.Dataset.from_tensors(batch)
    traced, traces, losses, _, _ = _fitted(tiny_spec, tiny_model(), data, ahead=True, run_eagerly=True)
    assert traced is False
    assert traces["train"] == 2  # eager: the step runs in Python at every batch (2 epochs x 1 batch)
    assert all(loss > 0 for loss in losses)
