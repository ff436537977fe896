"""`KerasHubEncoder`: a KerasHub backbone and its preprocessing as one Keras layer, raw inputs in.

Text encoders carry their tokenizer and packer, image encoders their image
converter, audio encoders (Whisper) their audio converter, so a model built
on one takes raw strings, pixels or waveforms, and its exported SavedModel
has the tokenizer (or log-mel converter) in its graph. For dual-tower presets
(CLIP, SigLIP) the text feature uses the text tower and the image feature the
vision tower, each through its projection into the shared space.
"""
from __future__ import annotations

import math

import keras
from keras import layers, ops
from keras.src.saving import (
    serialization_lib,  # Keras has no public accessor for the safe-mode scope
)

from mmkeras.branches.kerashub.presets import (
    import_keras_hub,
    resolve_preset,
    stored_preset,
)

EMBEDDING = "embedding"

SEQUENCE = "sequence"

MODALITIES = ("text", "image", "audio")

# What a backbone with a single (non-dict) input takes, by modality.
INPUT_KEYS = {"text": "token_ids", "image": "images", "audio": "encoder_features"}

# Backbone outputs that hold the per-step features (encoder-decoder backbones such as Whisper: the encoder's).
SEQUENCE_OUTPUTS = ("sequence_output", "encoder_sequence_output")

# Default packed length when the preset declares a longer one (BERT's 512 costs 4x 128 per caption).
MAX_DEFAULT_SEQUENCE_LENGTH = 128

# Methods a dual-tower backbone (CLIP, SigLIP) has for each modality's projected embedding.
TOWER_METHODS = {"text": "get_text_embeddings", "image": "get_vision_embeddings"}


