"""Gradient blending: the weights formula, the weighted step, logging and resuming with the weights."""
from __future__ import annotations

import logging

import numpy as np
import pytest

import mmkeras
from mmkeras.training.blending import GradientBlending, blend_weights
from mmkeras.training.config import TrainingConfig, load_run_config

HEADS = ("fused", "caption", "picture", "sound")


def test_blend_weights_follow_generalisation_over_squared_overfitting():
    # ΔG = (0.3, 0.1); O goes from (0.2, 0.2) to (0.3, 0.7), so ΔO = (0.1, 0.5).
    weights = blend_weights([1.0, 1.0], [1.2, 1.2], [0.6, 0.4], [0.9, 1.1], floor=0.0, epsilon=0.0)
    raw = np.array([0.3 / 0.1**2, 0.1 / 0.5**2])
    np.testing.assert_allclose(weights, raw / raw.sum())
    # A head whose validation loss rose gets the floor; the others share the rest, in proportion.
    floored = blend_weights([1.0] * 3, [1.2] * 3, [0.6, 0.6, 0.5], [0.9, 1.0, 1.3], floor=0.05, epsilon=0.0)
    raw = np.array([0.3 / 0.1**2, 0.2 / 0.2**2, 0.0])
    np.testing.assert_allclose(floored, 0.05 + 0.85 * raw / raw.sum())
    assert floored.sum() == pytest.approx(1.0) and floored.min() == pytest.approx(0.05)
    # Unchanged overfitting: epsilon keeps the weight finite.
    assert np.isfinite(blend_weights([1.0, 1.0], [1.0, 1.0], [0.5, 0.5], [0.5, 0.9])).all()


def test_blend_weights_keep_the_previous_ones_when_no_head_generalised_better():
    worse = ([1.0, 1.0], [1.0, 1.0], [0.5, 0.5], [1.1, 1.2])
    np.testing.assert_allclose(blend_weights(*worse, previous=[0.8, 0.2]), [0.8, 0.2])
    np.testing.assert_allclose(blend_weights(*worse), [0.5, 0.5])
    np.testing.assert_allclose(blend_weights([1.0, 1.0], [1.0, np.nan], [0.5, 0.5], [0.9, 0.9],
                                             previous=[0.3, 0.7]), [0.3, 0.7])
    with pytest.raises(ValueError, match="floor must be in"):
        blend_weights([1.0, 1.0], [1.0, 1.0], [0.5, 0.5], [0.9, 0.9], floor=0.5)
    with pytest.raises(ValueError, match="one loss per head"):
        blend_weights([1.0, 1.0], [1.0], [0.5, 0.5], [0.9, 0.9])


def test_blend_smoothing_averages_the_new_estimate_with_the_previous_weights():
    window = ([1.0, 1.0], [1.2, 1.2], [0.6, 0.4], [0.9, 1.1])
    estimate = blend_weights(*window)
    smoothed = blend_weights(*window, previous=[0.2, 0.8], smoothing=0.75)
    np.testing.assert_allclose(smoothed, 0.75 * np.array([0.2, 0.8]) + 0.25 * estimate)
    assert smoothed.sum() == pytest.approx(1.0) and smoothed.min() >= 0.05
    # No previous weights: the estimate is pulled towards equal ones; 0 is the estimate alone.
    np.testing.assert_allclose(blend_weights(*window, smoothing=0.5), 0.25 + 0.5 * estimate)
    np.testing.assert_allclose(blend_weights(*window, previous=[0.2, 0.8], smoothing=0.0), estimate)
    for bad in (1.0, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match=r"smoothing must be a number in \[0, 1\)"):
            blend_weights(*window, smoothing=bad)
    with pytest.raises(ValueError, match="one previous weight per head"):
        blend_weights(*window, previous=[1.0], smoothing=0.5)


def test_the_config_and_the_callback_check_blend_smoothing():
    assert TrainingConfig().blend_smoothing == 0.8
    assert load_run_config({"training": {"blend_smoothing": 0.5}}).training.blend_smoothing == 0.5
    with pytest.raises(ValueError, match=r"TrainingConfig.blend_smoothing must be a number in \[0, 1\)"):
        TrainingConfig(blend_smoothing=1.0)
    with pytest.raises(ValueError, match="smoothing must be a number"):
        GradientBlending([], smoothing=-0.5)
    assert GradientBlending([], smoothing=0.5).smoothing == 0.5


