"""Helpers shared by everything that walks a built model."""
from __future__ import annotations

import keras


def leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Return a model's non-model layers in order, descending into nested models (branches).

    Exports track these rather than the model (tracking nested functional
    models re-traces each of them while a SavedModel is written); fine-tuning
    and weight transfer count and compare them.

    Example:
      >>> [type(layer).__name__ for layer in leaf_layers(model)][:2]
      ['InputLayer', 'TextVectorization']
    """
    leaves = []
    for layer in model.layers:
        leaves.extend(leaf_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return leaves
