import keras
import numpy as np
import pytest

from mmkeras.training.schedules import WarmupCosineDecay


@pytest.mark.parametrize("warmup_steps", [0, 10])
def test_warmup_cosine_matches_keras_cosine_decay_at_every_step(warmup_steps):
    ours = WarmupCosineDecay(1e-3, decay_steps=30, warmup_steps=warmup_steps)
    initial = 0.0 if warmup_steps else 1e-3
    keras_schedule = keras.optimizers.schedules.CosineDecay(
        initial, 30, warmup_target=1e-3 if warmup_steps else None, warmup_steps=warmup_steps
    )
    steps = range(50)
    np.testing.assert_allclose([float(ours(s)) for s in steps], [float(keras_schedule(s)) for s in steps],
                               atol=1e-9)


def test_warmup_cosine_survives_serialization():
    schedule = WarmupCosineDecay(2e-3, decay_steps=7, warmup_steps=3)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, WarmupCosineDecay)
    assert [float(restored(s)) for s in range(12)] == [float(schedule(s)) for s in range(12)]


@pytest.mark.parametrize("arguments", [
    {"learning_rate": 0.0, "decay_steps": 5},
    {"learning_rate": 1e-3, "decay_steps": 0},
    {"learning_rate": 1e-3, "decay_steps": 5, "warmup_steps": -1},
    {"learning_rate": 1e-3, "decay_steps": 5.5},
])
def test_warmup_cosine_refuses_bad_arguments(arguments):
    with pytest.raises(ValueError, match="must be"):
        WarmupCosineDecay(**arguments)


@pytest.mark.parametrize(("warmup_epochs", "expected"), [(1.0, 10), (0.25, 2), (0.0, 0), (100.0, 29)])
def test_the_run_schedule_warms_up_for_warmup_epochs(warmup_epochs, expected):
    from mmkeras.training.loop import cosine_schedule

    schedule = cosine_schedule(1e-3, epochs=3, steps_per_epoch=10, warmup_epochs=warmup_epochs)
    assert schedule.warmup_steps == expected  # never the whole run: the last step still decays
    assert schedule.decay_steps == 30 - expected
    assert cosine_schedule(1e-3, epochs=1, steps_per_epoch=10, warmup_epochs=1.0).warmup_steps == 0


def test_a_negative_warmup_is_refused():
    from mmkeras.training.config import TrainingConfig

    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainingConfig(warmup_epochs=-0.5)