@keras.saving.register_keras_serializable(package="mmkeras")
class KerasHubEncoder(layers.Layer):
    """A KerasHub preset's backbone and preprocessing as a Keras layer: raw inputs in, pooled and per-step features out.

    Use it for text (BERT-family, XLM-RoBERTa, the CLIP/SigLIP text tower),
    image (ViT, ResNet, the CLIP/SigLIP vision tower) or audio (Whisper's
    encoder) features. It loads the preset's backbone with
    `Backbone.from_preset`, and its tokenizer (text, packed with start/end
    tokens to `sequence_length`), image converter (image: resize and rescale)
    or audio converter (audio: Whisper's log-mel features, the clip padded to
    the converter's `max_audio_length`), so the layer takes raw `(batch,)`
    strings, `(batch, height, width, channels)` pixels in 0..255 or
    `(batch, samples)` waveforms at the converter's `sampling_rate`.

    Outputs: a backbone giving `pooled_output` / `sequence_output` gives
    both; one giving a (batch, steps, dim) sequence or a (batch, h, w, dim)
    feature map gives it as the sequence and its mean (over real tokens) as
    the pooled vector; a dual-tower backbone gives its projected embedding as
    the pooled vector and as a 1-step sequence. An encoder-decoder audio
    backbone (Whisper) runs its decoder on one token only, and gives the
    encoder's frames that hold the clip (not the padding after it) as the
    sequence and their mean as the pooled vector.

    A `.keras` file stores the preset, not the backbone: loading reloads the
    preset (the folder must still exist, or the name be cached) and then the
    saved (possibly fine-tuned) weights. Keras safe mode refuses to read a
    tokenizer's vocabulary file from outside the archive, so such files load
    with `keras.saving.load_model(path, safe_mode=False)` (as
    `mmkeras.models.saving.load_classifier` does). The exported serving
    SavedModel holds the graph, weights and vocabulary and needs neither.

    Args:
      preset: a preset folder, a built-in preset name or a `kaggle://` / `hf://`
        handle (no "keras_hub:" prefix); see `resolve_preset`.
      modality: "text", "image" or "audio": which preprocessing (and which tower) to use.
      sequence_length: packed token length for text; None: the backbone's
        maximum, at most `MAX_DEFAULT_SEQUENCE_LENGTH`.
      trainable: whether the backbone's weights train (pretrained: False by default).
      **kwargs: base `Layer` arguments (`name`, `dtype`).

    Call arguments:
      inputs: `(batch,)` strings (text), `(batch, height, width, channels)`
        pixels in 0..255, any size (image; gray images are repeated to RGB),
        or `(batch, samples)` float32 waveforms in [-1, 1] (audio).
      training: Python bool; the backbone runs in training mode (dropout)
        only when the layer is trainable.

    Returns:
      `{"embedding": (batch, dim), "sequence": (batch, steps, dim)}`.

    Raises:
      ValueError: for an unknown modality, a bad `sequence_length`, or a
        preset without the tokenizer, image or audio converter the modality needs.
      FileNotFoundError, ImportError, ConnectionError: for a preset that cannot
        be loaded (see `resolve_preset`).

    Example:
      >>> encoder = KerasHubEncoder("/models/tiny_bert", modality="text", sequence_length=8)
      >>> encoder(tf.constant(["a red ball"]))["sequence"].shape
      TensorShape([1, 8, 16])
    """

    def __init__(
        self,
        preset: str,
        *,
        modality: str,
        sequence_length: int | None = None,
        trainable: bool = False,
        **kwargs,
    ):
        super().__init__(trainable=trainable, **kwargs)
        if not isinstance(preset, str) or not preset.strip():
            raise ValueError(f"KerasHubEncoder: `preset` must be a preset name or folder, got {preset!r}.")
        if modality not in MODALITIES:
            raise ValueError(f"KerasHubEncoder: `modality` must be one of {list(MODALITIES)}, got {modality!r}.")
        if sequence_length is not None and (
            isinstance(sequence_length, bool) or not isinstance(sequence_length, int) or sequence_length < 2
        ):
            raise ValueError(
                f"KerasHubEncoder: `sequence_length` must be an integer >= 2 (room for start and end tokens) or "
                f"None, got {sequence_length!r}."
            )
        keras_hub = import_keras_hub()
        # Local folders are stored absolute, so that a `.keras` file reloads from any working directory.
        self.preset = stored_preset(preset)
        self.modality = modality
        source = resolve_preset(self.preset)
        self.backbone = keras_hub.models.Backbone.from_preset(source)
        self.backbone.trainable = bool(trainable)
        method = TOWER_METHODS.get(modality)
        self.tower = method if method is not None and hasattr(self.backbone, method) else None
        if modality == "text":
            self.tokenizer = _load_part(keras_hub.tokenizers.Tokenizer, source, self.preset, "tokenizer", modality)
            self.sequence_length = sequence_length or _default_sequence_length(self.backbone)
            self.packer = keras_hub.layers.StartEndPacker(
                sequence_length=self.sequence_length,
                start_value=_token_id(self.tokenizer, "start_token_id", "cls_token_id"),
                end_value=_token_id(self.tokenizer, "end_token_id", "sep_token_id"),
                pad_value=_token_id(self.tokenizer, "pad_token_id") or 0,
                return_padding_mask=True,
                name="packer",
            )
        else:
            if sequence_length is not None:
                raise ValueError("KerasHubEncoder: `sequence_length` is for text encoders only.")
            self.sequence_length = None
            if modality == "image":
                self.image_converter = _load_part(
                    keras_hub.layers.ImageConverter, source, self.preset, "image converter", modality
                )
            else:
                self.audio_converter = _load_part(
                    keras_hub.layers.AudioConverter, source, self.preset, "audio converter", modality
                )
        self.built = True

    def call(self, inputs, training=None):
        training = bool(training) and self.trainable
        if self.modality == "text":
            token_ids, padding_mask = self.packer(self.tokenizer(inputs))
            features = {
                "token_ids": token_ids,
                "padding_mask": padding_mask,
                "segment_ids": ops.zeros_like(token_ids),
            }
            if self.tower is not None:
                return _one_step(getattr(self.backbone, self.tower)(token_ids))
            return self._pick(self._run_backbone(features, training), ops.cast(padding_mask, "float32"))
        if self.modality == "audio":
            waveforms = ops.cast(inputs, "float32")
            features = self.audio_converter(waveforms)
            outputs = self._pick(self._run_backbone(_encoder_only(features), training), None)
            steps = _clip_steps(self.audio_converter, waveforms.shape[-1], outputs[SEQUENCE].shape[1])
            if steps is None:
                return outputs
            sequence = outputs[SEQUENCE][:, :steps]
            return {EMBEDDING: ops.mean(sequence, axis=1), SEQUENCE: sequence}
        images = ops.cast(inputs, "float32")
        if images.shape[-1] == 1:
            images = ops.repeat(images, 3, axis=-1)
        images = self.image_converter(images)
        if self.tower is not None:
            return _one_step(getattr(self.backbone, self.tower)(images))
        return self._pick(self._run_backbone({"images": images}, training), None)

    def _run_backbone(self, features, training):
        declared = self.backbone.input
        if isinstance(declared, dict):
            return self.backbone({name: features[name] for name in declared}, training=training)
        return self.backbone(features[INPUT_KEYS[self.modality]], training=training)

    def _pick(self, outputs, mask):
        if isinstance(outputs, dict):
            sequence = next((outputs[key] for key in SEQUENCE_OUTPUTS if key in outputs), None)
            pooled = outputs.get("pooled_output")
            if sequence is None and pooled is None:
                raise ValueError(
                    f"KerasHubEncoder {self.preset!r}: cannot tell which of the backbone's outputs {sorted(outputs)} "
                    "are the pooled and per-step features."
                )
            if sequence is None:
                return _one_step(pooled)
            outputs = sequence
        else:
            pooled = None
        if len(outputs.shape) == 4:  # a feature map: its cells are the steps
            outputs = ops.reshape(outputs, (-1, outputs.shape[1] * outputs.shape[2], outputs.shape[3]))
        if pooled is None:
            if mask is None:
                pooled = ops.mean(outputs, axis=1)
            else:
                weights = ops.expand_dims(mask, -1)
                pooled = ops.sum(outputs * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)
        return {EMBEDDING: pooled, SEQUENCE: outputs}

    def get_config(self):
        return {
            **super().get_config(),
            "preset": self.preset,
            "modality": self.modality,
            "sequence_length": self.sequence_length,
        }

    @classmethod
    def from_config(cls, config):
        if serialization_lib.in_safe_mode():
            raise ValueError(
                f"This model holds a KerasHubEncoder that reloads the KerasHub preset {config.get('preset')!r}, "
                "whose tokenizer vocabulary and weights are files outside the .keras archive, which Keras safe mode "
                "refuses. If you trust this model file and the preset, load it with "
                "keras.saving.load_model(path, safe_mode=False) (mmkeras.models.saving.load_classifier does). To "
                "serve it without the preset, use the self-contained SavedModel written by "
                "mmkeras.export.export_for_serving."
            )
        return cls(**config)


