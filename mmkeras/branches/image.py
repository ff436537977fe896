"""Image branch: uint8 images -> Conv2D stages with pooling, a keras.applications backbone or a hub encoder."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf
from keras import layers

from mmkeras.branches.common import BATCH_NORM_MOMENTUM, check_positive, finish_branch, make_input
from mmkeras.branches.hub import HubEncoder, finish_hub_branch, is_hub_encoder, make_hub_encoder
from mmkeras.branches.imagenet import ImagenetPreprocessing
from mmkeras.branches.kerashub import is_keras_hub_encoder, make_keras_hub_encoder
from mmkeras.checks import is_number
from mmkeras.registry import lookup
from mmkeras.spec import FeatureSpec

# Backbone name -> (keras.applications class name, its `preprocess_input` mode).
# "none": the application rescales raw 0..255 pixels itself.
BACKBONES: Mapping[str, tuple[str, str]] = {
    "mobilenet_v3_small": ("MobileNetV3Small", "none"),
    "mobilenet_v3_large": ("MobileNetV3Large", "none"),
    "efficientnet_b0": ("EfficientNetB0", "none"),
    "resnet50": ("ResNet50", "caffe"),
    "mobilenet_v2": ("MobileNetV2", "tf"),
    "densenet121": ("DenseNet121", "torch"),
}
# Smallest input side keras.applications accept.
MIN_BACKBONE_SIZE = 32
# Chosen by time to accuracy (benchmarks/results/time_to_accuracy_avmnist.md): (24, 48, 96)
# costs about 0.56x the FLOPs of (32, 64, 128) and learned as well in the fused model;
# (16, 32, 64), at 0.25x, left the image branch weaker (accuracy without audio -8 points).
DEFAULT_STAGES = (24, 48, 96)
# A stride-2 first convolution (time_to_accuracy_avmnist_image_stages.md): about a quarter of
# the stages' FLOPs, and on avmnist it learned as well as full resolution (test accuracy 0.917 /
# 0.901 against 0.893 / 0.895, seeds 0 / 1). Images under MIN_STEM_SIZE a side keep full resolution.
DEFAULT_STEM_STRIDE = 2
MIN_STEM_SIZE = 16
# Mirrorings `flip` takes (keras.layers.RandomFlip modes). None by default: digits, letters and
# signs change meaning in a mirror; photographs and drawings of objects do not.
FLIPS = ("horizontal", "vertical", "horizontal_and_vertical")
# Largest `rotation`: half a turn either way is every angle.
MAX_ROTATION = 0.5


def build_image_branch(
    feature: FeatureSpec,
    *,
    stages: Sequence[int] = DEFAULT_STAGES,
    convs_per_stage: int = 2,
    stem_stride: int = DEFAULT_STEM_STRIDE,
    separable: bool = False,
    backbone: str | None = None,
    weights: str | None = None,
    trainable: bool | None = None,
    augment: bool = True,
    flip: str | None = None,
    rotation: float = 0.0,
    erasing: float = 0.0,
    embed_dim: int = 128,
    dropout_rate: float = 0.3,
    encoder: str | None = None,
    encoder_options: Mapping[str, Any] | None = None,
) -> keras.Model:
    """Build the image branch: pixels in, an embedding and a grid of patch features out.

    By default a small CNN from a table of stages (each: `convs_per_stage`
    3x3 conv + batch norm + ReLU, then 2x2 max pooling and dropout), with light
    random translation and zoom during training: it learns small data well.
    With `backbone`, a keras.applications network replaces the stages; with
    `encoder="hub:<handle-or-path>"`, a pretrained TF Hub image encoder does
    (see `mmkeras.branches.hub.HubEncoder`), fed pixels scaled to [0, 1] (TF
    Hub's image convention) and resized to the size its SavedModel declares.

    Args:
      feature: an image feature of the spec.
      stages: filters of each CNN stage; pooling between stages halves the grid.
      convs_per_stage: conv layers per stage.
      stem_stride: stride of the very first convolution; 2 (the default) halves the
        grid before any other work, which cuts the stages' FLOPs about fourfold.
        Images smaller than `MIN_STEM_SIZE` (16) on a side are not strided.
      separable: depthwise-separable 3x3 convolutions after the first one (fewer
        FLOPs and weights; on CPUs not always faster, see the time-to-accuracy notes).
      backbone: a name in `BACKBONES` to use instead of the stages.
      weights: backbone weights: None (random), "imagenet" (downloads once) or a file path.
      trainable: whether backbone weights train; default False for pretrained weights (and hub
        encoders), else True.
      augment: random translation and zoom while training.
      flip: also mirror images at random while training, one of `FLIPS`
        ("horizontal" for pictures of objects, whose mirror image is the same
        object); None (the default) for data whose mirror image means
        something else (digits, text, maps). A spec sets it per feature with
        `branch: {flip: horizontal}`. Needs `augment`.
      rotation: also rotate images at random while training, by up to this
        fraction of a full turn either way (0.05: 18 degrees), filled with black
        as the translation is; 0 (the default) for none, at most 0.5. Needs
        `augment`.
      erasing: also erase one random rectangle (Random Erasing, Zhong et al.
        2017; up to a third of the picture, filled with noise) of this share of
        the training images; 0 (the default) for none, at most 1. Needs `augment`.
      embed_dim: width of the branch outputs.
      dropout_rate: dropout after each stage and on the pooled features.
      encoder: "hub:<handle-or-path>" of a pretrained image encoder instead of
        the stages (images -> embedding), "keras_hub:<preset-or-folder>" of a
        KerasHub preset (its backbone or vision tower, fed through its image
        converter; see `mmkeras.branches.kerashub.KerasHubEncoder`), or None.
      encoder_options: other `HubEncoder` arguments (`signature`, `output_key`,
        `sequence_key`, `batched`).

    Returns:
      A `keras.Model` taking `(batch, height, width, channels)` uint8 images named
      `feature.name` and returning `{"embedding": (batch, embed_dim), "sequence":
      (batch, grid_cells, embed_dim)}`.

    Raises:
      ValueError: for a non-image feature, an unknown backbone or flip, a
        flip, rotation or erasing out of range or without `augment`, both a backbone
        and an encoder, `weights` or `trainable` with neither, or bad sizes.
      FileNotFoundError, ImportError, ConnectionError: for an encoder handle
        that cannot be loaded (see `mmkeras.branches.hub.resolve_handle`).

    Example:
      >>> build_image_branch(spec.feature("picture")).output["embedding"].shape
      (None, 128)
    """
    if feature.modality != "image":
        raise ValueError(f"build_image_branch needs an image feature, got {feature.name!r} ({feature.modality}).")
    check_positive(embed_dim, "embed_dim")
    pretrained = is_hub_encoder(encoder) or is_keras_hub_encoder(encoder)
    if (encoder is not None or encoder_options is not None) and (not pretrained or backbone is not None):
        raise ValueError(
            f"Image feature {feature.name!r}: `encoder` must be 'hub:<handle-or-path>' or "
            "'keras_hub:<preset-or-folder>' and comes without "
            f"`backbone` (encoder_options only go with it); got encoder={encoder!r}, backbone={backbone!r}."
        )
    if backbone is None and encoder is None and (weights is not None or trainable is not None):
        raise ValueError(
            f"Image feature {feature.name!r}: `weights` and `trainable` go with a pretrained `backbone` "
            f"(one of {sorted(BACKBONES)}) or a hub `encoder`; got weights={weights!r}, trainable={trainable!r} "
            "for the CNN stages, which always train from scratch."
        )
    _check_augmentation(feature, augment, flip, rotation=rotation, erasing=erasing)
    inputs = make_input(feature)
    x = inputs
    if flip is not None:
        x = layers.RandomFlip(flip, name="augment_flip")(x)
    if augment:
        x = layers.RandomTranslation(0.08, 0.08, fill_mode="constant", name="augment_translation")(x)
        x = layers.RandomZoom(0.08, fill_mode="constant", name="augment_zoom")(x)
    if rotation:
        x = layers.RandomRotation(rotation, fill_mode="constant", name="augment_rotation")(x)
    if erasing:
        x = layers.RandomErasing((erasing, erasing), value_range=(0, 255), name="augment_erasing")(x)
    if is_keras_hub_encoder(encoder):  # the preset's image converter resizes and rescales 0..255 pixels
        hub_encoder = make_keras_hub_encoder(
            encoder, modality="image", trainable=trainable, encoder_options=encoder_options
        )
        return finish_hub_branch(feature, inputs, hub_encoder(x), embed_dim=embed_dim, dropout_rate=dropout_rate)
    if encoder is not None:
        hub_encoder = make_hub_encoder(encoder, trainable=trainable, encoder_options=encoder_options)
        encoded = hub_encoder(_hub_pixels(feature, x, hub_encoder))
        return finish_hub_branch(feature, inputs, encoded, embed_dim=embed_dim, dropout_rate=dropout_rate)
    if backbone is None:
        x = layers.Rescaling(1.0 / 255.0)(x)
        x = _conv_stages(x, stages, convs_per_stage, dropout_rate, stem_stride=stem_stride, separable=separable)
    else:
        x = _backbone(feature, x, backbone, weights, trainable)
    sequence = layers.Reshape((-1, x.shape[-1]), name="grid_to_sequence")(x)
    return finish_branch(feature, inputs, sequence, embed_dim=embed_dim, dropout_rate=dropout_rate)


def _check_augmentation(feature: FeatureSpec, augment: bool, flip: str | None, **amounts: float) -> None:
    """Refuse an unknown flip, a rotation or erasing amount out of range, or any of them without `augment`."""
    if flip is not None and (flip not in FLIPS or not augment):
        raise ValueError(
            f"Image feature {feature.name!r}: `flip` must be one of {list(FLIPS)} or None, with augment=True; "
            f"got flip={flip!r}, augment={augment!r}."
        )
    limits = {"rotation": MAX_ROTATION, "erasing": 1.0}
    for name, value in amounts.items():
        if not is_number(value) or not 0 <= value <= limits[name]:
            raise ValueError(
                f"Image feature {feature.name!r}: `{name}` must be a number from 0 to {limits[name]}, got {value!r}."
            )
        if value and not augment:
            raise ValueError(
                f"Image feature {feature.name!r}: `{name}={value}` augments while training and needs augment=True; "
                f"set {name}=0 or augment=True."
            )


def _conv_stages(x, stages: Sequence[int], convs_per_stage: int, dropout_rate: float, *, stem_stride: int = 1,
                 separable: bool = False):
    check_positive(convs_per_stage, "convs_per_stage")
    check_positive(stem_stride, "stem_stride")
    if min(x.shape[1], x.shape[2]) < MIN_STEM_SIZE:
        stem_stride = 1
    if not stages:
        raise ValueError("`stages` must list at least one stage's filter count, e.g. (24, 48, 96).")
    first = True
    for filters in stages:
        check_positive(filters, "stages[i]")
        for _ in range(convs_per_stage):
            if first:
                x = layers.Conv2D(filters, 3, strides=stem_stride, padding="same", use_bias=False)(x)
            elif separable:
                x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
            else:
                x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            first = False
            x = layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM)(x)
            x = layers.Activation("relu")(x)
        # Pool while the grid can still halve: small images keep a 2x2 grid at least.
        if min(x.shape[1], x.shape[2]) >= 4:
            x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(dropout_rate / 2)(x)
    return x


def _backbone(feature: FeatureSpec, x, name: str, weights: str | None, trainable: bool | None):
    class_name, mode = lookup(BACKBONES, name, "backbone")
    height, width, channels = feature.shape
    if channels == 1:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    if min(height, width) < MIN_BACKBONE_SIZE:
        x = layers.Resizing(max(height, MIN_BACKBONE_SIZE), max(width, MIN_BACKBONE_SIZE))(x)
    x = ImagenetPreprocessing(mode=mode, name="backbone_preprocessing")(x)
    application = getattr(keras.applications, class_name)
    network = application(include_top=False, weights=weights, input_shape=tuple(x.shape[1:]), pooling=None)
    network.trainable = (weights is None) if trainable is None else bool(trainable)
    return network(x)


def _hub_pixels(feature: FeatureSpec, x, encoder: HubEncoder):
    """Pixels as the hub encoder declares them: RGB, its size if fixed, [0, 1] floats unless it takes integers."""
    declared = encoder.input_signature
    shape = declared.shape if isinstance(declared, tf.TensorSpec) and declared.shape.rank == 4 else None
    if feature.shape[-1] == 1 and (shape is None or shape[-1] != 1):
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    if shape is not None and shape[1] is not None and shape[2] is not None and tuple(shape[1:3]) != feature.shape[:2]:
        x = layers.Resizing(int(shape[1]), int(shape[2]), name="encoder_resizing")(x)
    if isinstance(declared, tf.TensorSpec) and declared.dtype.is_integer:
        return x
    return layers.Rescaling(1.0 / 255.0, name="encoder_rescaling")(x)
