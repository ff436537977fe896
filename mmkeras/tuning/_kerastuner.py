"""KerasTuner, the optional extra behind `mmkeras.tune`, imported once with an error that says how to install it."""
from __future__ import annotations

INSTALL_HINT = 'pip install "mmkeras[tune]"'

try:
    import keras_tuner
except ImportError as error:  # the extra is not installed: say which one
    raise ImportError(
        f"mmkeras.tune and `mmkeras tune` search with KerasTuner, which is not installed: {INSTALL_HINT} "
        f"(it adds keras-tuner). ({error})"
    ) from error

__all__ = ["INSTALL_HINT", "keras_tuner"]
