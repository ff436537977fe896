"""The serving signatures of an exported classifier: raw inputs in, named outputs out.

Every signature decodes with `mmkeras.data.decoders.decode_batch`, which runs
the very `decode_feature` calls that the training pipeline maps over its raw
records, and then calls one shared, traced model function. The signatures:

- `serving_default`: one `tf.string` (batch,) input per feature, named after
  it: text, encoded image bytes (PNG, JPEG, GIF, BMP) or WAV bytes. An empty
  string means the modality is missing for that example (as an empty
  manifest cell does). TF Serving signatures cannot have optional inputs, so
  the explicit flags live in a second signature rather than here.
- `serving_with_presence`: the same inputs plus a bool (batch,) flag
  `<name>_present` per feature; where a flag is False the value is ignored.
- `serving_waveform` (specs with audio only): like `serving_with_presence`,
  but each audio feature is a float32 (batch, samples) mono waveform at the
  feature's `sample_rate`, values in [-1, 1]. It is stored as 16-bit PCM WAV in
  the graph and decoded by the same `decode_audio`, so it is cropped or padded
  exactly as a WAV file would be (and quantised to 16 bits, as a WAV file is).
- `serving_explain`: the inputs of `serving_default`; besides the outputs
  below, a float32 (batch,) `<name>_attribution` per feature: the occlusion
  score of `mmkeras.explain` (the predicted class's probability minus its
  probability with that modality marked absent; M + 1 passes of the model,
  computed by the same `occlusion_scores`). It has no `modality_weights`.
- `serving_decoded`: the model's own inputs (what `make_dataset` yields):
  strings, uint8 images, float32 waveforms and the flags. For clients that
  decode themselves, for the benchmark, and to tell decoder skew from model
  skew in `check_export`.

Outputs of all of them: `probabilities` (batch, num_classes) float32, `class_id`
(batch,) int32, `class_name` (batch,) string, and `modality_weights` (batch, M)
float32 for fusions that weight modalities.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import keras
import tensorflow as tf

from mmkeras.data.decoders import decode_batch
from mmkeras.models.explain import occlusion_scores
from mmkeras.spec import DatasetSpec, FeatureSpec
from mmkeras.wire import ATTRIBUTION_SUFFIX, EXPLAIN_SIGNATURE

DEFAULT = "serving_default"
WITH_PRESENCE = "serving_with_presence"
WAVEFORM = "serving_waveform"
DECODED = "serving_decoded"
EXPLAIN = EXPLAIN_SIGNATURE
PROBABILITIES = "probabilities"
CLASS_ID = "class_id"
CLASS_NAME = "class_name"
MODALITY_WEIGHTS = "modality_weights"


def raw_input_signature(spec: DatasetSpec, *, presence: bool = False, waveform: bool = False) -> dict:
    """The `tf.TensorSpec`s of a raw-input signature, keyed by input name.

    Args:
      spec: the dataset spec.
      presence: add a bool (batch,) `<name>_present` flag per feature.
      waveform: take audio features as float32 (batch, samples) waveforms.

    Returns:
      Input name -> `tf.TensorSpec` (named after the input).
    """
    signature = {}
    for feature in spec.features:
        if waveform and feature.modality == "audio":
            signature[feature.name] = tf.TensorSpec((None, None), tf.float32, name=feature.name)
        else:
            signature[feature.name] = tf.TensorSpec((None,), tf.string, name=feature.name)
    if presence:
        signature.update(_presence_signature(spec))
    return signature


def decoded_input_signature(spec: DatasetSpec) -> dict:
    """The `tf.TensorSpec`s of the model's own (decoded) inputs, flags included."""
    signature = {
        f.name: tf.TensorSpec((None, *f.shape), tf.as_dtype(f.dtype), name=f.name) for f in spec.features
    }
    signature.update(_presence_signature(spec))
    return signature


def _presence_signature(spec: DatasetSpec) -> dict:
    return {f.presence_key: tf.TensorSpec((None,), tf.bool, name=f.presence_key) for f in spec.features}


def signature_names(spec: DatasetSpec) -> tuple[str, ...]:
    """The signatures an export of `spec` has, `serving_default` first."""
    has_audio = any(f.modality == "audio" for f in spec.features)
    return (DEFAULT, WITH_PRESENCE) + ((WAVEFORM,) if has_audio else ()) + (EXPLAIN, DECODED)


