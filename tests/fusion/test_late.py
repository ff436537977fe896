"""LateFusion: per-modality logits averaged over the present modalities."""
from __future__ import annotations

import numpy as np
import pytest

from mmkeras.fusion.late import LateFusion


def test_late_fusion_produces_class_logits(fusion_batch):
    assert LateFusion.produces_logits is True
    assert tuple(LateFusion(units=3)(fusion_batch.embeddings, presence=fusion_batch.presence).shape) == (2, 3)
    assert tuple(LateFusion(units=3, hidden_units=8)(fusion_batch.embeddings).shape) == (2, 3)


def test_late_fusion_survives_save_and_load(fusion_batch, assert_survives_save_and_load):
    assert_survives_save_and_load(LateFusion(units=3, hidden_units=8), fusion_batch)


def test_output_is_the_mean_of_the_present_modalities_logits(fusion_batch, with_replaced_embedding):
    layer = LateFusion(units=3)
    fused = layer(fusion_batch.embeddings, presence=fusion_batch.presence)
    single = [
        layer(fusion_batch.embeddings, presence=np.eye(3, dtype="float32")[[m, m]]) for m in range(3)
    ]
    np.testing.assert_allclose(fused[0], (single[0][0] + single[2][0]) / 2, rtol=1e-5)
    np.testing.assert_allclose(fused[1], (single[0][1] + single[1][1] + single[2][1]) / 3, rtol=1e-5)
    changed = layer(with_replaced_embedding(fusion_batch.embeddings, 1), presence=fusion_batch.presence)
    np.testing.assert_array_equal(changed[0], fused[0])
    assert not np.allclose(changed[1], fused[1])


def test_no_modality_present_gives_zero_logits(fusion_batch):
    logits = LateFusion(units=3)(fusion_batch.embeddings, presence=np.zeros((2, 3), "float32"))
    np.testing.assert_array_equal(logits, np.zeros((2, 3)))


def test_all_ones_presence_equals_no_presence(fusion_batch):
    layer = LateFusion(units=3)
    np.testing.assert_allclose(
        layer(fusion_batch.embeddings, presence=fusion_batch.all_present), layer(fusion_batch.embeddings), rtol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs", [{"units": 0}, {"units": 3, "hidden_units": 0}, {"units": 3, "dropout_rate": 2.0}]
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        LateFusion(**kwargs)


def test_gradients_reach_every_embedding(fusion_batch, assert_gradients_reach_inputs):
    layer = LateFusion(units=3, hidden_units=8)
    assert_gradients_reach_inputs(lambda: layer(fusion_batch.embeddings), fusion_batch.embeddings)


def test_config_round_trip():
    layer = LateFusion(units=5, hidden_units=7, dropout_rate=0.1, name="fuse")
    config = layer.get_config()
    assert LateFusion.from_config(config).get_config() == config
    assert (config["units"], config["hidden_units"], config["dropout_rate"]) == (5, 7, 0.1)