def test_the_config_accepts_gradient_blending_and_rejects_unknown_methods(tiny_train_test_spec, tmp_path, caplog):
    config = load_run_config({"training": {"balance": "gradient_blending", "blend_every": 2}})
    assert config.training.balance == "gradient_blending" and config.training.blend_every == 2
    with pytest.raises(ValueError, match="TrainingConfig.balance must be one of .*gradient_blending"):
        TrainingConfig(balance="gradient_blend")
    with pytest.raises(ValueError, match="TrainingConfig.blend_every must be a positive integer"):
        TrainingConfig(blend_every=0)
    assert TrainingConfig().balance == "gradient_blending"  # the default
    # Without validation data there is nothing to blend by: the run says so and uses aux heads instead.
    with caplog.at_level(logging.WARNING, logger="mmkeras"):
        result = mmkeras.train(tiny_train_test_spec, epochs=1, output_dir=tmp_path / "run", validation_fraction=0.0,
                               verbose=0)
    logged = "\n".join(record.getMessage() for record in caplog.records if record.name == "mmkeras")
    assert "needs validation data" in logged and "balance='aux_heads' instead" in logged
    assert load_run_config(result.config_path).training.balance == "aux_heads"
    assert not any(key.startswith("blend_weight_") for key in result.history)
    with pytest.raises(ValueError, match="needs validation data"):
        GradientBlending(None)


def test_the_blended_step_weights_each_head_loss(tiny_spec, tiny_model):
    from mmkeras.data.pipeline import make_dataset
    from mmkeras.models.classifier import build_classifier
    from mmkeras.training.balance import BalancedTrainingView

    view = BalancedTrainingView(build_classifier(tiny_spec, aux_heads=True, seed=0, **tiny_model()),
                                method="gradient_blending")
    assert view.head_names == HEADS
    assert {"blend_weights", "blend_reference"} <= {v.name for v in view.non_trainable_variables}
    np.testing.assert_allclose(view.blend_weights.numpy(), 0.25)
    view.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    view.blend_weights.assign([0.7, 0.1, 0.15, 0.05])
    x, y = next(iter(make_dataset(tiny_spec, "train", batch_size=8)))
    traces, step = [], view.train_step
    view.train_step = lambda data: traces.append(1) or step(data)  # Python runs once per trace
    logs = view.train_on_batch(x, y, return_dict=True)
    expected = sum(w * logs[f"head_loss_{name}"] for w, name in zip([0.7, 0.1, 0.15, 0.05], HEADS))
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    # New weights are read from the variable: the step is not traced again.
    traced = len(traces)
    view.blend_weights.assign([0.1, 0.1, 0.1, 0.7])
    view.reset_metrics()
    logs = view.train_on_batch(x, y, return_dict=True)
    expected = sum(w * logs[f"head_loss_{name}"] for w, name in zip([0.1, 0.1, 0.1, 0.7], HEADS))
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    assert len(traces) == traced


@pytest.mark.slow
def test_blend_weights_are_estimated_logged_and_kept_by_a_resumed_run(tiny_spec, tmp_path, tiny_model):
    import keras

    class Interrupted(RuntimeError):
        pass

    class StopAfterSecondEpoch(keras.callbacks.Callback):
        weights = None

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:  # after the backup of epoch 2 (the run's callbacks come first)
                StopAfterSecondEpoch.weights = self.model.blend_weights.numpy()
                raise Interrupted

    options = dict(epochs=3, batch_size=16, output_dir=tmp_path / "run", verbose=0, balance="gradient_blending",
                   blend_smoothing=0.5, seed=0, backup_every_seconds=0, **tiny_model())  # a backup per epoch
    with pytest.raises(Interrupted):
        mmkeras.train(tiny_spec, callbacks=[StopAfterSecondEpoch()], **options)
    result = mmkeras.train(tiny_spec, **options)
    assert result.initial_epoch == 2
    history = result.history
    assert history["epoch"] == [0, 1, 2]
    weights = np.array([history[f"blend_weight_{name}"] for name in HEADS]).T  # (epoch, head)
    np.testing.assert_allclose(weights[0], 0.25)  # the first epoch trains with equal weights
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    assert (weights >= 0.05 - 1e-6).all()
    assert not np.allclose(weights[1:], 0.25), "the weights were never re-estimated"
    # The caption's rare-word dropout ramps in over the first half of the 3 epochs, the resumed epoch included.
    np.testing.assert_allclose(history["rare_token_strength"], [0.0, 2 / 3, 1.0], rtol=1e-6)
    # The resumed epoch trained with the weights the interrupted run estimated...
    np.testing.assert_allclose(weights[2], StopAfterSecondEpoch.weights, rtol=1e-6)
    # ...which are the formula on the logged per-head losses of epochs 0 and 1, averaged with the weights before.
    train, validation = ([history[f"{prefix}head_loss_{name}"] for name in HEADS] for prefix in ("", "val_"))
    expected = blend_weights(np.array(train)[:, 0], np.array(validation)[:, 0], np.array(train)[:, 1],
                             np.array(validation)[:, 1], previous=weights[1], smoothing=0.5)
    np.testing.assert_allclose(weights[2], expected, rtol=1e-4)
