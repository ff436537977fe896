"""keras.applications backbones in the image branch: weights from a file, preprocessing conventions, freezing."""
from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest

from mmkeras.branches.image import BACKBONES, MIN_BACKBONE_SIZE, build_image_branch
from mmkeras.branches.imagenet import ImagenetPreprocessing

# Backbone name -> the keras.applications module whose `preprocess_input` it must match.
PREPROCESS_MODULES = {
    "mobilenet_v3_small": "mobilenet_v3",
    "mobilenet_v3_large": "mobilenet_v3",
    "efficientnet_b0": "efficientnet",
    "resnet50": "resnet50",
    "mobilenet_v2": "mobilenet_v2",
    "densenet121": "densenet",
}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_preprocessing_matches_keras_applications(name):
    assert set(PREPROCESS_MODULES) == set(BACKBONES), "add the new backbone's preprocess module to this table"
    _, mode = BACKBONES[name]
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    expected = getattr(keras.applications, PREPROCESS_MODULES[name]).preprocess_input(pixels.copy())
    np.testing.assert_allclose(ImagenetPreprocessing(mode)(pixels), expected, rtol=1e-5, atol=1e-4)


def _backbone_network():
    """The network `build_image_branch` makes for a 16x16 picture (resized to the minimum side)."""
    size = (MIN_BACKBONE_SIZE, MIN_BACKBONE_SIZE, 3)
    return keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=size, pooling=None)


@pytest.mark.parametrize("file_name", ["backbone.weights.h5", "backbone.h5"])
def test_backbone_weights_from_a_file_are_loaded_and_frozen(tiny_spec, tmp_path, file_name):
    source = _backbone_network()
    for variable in source.weights:  # recognisable values, unlike any fresh initialisation
        variable.assign(np.random.default_rng(len(variable.path)).normal(size=variable.shape).astype("float32"))
    path = tmp_path / file_name
    if file_name.endswith(".weights.h5"):
        source.save_weights(path)
    else:  # the legacy Keras 2 format of downloaded ImageNet weights
        from keras.src.legacy.saving import legacy_h5_format

        with h5py.File(path, "w") as stream:
            legacy_h5_format.save_weights_to_hdf5_group(stream, source)
    feature = tiny_spec.feature("picture")
    branch = build_image_branch(feature, backbone="mobilenet_v3_small", weights=str(path), augment=False, embed_dim=4)
    network = next(layer for layer in branch.layers if isinstance(layer, keras.Model))
    assert len(network.weights) == len(source.weights)
    for loaded, saved in zip(network.weights, source.weights):
        np.testing.assert_array_equal(loaded.numpy(), saved.numpy())
    assert branch.get_layer("backbone_preprocessing").mode == BACKBONES["mobilenet_v3_small"][1]
    # Pretrained weights are frozen by default (trainable=True opts in; random weights train).
    assert not network.trainable and network.trainable_weights == []


def test_random_backbone_trains_by_default(tiny_spec):
    branch = build_image_branch(tiny_spec.feature("picture"), backbone="mobilenet_v3_small", augment=False, embed_dim=4)
    network = next(layer for layer in branch.layers if isinstance(layer, keras.Model))
    assert network.trainable and network.trainable_weights


def test_missing_weights_file_is_an_error(tiny_spec, tmp_path):
    with pytest.raises(ValueError, match="weights"):
        build_image_branch(tiny_spec.feature("picture"), backbone="mobilenet_v3_small", weights=str(tmp_path / "no.h5"))
