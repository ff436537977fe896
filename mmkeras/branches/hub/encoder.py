"""`HubEncoder`: a pretrained TF Hub / SavedModel encoder as one Keras layer.

It loads the SavedModel through `handles`, calls it through `functions`, and
records its handles in `get_config`, so a `.keras` file reloads the encoder
from them (with its fine-tuned weights); the exported serving SavedModel
copies the encoder's graph, variables and assets into itself and needs
neither the handle nor the network.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from mmkeras.branches.hub.functions import (
    as_keras_variable,
    cast_to_signature,
    declared_input_signature,
    declared_output_signature,
    pooled_output,
    saved_model_function,
    sequence_output,
    signature_kwargs,
    takes_training,
    variables_used_by,
)
from mmkeras.branches.hub.handles import load_saved_model, stored_handle

EMBEDDING = "embedding"

SEQUENCE = "sequence"


@keras.saving.register_keras_serializable(package="mmkeras")
class HubEncoder(layers.Layer):
    """A pretrained TF Hub / SavedModel encoder as a Keras layer: raw inputs in, pooled and per-step features out.

    Use it for text, image or audio encoders published on TF Hub or saved with
    `tf.saved_model.save`: it loads the SavedModel (see `resolve_handle`),
    adopts its variables as the layer's weights (so `trainable`, fine-tuning
    and `.keras` weight files work as for any layer) and keeps the loaded
    object tracked, so an export carries its graph, tables and assets.
    BERT-style encoders that take token ids get their preprocessing model as
    `preprocessor`, run first.

    The encoder's output picks: a tensor (batch, dim) is the pooled output; a
    (batch, steps, dim) tensor is the sequence, mean-pooled; a dict gives
    `output_key` (default: the first of `POOLED_KEYS` present) and
    `sequence_key` (default: "sequence_output" if present). Without a
    sequence, the pooled vector is a 1-step sequence.

    A `.keras` file stores the handles, not the encoder: loading one reloads
    the encoder from them (the folder must still exist, or the URL be cached
    or reachable). Like `keras.layers.TFSMLayer`, it refuses to load in Keras
    safe mode, since a SavedModel's graph can read and write files: load
    trusted files with `keras.saving.load_model(path, safe_mode=False)`, or
    serve the self-contained export (`mmkeras.export.export_for_serving`).

    Args:
      handle: the encoder: a SavedModel folder or a TF Hub handle (no "hub:" prefix).
      preprocessor: an optional preprocessing SavedModel run before the encoder
        (BERT-style: strings -> {"input_word_ids", "input_mask", "input_type_ids"}).
      signature: call this signature (e.g. "serving_default") instead of the
        SavedModel's `__call__`; needed for SavedModels that only have signatures.
      output_key: dict key (or tuple index) of the pooled output.
      sequence_key: dict key (or tuple index) of the per-step output.
      batched: False for encoders that take one unbatched example (e.g.
        YAMNet's 1-D waveform); they are mapped over the batch.
      trainable: whether the encoder's weights train (pretrained: False by default).
      **kwargs: base `Layer` arguments (`name`, `dtype`).

    Call arguments:
      inputs: what the encoder (or the preprocessor) takes: (batch,) strings,
        (batch, height, width, 3) images in [0, 1], (batch, samples) waveforms,
        or a dict of tensors. Floats are cast to the dtype the SavedModel declares.
      training: Python bool; the encoder runs in training mode (dropout,
        batch statistics) only when the layer is trainable.

    Returns:
      `{"embedding": (batch, dim), "sequence": (batch, steps, dim)}`.

    Raises:
      ValueError, FileNotFoundError, ImportError, ConnectionError: for a bad
        or unreachable handle (see `resolve_handle`) or bad arguments.
      TypeError: if `batched` is not a bool.

    Example:
      >>> encoder = HubEncoder("/models/sentence_encoder")
      >>> encoder(tf.constant(["a red ball"]))["embedding"].shape
      TensorShape([1, 512])
    """

    def __init__(
        self,
        handle: str,
        *,
        preprocessor: str | None = None,
        signature: str | None = None,
        output_key: str | int | None = None,
        sequence_key: str | int | None = None,
        batched: bool = True,
        trainable: bool = False,
        **kwargs,
    ):
        super().__init__(trainable=trainable, **kwargs)
        for value, name in ((handle, "handle"), (preprocessor, "preprocessor"), (signature, "signature")):
            if (value is not None or name == "handle") and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"HubEncoder: `{name}` must be a non-empty string, got {value!r}.")
        for value, name in ((output_key, "output_key"), (sequence_key, "sequence_key")):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
                raise ValueError(f"HubEncoder: `{name}` must be an output name, a tuple index or None, got {value!r}.")
        if not isinstance(batched, bool):
            raise TypeError(f"HubEncoder: `batched` must be True or False, got {batched!r}.")
        # Local folders are stored absolute, so that a `.keras` file reloads from any working directory.
        self.handle = stored_handle(handle)
        self.preprocessor = None if preprocessor is None else stored_handle(preprocessor)
        self.signature = signature
        self.output_key = output_key
        self.sequence_key = sequence_key
        self.batched = batched

        # Attributes holding the loaded objects keep them tracked: an export saves their tables and assets.
        self._encoder_object = load_saved_model(self.handle)
        self._encoder_fn = saved_model_function(self._encoder_object, signature, self.handle)
        self._preprocessor_object = None if preprocessor is None else load_saved_model(self.preprocessor)
        self._preprocessor_fn = (
            None if preprocessor is None else saved_model_function(self._preprocessor_object, None, self.preprocessor)
        )
        self._encoder_takes_training = signature is None and takes_training(self._encoder_fn)
        # The SavedModel's variables become this layer's weights (same variables, not copies).
        functions = [fn for fn in (self._preprocessor_fn, self._encoder_fn) if fn is not None]
        self.encoder_variables = [as_keras_variable(v) for v in variables_used_by(functions)]
        # The layer was frozen before its variables existed; give them its flag, as the `trainable` setter does.
        for variable in self.encoder_variables:
            variable.trainable = variable.trainable and bool(trainable)
        self.built = True

    @property
    def input_signature(self):
        """What the first model (preprocessor, else encoder) declares it takes: a `tf.TensorSpec`, a dict, or None."""
        return declared_input_signature(self._preprocessor_fn or self._encoder_fn)

    def call(self, inputs, training=None):
        inputs = cast_to_signature(inputs, self.input_signature)
        if self._preprocessor_fn is not None:
            inputs = self._apply(self._preprocessor_fn, inputs, training=None)
        outputs = self._apply(self._encoder_fn, inputs, training=bool(training) and self.trainable)
        return self._pick(outputs)

    def _apply(self, fn, inputs, training):
        def run(value):
            if self.signature is not None and fn is self._encoder_fn:
                return fn(**signature_kwargs(fn, value))
            if training is not None and self._encoder_takes_training:
                return fn(value, training=training)
            return fn(value)

        if self.batched:
            return run(inputs)
        output_signature = tf.nest.map_structure(
            lambda spec: tf.TensorSpec(spec.shape, spec.dtype), declared_output_signature(fn)
        )
        return tf.map_fn(run, inputs, fn_output_signature=output_signature)

    def _pick(self, outputs):
        pooled = pooled_output(outputs, self.output_key, self.handle)
        sequence = sequence_output(outputs, self.sequence_key, self.handle)
        if len(pooled.shape) == 3:  # a per-step output only: pool it
            sequence = pooled if sequence is None else sequence
            pooled = ops.mean(pooled, axis=1)
        for value, rank, key in ((pooled, 2, "output_key"), (sequence, 3, "sequence_key")):
            if value is not None and len(value.shape) != rank:
                raise ValueError(
                    f"HubEncoder {self.handle!r}: the chosen output has shape {value.shape}, expected rank {rank} "
                    "((batch, dim) pooled, (batch, steps, dim) sequence). Pick another output with "
                    f"`{key}` (encoder_options={{'{key}': ...}} in a branch)."
                )
        if sequence is None:
            sequence = ops.expand_dims(pooled, 1)
        return {EMBEDDING: pooled, SEQUENCE: sequence}

    def get_config(self):
        return {
            **super().get_config(),
            "handle": self.handle,
            "preprocessor": self.preprocessor,
            "signature": self.signature,
            "output_key": self.output_key,
            "sequence_key": self.sequence_key,
            "batched": self.batched,
        }

    @classmethod
    def from_config(cls, config):
        from keras.src.saving import (
            serialization_lib,  # Keras has no public accessor for the safe-mode scope
        )

        if serialization_lib.in_safe_mode():
            handles = [h for h in (config.get("handle"), config.get("preprocessor")) if h]
            raise ValueError(
                f"This model holds a HubEncoder that loads and runs the TF SavedModel(s) {handles}; a SavedModel's "
                "graph can read and write files, so Keras safe mode refuses it (as it does keras.layers.TFSMLayer). "
                "If you trust this model file and its encoder, load it with "
                "keras.saving.load_model(path, safe_mode=False). To serve it without the encoder's folder, use the "
                "self-contained SavedModel written by mmkeras.export.export_for_serving."
            )
        return cls(**config)
