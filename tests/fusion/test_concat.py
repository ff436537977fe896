"""ConcatFusion: the concatenate-and-mix baseline."""
from __future__ import annotations

import pytest

from mmkeras.fusion.concat import ConcatFusion


def test_concat_fusion_output_shape(fusion_batch):
    layer = ConcatFusion(units=16)
    assert tuple(layer(fusion_batch.embeddings, presence=fusion_batch.presence).shape) == (2, 16)
    assert tuple(layer.dense.kernel.shape) == (8 + 4 + 6, 16)


def test_concat_fusion_survives_save_and_load(fusion_batch, assert_survives_save_and_load):
    assert_survives_save_and_load(ConcatFusion(units=16), fusion_batch)


@pytest.mark.parametrize("kwargs", [{"units": 0}, {"dropout_rate": 1.0}])
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        ConcatFusion(**kwargs)


def test_gradients_reach_every_embedding(fusion_batch, assert_gradients_reach_inputs):
    layer = ConcatFusion(units=16, activation=None)
    assert_gradients_reach_inputs(lambda: layer(fusion_batch.embeddings), fusion_batch.embeddings)


def test_config_round_trip():
    layer = ConcatFusion(units=12, dropout_rate=0.1, activation="gelu", name="fuse")
    config = layer.get_config()
    assert ConcatFusion.from_config(config).get_config() == config
