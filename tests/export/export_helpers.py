"""Tiny classifiers for the export tests (the serving tests keep their own copy)."""
from __future__ import annotations

VOCABULARIES = {"caption": ["red", "green", "blue", "ball", "box"]}
# Small branches without bidirectional or audio LSTMs: export time is tracing time.
SMALL = {
    "units": 8,
    "embed_dim": 8,
    "vocabularies": VOCABULARIES,
    "branch_options": {
        "text": {"token_dim": 4, "lstm_units": 4, "bidirectional": False},
        "image": {"stages": (4,), "convs_per_stage": 1},
        "audio": {"encoder": "conv1d", "conv_stages": (4,)},
    },
}


def build_small(spec, fusion: str = "attention"):
    """An untrained tiny classifier (predictions do not depend on training)."""
    import keras

    from mmkeras import build_classifier

    keras.utils.set_random_seed(0)
    return build_classifier(spec, fusion=fusion, seed=0, **SMALL)
