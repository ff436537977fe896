"""Balancing modalities: auxiliary heads and OGM-GE."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import mmkeras
from mmkeras.models.classifier import build_classifier
from mmkeras.training.balance import BalancedTrainingView, ogm_coefficients
from mmkeras.training.config import TrainingConfig
from mmkeras.training.loop import cosine_schedule


def test_ogm_coefficients_damp_only_the_dominant_modality():
    coefficients = ogm_coefficients(tf.constant([0.9, 0.3]), 0.5).numpy()
    np.testing.assert_allclose(coefficients, [1 - np.tanh(0.5 * (0.9 / 0.3 - 1)), 1.0], rtol=1e-6)
    three = ogm_coefficients(tf.constant([0.6, 0.2, 0.4]), 1.0).numpy()
    np.testing.assert_allclose(three, [1 - np.tanh(0.6 / 0.3 - 1), 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(ogm_coefficients(tf.constant([0.5, 0.5]), 1.0).numpy(), [1.0, 1.0])


def test_aux_heads_add_one_output_per_modality(tiny_spec, tiny_model):
    model = build_classifier(tiny_spec, aux_heads=True, seed=0, **tiny_model())
    assert set(model.output) == {"probabilities", "aux_caption", "aux_picture", "aux_sound"}
    view = BalancedTrainingView(model)
    assert view.feature_names == ["caption", "picture", "sound"]
    with pytest.raises(ValueError, match="aux_heads=True"):
        BalancedTrainingView(build_classifier(tiny_spec, seed=0, **tiny_model()))
    with pytest.raises(ValueError, match="Unknown balance method"):
        BalancedTrainingView(model, method="gradnorm")
    with pytest.raises(ValueError, match="balance"):
        TrainingConfig(balance="gradnorm")


def test_aux_losses_skip_examples_whose_modality_is_absent(tiny_spec, tiny_model):
    view = BalancedTrainingView(build_classifier(tiny_spec, aux_heads=True, seed=0, **tiny_model()))
    labels = tf.constant([0, 1])
    heads = [tf.constant([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2]])] * 3
    x = {"caption_present": tf.constant([True, False]), "picture_present": tf.constant([False, False]),
         "sound_present": tf.constant([True, True])}
    caption, picture, sound = (float(v) for v in view._aux_losses(x, labels, heads))
    np.testing.assert_allclose(caption, -np.log(0.5), rtol=1e-5)
    assert picture == 0.0
    np.testing.assert_allclose(sound, -(np.log(0.5) + np.log(0.6)) / 2, rtol=1e-5)


def test_aux_losses_use_the_compiled_loss_and_the_class_weights(tiny_spec, tiny_model):
    from mmkeras.training.losses import make_loss

    view = BalancedTrainingView(build_classifier(tiny_spec, aux_heads=True, seed=0, **tiny_model()))
    view.compile(optimizer="adam", loss=make_loss(TrainingConfig(loss="focal", focal_gamma=2.0, label_smoothing=0.0)))
    labels = tf.constant([0, 1])
    heads = [tf.constant([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2]])] * 3
    x = {f"{name}_present": tf.constant([True, True]) for name in ("caption", "picture", "sound")}
    caption = float(view._aux_losses(x, labels, heads, tf.constant([3.0, 1.0]))[0])

    def focal(p):
        return -((1 - p) ** 2) * np.log(p)

    np.testing.assert_allclose(caption, (3 * focal(0.5) + focal(0.6)) / 2, rtol=1e-5)


def test_ogm_ge_damps_the_dominant_branch_gradients(tiny_spec, tiny_model):
    view = BalancedTrainingView(build_classifier(tiny_spec, aux_heads=True, seed=0, **tiny_model()), method="ogm_ge")
    variables = view.trainable_variables
    gradients = [tf.ones_like(v) for v in variables]
    confident = tf.constant([[1.0, 0.0, 0.0]])
    unsure = tf.constant([[0.2, 0.4, 0.4]])
    tf.random.set_seed(0)
    modulated = view._modulate(gradients, variables, tf.constant([0]), [confident, unsure, unsure])
    caption_ids = view.branch_variables[0]
    head_ids = {id(v) for v in view.get_layer("logits").trainable_variables}
    for gradient, variable, new in zip(gradients, variables, modulated):
        if id(variable) in head_ids:  # not part of a branch: untouched
            np.testing.assert_array_equal(new.numpy(), gradient.numpy())
    caption_means = [float(tf.reduce_mean(n)) for v, n in zip(variables, modulated) if id(v) in caption_ids]
    expected = 1 - np.tanh(0.5 * (1.0 / 0.2 - 1))
    # Noise has the gradient's std (0 for a constant gradient), so the mean is the scale.
    np.testing.assert_allclose(caption_means, expected, rtol=1e-3)


def test_cosine_schedule_warms_up_then_decays():
    schedule = cosine_schedule(1e-3, epochs=4, steps_per_epoch=10)
    values = [float(schedule(step)) for step in (0, 5, 10, 25, 40)]
    assert values[0] == 0.0 and values[1] == pytest.approx(5e-4) and values[2] == pytest.approx(1e-3)
    assert values[2] > values[3] > values[4] and values[4] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("balance", ["aux_heads", "ogm_ge"])
def test_train_with_balance_saves_a_reloadable_classifier(tiny_spec, tmp_path, balance, tiny_model):
    result = mmkeras.train(tiny_spec, epochs=1, batch_size=16, output_dir=tmp_path / "run", verbose=0,
                           balance=balance, learning_rate_schedule="cosine", seed=0, **{
                               k: v for k, v in tiny_model().items()})
    assert np.isfinite(result.history["loss"]).all()
    restored = keras.saving.load_model(result.final_model_path, safe_mode=True)
    assert "aux_sound" in restored.output
    report = mmkeras.evaluate(restored, tiny_spec, "test")
    assert 0.0 <= report["accuracy"] <= 1.0