def make_predict_decoded(model: keras.Model, spec: DatasetSpec) -> Callable[[Mapping[str, tf.Tensor]], dict]:
    """Return `predict(decoded) -> outputs`: the model plus the class id and name outputs.

    Args:
      model: a classifier from `build_classifier` (dict outputs with
        "probabilities", optionally "modality_weights").
      spec: the dataset spec it was built for.

    Returns:
      A function of the decoded inputs (see `decoded_input_signature`).

    Raises:
      ValueError: if the model has no "probabilities" output or its width is
        not the spec's number of classes.
    """
    outputs = model.output if isinstance(model.output, Mapping) else {}
    if PROBABILITIES not in outputs:
        raise ValueError(
            f"export_for_serving needs a model with a dict output holding {PROBABILITIES!r} (as "
            f"build_classifier makes), got outputs {model.output!r}."
        )
    if outputs[PROBABILITIES].shape[-1] != spec.num_classes:
        raise ValueError(
            f"The model predicts {outputs[PROBABILITIES].shape[-1]} classes but spec {spec.name!r} has "
            f"{spec.num_classes} ({list(spec.label.class_names)}). Export with the spec the model was built for."
        )
    class_names = tf.constant(list(spec.label.class_names), tf.string)

    def predict(decoded):
        results = model(dict(decoded), training=False)
        probabilities = tf.cast(results[PROBABILITIES], tf.float32)
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        named = {PROBABILITIES: probabilities, CLASS_ID: class_id, CLASS_NAME: tf.gather(class_names, class_id)}
        if MODALITY_WEIGHTS in results:
            named[MODALITY_WEIGHTS] = tf.cast(results[MODALITY_WEIGHTS], tf.float32)
        return named

    return predict


def check_batch_sizes(raw: Mapping[str, tf.Tensor]) -> list:
    """Assertions that every input has as many rows as the first; the message names the odd input."""
    names = list(raw)
    first = tf.shape(raw[names[0]])[0]
    checks = [
        tf.debugging.assert_equal(
            tf.shape(raw[name])[0],
            first,
            message=f"Input `{name}` has a different number of rows (examples) than input `{names[0]}`; "
            "send one value per example for every input",
        )
        for name in names[1:]
    ]
    return [check for check in checks if check is not None]


def waveform_to_wav(feature: FeatureSpec, waveforms: tf.Tensor) -> tf.Tensor:
    """Encode a float32 (batch, samples) batch of mono waveforms as (batch,) WAV bytes at the feature's rate.

    Raises:
      tf.errors.InvalidArgumentError: (when run) if a value is outside [-1, 1]
        or not a number: WAV would clip it silently.
    """
    rate = int(feature.options["sample_rate"])
    with tf.name_scope(f"encode_{feature.name}"):
        message = (
            f"Input `{feature.name}`: waveform values must be numbers in [-1, 1] (mono float samples at "
            f"{rate} Hz). Scale the samples (e.g. int16 / 32768)."
        )
        in_range = tf.debugging.Assert(tf.reduce_all(tf.abs(waveforms) <= 1.0), [message])
        with tf.control_dependencies([in_range]):
            waveforms = tf.identity(waveforms)
        return tf.map_fn(
            lambda waveform: tf.audio.encode_wav(waveform[:, None], rate),
            waveforms,
            fn_output_signature=tf.TensorSpec((), tf.string),
        )


def make_explain_signature(spec: DatasetSpec, predict_decoded: Callable) -> Callable:
    """Return `explain(raw) -> outputs` for `serving_explain`: decode, then occlusion over the modalities.

    Args:
      spec: the dataset spec.
      predict_decoded: the traced model function (`make_predict_decoded`).

    Returns:
      A function of `serving_default`'s raw inputs giving `probabilities`,
      `class_id`, `class_name` and `<name>_attribution` (batch,) per feature.
    """
    class_names = tf.constant(list(spec.label.class_names), tf.string)

    def explain(raw):
        raw = dict(raw)
        with tf.control_dependencies(check_batch_sizes(raw)):
            raw = {name: tf.identity(value) for name, value in raw.items()}
        result = occlusion_scores(lambda decoded: predict_decoded(decoded)[PROBABILITIES], decode_batch(spec, raw),
                                  list(spec.feature_names))
        outputs = {PROBABILITIES: result["probabilities"], CLASS_ID: result["class_id"],
                   CLASS_NAME: tf.gather(class_names, result["class_id"])}
        outputs.update({name + ATTRIBUTION_SUFFIX: score for name, score in result["scores"].items()})
        return outputs

    return explain


def make_raw_signature(spec: DatasetSpec, predict_decoded: Callable, *, waveform: bool = False) -> Callable:
    """Return `serve(raw) -> outputs`: batch-size checks, `decode_batch`, then `predict_decoded`.

    Args:
      spec: the dataset spec.
      predict_decoded: the traced model function (`make_predict_decoded`).
      waveform: audio features arrive as float32 waveforms (see the module docstring).

    Returns:
      A function of the raw inputs (see `raw_input_signature`).
    """
    def serve(raw):
        raw = dict(raw)
        with tf.control_dependencies(check_batch_sizes(raw)):
            raw = {name: tf.identity(value) for name, value in raw.items()}
        if waveform:
            for feature in spec.features:
                if feature.modality == "audio":
                    raw[feature.name] = waveform_to_wav(feature, raw[feature.name])
        return predict_decoded(decode_batch(spec, raw))

    return serve
