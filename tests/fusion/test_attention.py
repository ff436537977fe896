"""AttentionFusion: learned per-example modality weights, masked by presence."""
from __future__ import annotations

import numpy as np
import pytest

from mmkeras.fusion.attention import AttentionFusion


def test_attention_fusion_returns_fused_features_and_modality_weights(fusion_batch):
    fused, weights = AttentionFusion(units=16)(fusion_batch.embeddings, presence=fusion_batch.presence)
    assert tuple(fused.shape) == (2, 16)
    assert tuple(weights.shape) == (2, 3)
    np.testing.assert_allclose(np.sum(weights, axis=-1), [1.0, 1.0], rtol=1e-6)
    assert np.all(np.asarray(weights)[1] > 0)


def test_attention_fusion_survives_save_and_load(fusion_batch, assert_survives_save_and_load):
    assert_survives_save_and_load(AttentionFusion(units=16), fusion_batch)


def test_absent_modality_gets_exactly_zero_weight(fusion_batch, with_replaced_embedding):
    layer = AttentionFusion(units=16)
    fused, weights = layer(fusion_batch.embeddings, presence=fusion_batch.presence)
    assert float(weights[0, 1]) == 0.0
    all_fused, _ = layer(fusion_batch.embeddings, presence=fusion_batch.all_present)
    assert not np.allclose(fused[0], all_fused[0])
    changed, _ = layer(with_replaced_embedding(fusion_batch.embeddings, 1), presence=fusion_batch.presence)
    np.testing.assert_array_equal(changed[0], fused[0])


def test_all_ones_presence_equals_no_presence(fusion_batch):
    layer = AttentionFusion(units=16)
    for with_ones, without in zip(layer(fusion_batch.embeddings, presence=fusion_batch.all_present),
                                  layer(fusion_batch.embeddings)):
        np.testing.assert_allclose(with_ones, without, rtol=1e-6)


def test_no_modality_present_gives_uniform_weights(fusion_batch):
    fused, weights = AttentionFusion(units=16)(fusion_batch.embeddings, presence=np.zeros((2, 3), "float32"))
    np.testing.assert_allclose(weights, np.full((2, 3), 1 / 3), rtol=1e-5)
    assert np.all(np.isfinite(fused))


@pytest.mark.parametrize("kwargs", [{"units": 0}, {"units": 2.5}, {"score_units": -1}, {"dropout_rate": 1.0}])
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        AttentionFusion(**kwargs)


def test_single_tensor_instead_of_list_raises(fusion_batch):
    with pytest.raises(ValueError, match="list"):
        AttentionFusion(units=4)(fusion_batch.embeddings[0])


def test_gradients_reach_every_embedding(fusion_batch, assert_gradients_reach_inputs):
    layer = AttentionFusion(units=16)
    assert_gradients_reach_inputs(lambda: layer(fusion_batch.embeddings), fusion_batch.embeddings)


def test_config_round_trip():
    layer = AttentionFusion(units=12, score_units=5, dropout_rate=0.1, name="fuse")
    config = layer.get_config()
    assert AttentionFusion.from_config(config).get_config() == config
    assert (config["units"], config["score_units"], config["dropout_rate"]) == (12, 5, 0.1)
