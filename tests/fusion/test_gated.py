"""GatedFusion: GMU-style gates, with absent modalities gated out."""
from __future__ import annotations

import numpy as np
import pytest

from mmkeras.fusion.gated import GatedFusion


def test_gated_fusion_output_shape(fusion_batch):
    assert tuple(GatedFusion(units=16)(fusion_batch.embeddings, presence=fusion_batch.presence).shape) == (2, 16)


def test_gated_fusion_survives_save_and_load(fusion_batch, assert_survives_save_and_load):
    assert_survives_save_and_load(GatedFusion(units=16), fusion_batch)


def test_absent_modality_contributes_nothing(fusion_batch, with_replaced_embedding):
    layer = GatedFusion(units=16)
    fused = layer(fusion_batch.embeddings, presence=fusion_batch.presence)
    assert not np.allclose(fused[0], layer(fusion_batch.embeddings, presence=fusion_batch.all_present)[0])
    changed = layer(with_replaced_embedding(fusion_batch.embeddings, 1), presence=fusion_batch.presence)
    np.testing.assert_array_equal(changed[0], fused[0])
    # Row 1 has every modality present, so there the change must show.
    assert not np.allclose(changed[1], fused[1])


def test_no_modality_present_gives_zeros(fusion_batch):
    fused = GatedFusion(units=16)(fusion_batch.embeddings, presence=np.zeros((2, 3), "float32"))
    np.testing.assert_array_equal(fused, np.zeros((2, 16)))


def test_all_ones_presence_equals_no_presence(fusion_batch):
    layer = GatedFusion(units=16)
    np.testing.assert_allclose(
        layer(fusion_batch.embeddings, presence=fusion_batch.all_present), layer(fusion_batch.embeddings), rtol=1e-6
    )


@pytest.mark.parametrize("kwargs", [{"units": 0}, {"units": True}, {"dropout_rate": -0.1}])
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        GatedFusion(**kwargs)


def test_presence_with_wrong_width_raises(fusion_batch):
    with pytest.raises(ValueError, match="presence"):
        GatedFusion(units=4)(fusion_batch.embeddings, presence=np.ones((2, 2), "float32"))


def test_gradients_reach_every_embedding(fusion_batch, assert_gradients_reach_inputs):
    layer = GatedFusion(units=16)
    assert_gradients_reach_inputs(lambda: layer(fusion_batch.embeddings), fusion_batch.embeddings)


def test_config_round_trip():
    layer = GatedFusion(units=12, dropout_rate=0.1, name="fuse")
    config = layer.get_config()
    assert GatedFusion.from_config(config).get_config() == config
    assert (config["units"], config["dropout_rate"]) == (12, 0.1)


def test_calling_a_built_layer_on_fewer_modalities_raises(fusion_batch):
    layer = GatedFusion(units=4)
    layer(fusion_batch.embeddings)
    with pytest.raises(ValueError, match="built for 3 modalities"):
        layer(fusion_batch.embeddings[:2])
