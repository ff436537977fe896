"""Zero-shot classifiers from text prompts: a model from a raw image (or recording) to class probabilities.

CLIP-style: each class name fills a prompt template ("a photo of a {}."),
the text tower embeds the prompts once, and the model scores an example by
the cosine similarity of its embedding to each prompt's, scaled by the
preset's logit scale, through a softmax. Nothing is trained.

The model has a classifier's interface (see `build_classifier`): an input
named after the feature, its optional `<name>_present` flag (an absent input
gets uniform probabilities), a "presence" layer and a "probabilities" softmax
over logits, so `evaluate`, `calibrate`, `explain`, `export_for_serving`,
`mmkeras predict` (on a folder written by `save_run`) and the serving client
take it as they take any classifier of a one-feature spec.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from mmkeras.branches.kerashub import (
    KerasHubEncoder,
    is_keras_hub_encoder,
    strip_keras_hub_prefix,
)
from mmkeras.models.classifier import PROBABILITIES
from mmkeras.models.presence import MissingModalityEmbedding, PresenceFlags
from mmkeras.models.zero_shot_head import ZeroShotHead

Encoder = str | keras.layers.Layer | Callable[[Any], Any]


def build_zero_shot_classifier(
    image_encoder: Encoder,
    text_encoder: Encoder,
    class_names: Sequence[str],
    *,
    template: str = "a photo of a {}.",
    logit_scale: float | None = None,
    input_shape: Sequence[int] | None = None,
    input_name: str = "image",
) -> keras.Model:
    """Build a Keras model from raw pixels (or recordings) to zero-shot class probabilities, prompted by class names.

    Use it to classify into classes that no model was trained on: a CLIP or
    SigLIP preset (or the towers of an `mmkeras` dual encoder) embeds the
    images and the prompts in one space. To evaluate, export or serve it,
    name the input after a spec's feature (`input_name="picture"`) and pass
    the spec cut to that feature (`spec.with_features(["picture"])`), whose
    label's class names are `class_names`.

    Args:
      image_encoder: "keras_hub:<preset or folder>" of a dual-tower preset (its
        vision tower), or a Keras model mapping raw inputs to an embedding (or
        to a dict with "embedding"), such as `mmkeras.alignment.tower(encoder, "picture")`.
      text_encoder: the same preset, or a model mapping `(batch,)` strings to
        an embedding (`mmkeras.alignment.tower(encoder, "caption")`).
      class_names: the classes, in label order.
      template: the prompt, with `{}` where the class name goes.
      logit_scale: the multiplier of the cosine similarities; None takes the
        preset's learned logit scale (exp of its `logit_scale` weight).
      input_shape: the raw input's shape, e.g. (224, 224, 3) or a spec
        feature's `shape`; None takes the preset's image size (or the image
        model's input shape).
      input_name: the model input's name (the feature's name: its data and serving key).

    Returns:
      A `keras.Model` taking `{input_name: (batch, *input_shape),
      "<input_name>_present": (batch,) bool, optional}` (uint8 images for a
      preset; a model encoder's own input dtype, e.g. float32 waveforms) and
      returning `{"probabilities": (batch, num_classes)}`.

    Raises:
      ValueError: for no classes, repeated classes, a template without `{}`,
        no logit scale to use, or an encoder that is neither a preset nor a model.

    Example:
      >>> model = build_zero_shot_classifier("keras_hub:clip_vit_base_patch32", "keras_hub:clip_vit_base_patch32",
      ...                                    ["cat", "dog"])
      >>> model.predict(images)["probabilities"].shape
      (8, 2)
    """
    names = [str(name) for name in class_names] if not isinstance(class_names, str) else []
    if not names or len(set(names)) != len(names):
        raise ValueError(f"`class_names` must list two or more distinct class names, got {class_names!r}.")
    if not isinstance(template, str) or "{}" not in template:
        raise ValueError(f"`template` must be a string with '{{}}' where the class name goes, got {template!r}.")
    image_model = _encoder(image_encoder, "image", "image_encoder")
    text_model = _encoder(text_encoder, "text", "text_encoder")
    prompts = tf.constant([template.format(name) for name in names])
    class_embeddings = np.asarray(_embedding(text_model(prompts)))
    scale = _logit_scale(image_model) if logit_scale is None else logit_scale
    if scale is None:
        raise ValueError(
            "`logit_scale=None` takes the preset's learned logit scale, and this image encoder has none; pass "
            "`logit_scale` (1 / temperature, e.g. 100.0 as CLIP's)."
        )
    shape = tuple(input_shape) if input_shape is not None else _input_shape(image_model)
    inputs = keras.Input(shape=shape, dtype=_input_dtype(image_model), name=input_name)
    flag = keras.Input(shape=(), dtype="bool", name=f"{input_name}_present", optional=True)
    embedding = _embedding(image_model(inputs))
    presence = PresenceFlags(name="presence")([embedding], [flag])
    # A frozen zero stand-in: an absent input has no cosine to any prompt, so its logits are 0 (uniform).
    [embedding] = MissingModalityEmbedding(trainable=False, name="missing_embedding")([embedding], presence)
    logits = ZeroShotHead(class_embeddings, float(scale), name="zero_shot_head")(embedding)
    probabilities = layers.Activation("softmax", dtype="float32", name=PROBABILITIES)(logits)
    return keras.Model({input_name: inputs, flag.name: flag}, {PROBABILITIES: probabilities},
                       name="zero_shot_classifier")


def _encoder(encoder: Encoder, modality: str, argument: str):
    if isinstance(encoder, str):
        preset = strip_keras_hub_prefix(encoder) if is_keras_hub_encoder(encoder) else encoder
        return KerasHubEncoder(preset, modality=modality, name=f"{modality}_encoder")
    if callable(encoder):
        return encoder
    raise ValueError(
        f"`{argument}` must be 'keras_hub:<preset or folder>' or a Keras model giving embeddings, got {encoder!r}."
    )


def _embedding(outputs):
    return outputs["embedding"] if isinstance(outputs, dict) else outputs


def _logit_scale(image_model) -> float | None:
    backbone = getattr(image_model, "backbone", None)
    weights = [w for w in getattr(backbone, "weights", []) if w.name == "logit_scale"]
    return float(np.exp(np.asarray(weights[0].numpy()).reshape(()))) if weights else None


def _input_dtype(image_model) -> str:
    declared = getattr(image_model, "inputs", None)
    if isinstance(image_model, KerasHubEncoder) or not declared:
        return "uint8"
    return declared[0].dtype


def _input_shape(image_model) -> tuple:
    converter = getattr(image_model, "image_converter", None)
    if converter is not None and converter.image_size is not None:
        return (*converter.image_size, 3)
    declared = getattr(image_model, "input_shape", None)
    if declared is None:
        raise ValueError("Pass `input_shape` (e.g. (224, 224, 3)): the image encoder does not declare one.")
    return tuple(declared[1:])