def _encoder_only(features):
    """An encoder-decoder backbone's inputs for its encoder's features: the decoder gets one token."""
    batch = ops.shape(features)[0]
    return {
        "encoder_features": features,
        "decoder_token_ids": ops.zeros((batch, 1), "int32"),
        "decoder_padding_mask": ops.ones((batch, 1), "int32"),
    }


def _clip_steps(converter, samples: int | None, steps: int | None) -> int | None:
    """How many of the encoder's `steps` frames cover a clip of `samples` (the rest encode the converter's padding).

    Whisper's converter pads every clip to `num_samples` (30 s) and its encoder
    maps the padded clip to a fixed number of frames, evenly, so the clip's
    frames are the first ceil(steps x samples / num_samples). None: keep them all.
    """
    padded = getattr(converter, "num_samples", None)
    if not padded or samples is None or steps is None:
        return None
    return max(1, math.ceil(steps * min(samples, padded) / padded))


def _one_step(pooled):
    return {EMBEDDING: pooled, SEQUENCE: ops.expand_dims(pooled, 1)}


def _load_part(cls, source: str, preset: str, what: str, modality: str):
    try:
        return cls.from_preset(source)
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(
            f"The KerasHub preset {preset!r} has no {what} ({error}); a {modality} encoder needs one. "
            f"Save it beside the backbone with `{what.replace(' ', '_')}.save_to_preset(folder)`."
        ) from error


def _token_id(tokenizer, *names: str):
    return next((getattr(tokenizer, name) for name in names if getattr(tokenizer, name, None) is not None), None)


def _default_sequence_length(backbone) -> int:
    owner = getattr(backbone, "text_encoder", backbone)
    declared = getattr(owner, "max_sequence_length", None) or MAX_DEFAULT_SEQUENCE_LENGTH
    return min(int(declared), MAX_DEFAULT_SEQUENCE_LENGTH)
