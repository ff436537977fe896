"""Loading the `.keras` files mmkeras writes: in Keras safe mode, unless the model runs a hub encoder."""
from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import keras

from mmkeras.branches.common import SequencePooling
from mmkeras.branches.hub import HubEncoder
from mmkeras.branches.imagenet import ImagenetPreprocessing
from mmkeras.branches.kerashub import KerasHubEncoder
from mmkeras.branches.log_mel import LogMelSpectrogram
from mmkeras.branches.spec_augment import SpecAugment
from mmkeras.branches.token_dropout import TokenDropout
from mmkeras.branches.trim_padding import TrimPadding
from mmkeras.fusion import FUSIONS
from mmkeras.models.presence import MissingModalityEmbedding, ModalityDropout, PresenceFlags
from mmkeras.models.temperature import TemperatureScaling
from mmkeras.models.zero_shot_head import ZeroShotHead

# Layers whose weights come with a TF SavedModel graph or a KerasHub preset's files, which Keras'
# safe mode refuses (see `HubEncoder.from_config`, `KerasHubEncoder.from_config`).
SAVED_MODEL_LAYERS = ("HubEncoder", "KerasHubEncoder")
# Layers that carry Python code: never loaded, even from a model that needs unsafe mode.
CODE_LAYERS = ("Lambda",)
# Every mmkeras layer a saved classifier can hold, by the name Keras records for it. Passed to
# `load_model` explicitly, so loading never depends on which modules happen to be imported.
CUSTOM_OBJECTS = MappingProxyType({
    keras.saving.get_registered_name(layer): layer
    for layer in (
        SequencePooling, HubEncoder, KerasHubEncoder, ImagenetPreprocessing, LogMelSpectrogram, SpecAugment,
        TokenDropout, TrimPadding, *FUSIONS.values(), PresenceFlags, ModalityDropout, MissingModalityEmbedding,
        TemperatureScaling, ZeroShotHead,
    )
})


def load_classifier(path: str | os.PathLike) -> keras.Model:
    """Load a `.keras` classifier written by mmkeras, in safe mode unless it holds a hub encoder.

    Every mmkeras layer reloads in Keras safe mode except `HubEncoder`, which
    runs a SavedModel graph. A model file that declares one is loaded with
    `safe_mode=False` (after checking that it declares no `Lambda` layer),
    so run folders with pretrained hub encoders evaluate, predict and export
    like any other; every other file is loaded in safe mode.

    Args:
      path: a `.keras` file (a run's `best.keras` or `final.keras`).

    Returns:
      The classifier, with every output it was saved with.

    Raises:
      FileNotFoundError: if `path` is not a file.
      ValueError: if the file is not a `.keras` archive, or holds a hub
        encoder together with a layer that carries Python code.

    Example:
      >>> load_classifier("runs/tiny/best.keras").output_names
      ['probabilities']
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file: expected a .keras model written by mmkeras.")
    classes = set(_class_names(_read_config(path)))
    needs_graph = bool(classes & set(SAVED_MODEL_LAYERS))
    if needs_graph and classes & set(CODE_LAYERS):
        raise ValueError(
            f"{path} holds a hub encoder and a {sorted(classes & set(CODE_LAYERS))} layer carrying Python code; "
            "mmkeras never writes such a model, so it is not loaded. Load it yourself with "
            "keras.saving.load_model(path, safe_mode=False) only if you trust the file."
        )
    return keras.saving.load_model(path, custom_objects=dict(CUSTOM_OBJECTS), safe_mode=not needs_graph)


def _read_config(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a Keras .keras archive ({error}); save models with model.save('x.keras').") from None


def _class_names(config) -> Iterator[str]:
    """Every `class_name` in a serialized Keras config, nested models included."""
    if isinstance(config, dict):
        if isinstance(config.get("class_name"), str):
            yield config["class_name"]
        for value in config.values():
            yield from _class_names(value)
    elif isinstance(config, list):
        for value in config:
            yield from _class_names(value)
