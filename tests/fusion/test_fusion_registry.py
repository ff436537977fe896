"""FUSIONS: every fusion name maps to a registered, serializable layer class."""
from __future__ import annotations

import keras
import pytest

from mmkeras.fusion import FUSIONS


def test_fusions_lists_exactly_the_known_fusions():
    assert sorted(FUSIONS) == sorted(
        ["concat", "attention", "cross_attention", "gated", "late", "tensor", "low_rank_tensor"]
    )


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_every_fusion_is_a_serializable_layer(name):
    layer_class = FUSIONS[name]
    assert issubclass(layer_class, keras.layers.Layer)
    assert keras.saving.get_registered_name(layer_class) == f"mmkeras>{layer_class.__name__}"
    layer = layer_class(units=8, name=f"{name}_fusion")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is layer_class
    assert restored.get_config() == layer.get_config()
