"""Temperature scaling: the layer reloads, and calibrating an over-confident model lowers its NLL, argmax kept."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from mmkeras import build_classifier, calibrate, make_dataset
from mmkeras.models.calibration import nll, raw_logits, temperatures_of
from mmkeras.models.saving import load_classifier
from mmkeras.models.temperature import TemperatureScaling


def test_temperature_layer_survives_save_and_load(tmp_path):
    logits, presence = keras.Input((3,)), keras.Input((2,))
    layer = TemperatureScaling(2, per_pattern=True)
    model = keras.Model([logits, presence], layer(logits, presence))
    layer.temperatures.assign([2.0, 4.0, 8.0])
    batch = [np.full((4, 3), 8.0, np.float32), np.array([[1, 1], [0, 1], [1, 0], [0, 0]], np.float32)]
    np.testing.assert_allclose(model.predict(batch, verbose=0)[:, 0], [4.0, 2.0, 1.0, 4.0])  # [both, 0 gone, 1 gone, none]
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(restored.predict(batch, verbose=0), model.predict(batch, verbose=0), rtol=1e-6)


def test_temperature_layer_refuses_a_bad_modality_count():
    with pytest.raises(ValueError, match="num_modalities"):
        TemperatureScaling(0)


@pytest.fixture(scope="module")
def over_confident(tiny_spec, tiny_model):
    """A tiny classifier made over-confident: its logits multiplied by 30 (untrained: training costs test time)."""
    keras.utils.set_random_seed(0)
    model = build_classifier(tiny_spec, seed=0, **tiny_model(vocabularies={"caption": ["red", "green", "blue"]}))
    dense = model.get_layer("logits")
    dense.set_weights([weight * 30.0 for weight in dense.get_weights()])
    return model


def _logits_and_labels(model, spec, split):
    probe = keras.Model(model.input, raw_logits(model))
    batches = list(make_dataset(spec, split, batch_size=64, training=False).as_numpy_iterator())
    return np.concatenate([probe.predict_on_batch(x) for x, _ in batches]), np.concatenate([y for _, y in batches])


def test_calibration_lowers_validation_nll_and_keeps_the_argmax(over_confident, tiny_spec, tmp_path):
    logits, labels = _logits_and_labels(over_confident, tiny_spec, "validation")
    calibrated = calibrate(over_confident, tiny_spec, "validation", verbose=False)
    (temperature,) = temperatures_of(calibrated)
    assert temperature > 1.0  # over-confident: the fitted temperature softens
    assert nll(logits, labels, temperature) < nll(logits, labels) - 0.1

    test = next(iter(make_dataset(tiny_spec, "test", batch_size=64, training=False)))[0]
    before = over_confident.predict_on_batch(test)["probabilities"]
    after = calibrated.predict_on_batch(test)["probabilities"]
    np.testing.assert_array_equal(after.argmax(axis=1), before.argmax(axis=1))
    assert after.max(axis=1).mean() < before.max(axis=1).mean()

    calibrated.save(tmp_path / "calibrated.keras")
    restored = load_classifier(tmp_path / "calibrated.keras")
    np.testing.assert_allclose(restored.predict_on_batch(test)["probabilities"], after, rtol=1e-5, atol=1e-7)
    assert temperatures_of(restored) == pytest.approx([temperature])


def test_per_pattern_calibration_fits_one_temperature_per_missing_modality(over_confident, tiny_spec):
    calibrated = calibrate(over_confident, tiny_spec, "validation", per_pattern=True, verbose=False)
    temperatures = temperatures_of(calibrated)
    assert len(temperatures) == 1 + len(tiny_spec.features) and min(temperatures) > 1.0
    assert len(set(np.round(temperatures, 3))) > 1  # the patterns get their own temperatures


def test_calibrate_names_the_missing_split(over_confident, tiny_spec):
    with pytest.raises(ValueError, match="no split 'holdout'.*validation"):
        calibrate(over_confident, tiny_spec, "holdout")
