"""The first training step: its variables are made before the trace, so the step is traced once."""
from __future__ import annotations

import keras
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
