"""TensorFusion: outer product of [z; 1] across modalities."""
from __future__ import annotations

import numpy as np
import pytest

from mmkeras.fusion.tensor import TensorFusion


def test_tensor_fusion_output_shape_and_size(fusion_batch):
    layer = TensorFusion(units=16, rank_dim=3)
    assert tuple(layer(fusion_batch.embeddings, presence=fusion_batch.presence).shape) == (2, 16)
    assert tuple(layer.dense.kernel.shape) == (4**3, 16)


def test_tensor_fusion_survives_save_and_load(fusion_batch, assert_survives_save_and_load):
    assert_survives_save_and_load(TensorFusion(units=16, rank_dim=3), fusion_batch)


def test_absent_modality_changes_output_but_its_embedding_does_not(fusion_batch, with_replaced_embedding):
    layer = TensorFusion(units=16, rank_dim=3, activation=None)
    fused = layer(fusion_batch.embeddings, presence=fusion_batch.presence)
    assert not np.allclose(fused[0], layer(fusion_batch.embeddings, presence=fusion_batch.all_present)[0])
    changed = layer(with_replaced_embedding(fusion_batch.embeddings, 1), presence=fusion_batch.presence)
    np.testing.assert_array_equal(changed[0], fused[0])


def test_all_ones_presence_equals_no_presence(fusion_batch):
    layer = TensorFusion(units=16, rank_dim=3)
    np.testing.assert_allclose(
        layer(fusion_batch.embeddings, presence=fusion_batch.all_present), layer(fusion_batch.embeddings), rtol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs", [{"units": -1}, {"rank_dim": 0}, {"dropout_rate": 1.5}, {"activation": "no_such_activation"}]
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        TensorFusion(**kwargs)


def test_too_many_outer_product_features_raise_with_a_fix(fusion_batch):
    embeddings = [fusion_batch.embeddings[0]] * 5  # 17 ** 5 > 1e6 >= 15 ** 5
    with pytest.raises(ValueError, match="rank_dim <= 14.*low_rank_tensor"):
        TensorFusion(units=4, rank_dim=16)(embeddings)


def test_gradients_reach_every_embedding(fusion_batch, assert_gradients_reach_inputs):
    layer = TensorFusion(units=16, rank_dim=3, activation=None)
    assert_gradients_reach_inputs(lambda: layer(fusion_batch.embeddings), fusion_batch.embeddings)


def test_config_round_trip():
    layer = TensorFusion(units=12, rank_dim=5, dropout_rate=0.1, activation="gelu", name="fuse")
    config = layer.get_config()
    assert TensorFusion.from_config(config).get_config() == config
    assert (config["units"], config["rank_dim"], config["dropout_rate"], config["activation"]) == (12, 5, 0.1, "gelu")
