"""LearnableTemperature bounds: the trained or forced temperature never leaves them; the config round-trips."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from mmkeras.alignment.temperature import LearnableTemperature, LogTemperatureBounds


def _push(layer, direction: float, steps: int = 3, learning_rate: float = 10.0) -> list[float]:
    """Take big SGD steps that drive the log-temperature in `direction`; return the raw weight after each."""
    optimizer = keras.optimizers.SGD(learning_rate)
    raw = []
    for _ in range(steps):
        # d(loss)/d(log_temperature) = -direction: descent moves the weight by +direction * learning_rate.
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(-direction), layer.log_temperature)])
        raw.append(math.exp(float(np.array(layer.log_temperature))))
    return raw


@pytest.mark.parametrize("direction, bound", [(-1.0, 0.05), (1.0, 0.2)])
def test_training_never_moves_the_weight_out_of_the_bounds(direction, bound):
    layer = LearnableTemperature(0.1, min_temperature=0.05, max_temperature=0.2)
    raw = _push(layer, direction)
    # Each step of 10 in log space would overshoot by far; the constraint projects the weight back.
    assert all(0.05 - 1e-6 <= value <= 0.2 + 1e-6 for value in raw)
    assert raw[-1] == pytest.approx(bound, rel=1e-5)
    assert layer.temperature == pytest.approx(bound, rel=1e-5)
    # Inside the bounds it trains again: the projection, unlike a clipped read, leaves a gradient.
    _push(layer, -direction, steps=1, learning_rate=0.1)
    assert 0.05 < layer.temperature < 0.2


def test_a_forced_value_is_read_within_the_bounds_and_unbounded_sides_are_free():
    layer = LearnableTemperature(0.1, min_temperature=0.05, max_temperature=0.2)
    layer.log_temperature.assign(math.log(1e-4))
    assert layer.temperature == pytest.approx(0.05, rel=1e-5)
    layer.log_temperature.assign(math.log(50.0))
    assert layer.temperature == pytest.approx(0.2, rel=1e-5)
    free = LearnableTemperature(0.1, min_temperature=None)
    free.log_temperature.assign(math.log(1e-4))
    assert free.temperature == pytest.approx(1e-4, rel=1e-4)
    # The default floor is CLIP's: a logit scale of at most 100.
    clip = LearnableTemperature(0.07)
    assert _push(clip, -1.0)[-1] == pytest.approx(0.01, rel=1e-5)


def test_config_round_trips_and_bad_bounds_say_what_holds():
    layer = LearnableTemperature(0.1, min_temperature=0.02, learnable=False, max_temperature=0.5, name="t")
    config = layer.get_config()
    assert (config["min_temperature"], config["max_temperature"], config["learnable"]) == (0.02, 0.5, False)
    restored = LearnableTemperature.from_config(config)
    assert (restored.min_temperature, restored.max_temperature) == (0.02, 0.5)
    assert restored.temperature == pytest.approx(0.1)
    constraint = restored.log_temperature.constraint
    assert isinstance(constraint, LogTemperatureBounds)
    assert constraint.get_config() == {"min_temperature": 0.02, "max_temperature": 0.5}
    assert LogTemperatureBounds(**LogTemperatureBounds(0.02, 0.5).get_config()).max_temperature == 0.5
    with pytest.raises(ValueError, match="must hold the initial temperature"):
        LearnableTemperature(0.07, min_temperature=0.1)
    with pytest.raises(ValueError, match="must hold the initial temperature"):
        LearnableTemperature(0.07, max_temperature=0.05)
    with pytest.raises(ValueError, match="max_temperature"):
        LearnableTemperature(0.07, max_temperature=-1.0)
