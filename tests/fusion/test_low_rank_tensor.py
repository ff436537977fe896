"""LowRankTensorFusion: LMF's rank-R factorised tensor fusion."""
from __future__ import annotations

import numpy as np
import pytest

from mmkeras.fusion.low_rank_tensor import LowRankTensorFusion


def test_low_rank_tensor_fusion_output_and_factor_shapes(fusion_batch):
    layer = LowRankTensorFusion(units=16, rank=2)
    assert tuple(layer(fusion_batch.embeddings, presence=fusion_batch.presence).shape) == (2, 16)
    assert [tuple(factor.shape) for factor in layer.factors] == [(2, 9, 16), (2, 5, 16), (2, 7, 16)]


def test_low_rank_tensor_fusion_survives_save_and_load(fusion_batch, assert_survives_save_and_load):
    assert_survives_save_and_load(LowRankTensorFusion(units=16, rank=2), fusion_batch)


def test_absent_modality_changes_output_but_its_embedding_does_not(fusion_batch, with_replaced_embedding):
    layer = LowRankTensorFusion(units=16, rank=2)
    fused = layer(fusion_batch.embeddings, presence=fusion_batch.presence)
    assert not np.allclose(fused[0], layer(fusion_batch.embeddings, presence=fusion_batch.all_present)[0])
    changed = layer(with_replaced_embedding(fusion_batch.embeddings, 1), presence=fusion_batch.presence)
    np.testing.assert_array_equal(changed[0], fused[0])


def test_all_ones_presence_equals_no_presence(fusion_batch):
    layer = LowRankTensorFusion(units=16, rank=2)
    np.testing.assert_allclose(
        layer(fusion_batch.embeddings, presence=fusion_batch.all_present), layer(fusion_batch.embeddings), rtol=1e-6
    )


@pytest.mark.parametrize("kwargs", [{"units": 0}, {"rank": 0}, {"rank": 1.5}, {"dropout_rate": 1.0}])
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        LowRankTensorFusion(**kwargs)


def test_gradients_reach_every_embedding(fusion_batch, assert_gradients_reach_inputs):
    layer = LowRankTensorFusion(units=16, rank=2)
    assert_gradients_reach_inputs(lambda: layer(fusion_batch.embeddings), fusion_batch.embeddings)


def test_config_round_trip():
    layer = LowRankTensorFusion(units=12, rank=3, dropout_rate=0.1, activation="relu", name="fuse")
    config = layer.get_config()
    assert LowRankTensorFusion.from_config(config).get_config() == config
    assert (config["units"], config["rank"], config["dropout_rate"], config["activation"]) == (12, 3, 0.1, "relu")
