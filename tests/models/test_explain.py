"""explain(): the modality that carries the label gets the larger share; occlusion and IG agree on it."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from mmkeras import build_classifier, explain

TRAIN, TEST = 96, 16


def _data(spec, size, rng):
    """Pictures whose bright channel is the label; sounds of pure noise."""
    labels = rng.integers(0, spec.num_classes, size)
    pictures = rng.integers(0, 60, (size, 16, 16, 3))
    pictures[np.arange(size), :, :, labels] += 160
    sounds = rng.normal(0.0, 0.3, (size, spec.feature("sound").num_samples)).clip(-1, 1).astype(np.float32)
    present = np.ones(size, bool)
    return {"picture": pictures.astype(np.uint8), "sound": sounds, "picture_present": present,
            "sound_present": present}, labels


@pytest.fixture(scope="module")
def noise_model(tiny_spec, tiny_model):
    """A picture + sound classifier trained where only the picture carries the label."""
    spec = tiny_spec.with_features(["picture", "sound"])
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    model = build_classifier(spec, seed=0, **tiny_model(branch_options={"image": {"augment": False}}))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss={"probabilities": "sparse_categorical_crossentropy"})
    features, labels = _data(spec, TRAIN, rng)
    model.fit(features, {"probabilities": labels}, batch_size=16, epochs=6, verbose=0)
    return model, _data(spec, TEST, rng)


@pytest.mark.parametrize("method", ["occlusion", "integrated_gradients"])
def test_the_modality_that_carries_the_label_gets_the_larger_share(noise_model, method):
    model, (features, labels) = noise_model
    result = explain(model, features, method=method, steps=8)
    assert result["features"] == ["picture", "sound"]
    assert result["class_id"].shape == result["probability"].shape == (TEST,)
    assert np.mean(result["class_id"] == labels) > 0.8  # the model did learn from the pictures
    picture, sound = np.abs(result["scores"]["picture"]), np.abs(result["scores"]["sound"])
    assert picture.mean() > 3 * sound.mean()  # measured: about 10x
    assert np.mean(picture > sound) >= 0.7  # measured: 0.81 (occlusion), 0.94 (integrated gradients)
    if method == "integrated_gradients":
        assert result["maps"]["sound"].shape == features["sound"].shape and "picture" not in result["maps"]


def test_occlusion_of_an_absent_modality_is_zero_and_bad_arguments_are_named(noise_model):
    model, (features, _) = noise_model
    flags = {"sound_present": np.zeros(TEST, bool)}
    result = explain(model, [({**features, **flags}, None)], method="occlusion")  # (batch, labels) pairs too
    np.testing.assert_array_equal(result["scores"]["sound"], 0.0)
    with pytest.raises(ValueError, match="Unknown explanation method 'shap'"):
        explain(model, features, method="shap")
    with pytest.raises(ValueError, match=r"miss features \['sound'\]"):
        explain(model, {"picture": features["picture"]}, method="occlusion")  # flags may be left out, features not
