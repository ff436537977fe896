"""Pretrained encoders from TF Hub handles or local SavedModel folders, as one Keras layer.

A branch takes `encoder="hub:<handle-or-path>"`: a local folder holding a TF2
SavedModel loads with `tf.saved_model.load` alone; any other handle (a
tfhub.dev / Kaggle URL, a `.tar.gz` URL, `gs://...`) is resolved by
`tensorflow_hub` (the optional extra `pip install "mmkeras[hub]"`), which
downloads it once into `TFHUB_CACHE_DIR`. Offline, a handle that is not in
the cache fails at once with an error naming it and the cache folder.

`HubEncoder` records its handles in `get_config`, so a `.keras` file reloads
the encoder from them (with its fine-tuned weights); the exported serving
SavedModel copies the encoder's graph, variables and assets into itself and
needs neither the handle nor the network.
"""
from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
from keras import layers, ops

from mmkeras.spec import FeatureSpec

HUB_PREFIX = "hub:"
INSTALL_HINT = 'pip install "mmkeras[hub]"'
CACHE_ENV = "TFHUB_CACHE_DIR"
# Schemes tensorflow_hub downloads from; anything else must be a local folder.
REMOTE_SCHEMES = ("http", "https", "gs")
# Seconds to wait for the handle's host before calling the hub resolver, which has no timeout of its own.
CONNECT_TIMEOUT_SECONDS = 10.0
# Output keys tried, in order, for the pooled embedding and the per-step sequence.
POOLED_KEYS = ("pooled_output", "default", "embedding", "embeddings", "output_0", "outputs", "output")
SEQUENCE_KEYS = ("sequence_output",)
EMBEDDING = "embedding"
SEQUENCE = "sequence"


def is_hub_encoder(value: Any) -> bool:
    """Whether a branch's `encoder` argument names a pretrained encoder ("hub:<handle-or-path>").

    Branch builders call it to choose between their own layers and a `HubEncoder`.

    Args:
      value: the `encoder` argument (any value; only strings can match).

    Returns:
      True for a string starting with "hub:", else False.

    Example:
      >>> is_hub_encoder("hub:/models/sentence_encoder"), is_hub_encoder(None)
      (True, False)
    """
    return isinstance(value, str) and value.startswith(HUB_PREFIX)


def strip_hub_prefix(value: str) -> str:
    """Return the handle or path of a "hub:<handle-or-path>" argument.

    Raises:
      ValueError: if `value` does not start with "hub:" or names nothing.
    """
    if not is_hub_encoder(value) or not value[len(HUB_PREFIX):].strip():
        raise ValueError(
            f"Expected 'hub:<handle-or-path>' (e.g. 'hub:https://tfhub.dev/google/nnlm-en-dim50/2' or "
            f"'hub:/models/my_encoder'), got {value!r}."
        )
    return value[len(HUB_PREFIX):].strip()


def hub_cache_dir() -> str:
    """Where tensorflow_hub caches downloads: `$TFHUB_CACHE_DIR`, else `<tmp>/tfhub_modules` (lost on reboot).

    Used to tell whether a handle is already cached (so no network is needed)
    and to name the cache in error messages.

    Returns:
      The cache folder's path (it need not exist).

    Example:
      >>> hub_cache_dir()  # with TFHUB_CACHE_DIR unset
      '/tmp/tfhub_modules'
    """
    return os.environ.get(CACHE_ENV) or os.path.join(tempfile.gettempdir(), "tfhub_modules")


def is_local_handle(handle: str) -> bool:
    """Whether `handle` is meant as a local folder (not an http(s):// or gs:// URL).

    Decides whether `resolve_handle` loads a folder with TensorFlow alone or
    needs tensorflow_hub; `file://` URLs and `~` paths count as local.

    Args:
      handle: a handle without the "hub:" prefix.

    Returns:
      False if the URL scheme is one of `REMOTE_SCHEMES`, else True.

    Example:
      >>> is_local_handle("/models/sentence_encoder")
      True
      >>> is_local_handle("https://tfhub.dev/google/nnlm-en-dim50/2")
      False
    """
    return urllib.parse.urlparse(handle).scheme not in REMOTE_SCHEMES


def resolve_handle(handle: str) -> str:
    """Turn a handle into the local folder of its SavedModel, downloading it if needed.

    Local folders (absolute, relative or `~` paths, or `file://` URLs) need
    only TensorFlow. URLs need `tensorflow_hub`, which downloads once into
    `TFHUB_CACHE_DIR`; a cached handle never touches the network, and an
    uncached one first checks within `CONNECT_TIMEOUT_SECONDS` that its host
    answers, so being offline is an error rather than a hang.

    Args:
      handle: a SavedModel folder, or a TF Hub / Kaggle / `.tar.gz` / `gs://` handle.

    Returns:
      The SavedModel folder's path.

    Raises:
      FileNotFoundError: for a local path that does not exist.
      ValueError: for a local folder without `saved_model.pb`, or a handle
        tensorflow_hub cannot resolve.
      ImportError: for a URL when tensorflow_hub is not installed.
      ConnectionError: for an uncached URL that cannot be downloaded (offline),
        naming the handle and `TFHUB_CACHE_DIR`.

    Example:
      >>> resolve_handle("/models/sentence_encoder")
      '/models/sentence_encoder'
    """
    if is_local_handle(handle):
        return _local_folder(handle)
    try:
        import tensorflow_hub as hub
    except ImportError as error:
        raise ImportError(
            f"Loading the pretrained encoder {handle!r} needs tensorflow_hub: {INSTALL_HINT} (it adds "
            "tensorflow-hub and tf-keras). Or download the SavedModel yourself and pass its local folder "
            f"as 'hub:/path/to/folder'. ({error})"
        ) from error
    if not _is_cached(handle) and urllib.parse.urlparse(handle).scheme in ("http", "https"):
        _check_reachable(handle)
    try:
        return str(hub.resolve(handle))
    except (OSError, tf.errors.OpError) as error:
        raise ConnectionError(_offline_message(handle, error)) from error
    except Exception as error:
        raise ValueError(
            f"tensorflow_hub could not resolve the encoder handle {handle!r}: {error}. Check the handle; downloads "
            f"go to {CACHE_ENV}={hub_cache_dir()!r}."
        ) from error


def load_saved_model(handle: str):
    """Resolve a handle (see `resolve_handle`) and load its SavedModel with `tf.saved_model.load`.

    The one place encoders and preprocessors are loaded, so local folders and
    TF Hub handles follow the same rules (cache, offline errors).

    Args:
      handle: a SavedModel folder, or a TF Hub / Kaggle / `.tar.gz` / `gs://` handle.

    Returns:
      The object `tf.saved_model.load` returns (its variables, functions and signatures).

    Raises:
      FileNotFoundError, ValueError, ImportError, ConnectionError: see `resolve_handle`.

    Example:
      >>> encoder = load_saved_model("/models/sentence_encoder")
      >>> encoder(tf.constant(["a red ball"])).shape
      TensorShape([1, 50])
    """
    return tf.saved_model.load(resolve_handle(handle))


def _local_folder(handle: str) -> str:
    path = handle.removeprefix("file://")
    folder = Path(os.path.expandvars(os.path.expanduser(path))).resolve()
    if not folder.exists():
        raise FileNotFoundError(
            f"No SavedModel folder at {str(folder)!r} (from encoder handle {handle!r}). Give the folder that holds "
            "saved_model.pb, or a TF Hub URL such as 'https://tfhub.dev/...' (needs tensorflow_hub)."
        )
    if not (folder / "saved_model.pb").is_file():
        raise ValueError(
            f"{str(folder)!r} (from encoder handle {handle!r}) holds no saved_model.pb; give the folder of a TF2 "
            "SavedModel (e.g. what tf.saved_model.save wrote, or an extracted TF Hub download)."
        )
    return str(folder)


def _is_cached(handle: str) -> bool:
    """Whether tensorflow_hub's compressed-download cache already holds `handle` (its folder is sha1(handle))."""
    folder = Path(hub_cache_dir()) / hashlib.sha1(handle.encode("utf8")).hexdigest()
    return folder.is_dir() and any(folder.iterdir())


def _check_reachable(handle: str) -> None:
    url = urllib.parse.urlparse(handle)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=CONNECT_TIMEOUT_SECONDS):
            pass
    except OSError as error:
        raise ConnectionError(_offline_message(handle, error)) from error


def _offline_message(handle: str, error: BaseException) -> str:
    return (
        f"Cannot download the pretrained encoder {handle!r} ({type(error).__name__}: {error}), and it is not in the "
        f"TF Hub cache {CACHE_ENV}={hub_cache_dir()!r}. Run once with network access to fill the cache (and keep "
        f"{CACHE_ENV} pointing at it), or download the SavedModel elsewhere and pass its local folder as "
        "'hub:/path/to/folder'."
    )


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
        self.handle = _stored_handle(handle)
        self.preprocessor = None if preprocessor is None else _stored_handle(preprocessor)
        self.signature = signature
        self.output_key = output_key
        self.sequence_key = sequence_key
        self.batched = batched

        # Attributes holding the loaded objects keep them tracked: an export saves their tables and assets.
        self._encoder_object = load_saved_model(self.handle)
        self._encoder_fn = _callable(self._encoder_object, signature, self.handle)
        self._preprocessor_object = None if preprocessor is None else load_saved_model(self.preprocessor)
        self._preprocessor_fn = (
            None if preprocessor is None else _callable(self._preprocessor_object, None, self.preprocessor)
        )
        self._encoder_takes_training = signature is None and _takes_training(self._encoder_fn)
        # The SavedModel's variables become this layer's weights (same variables, not copies).
        functions = [fn for fn in (self._preprocessor_fn, self._encoder_fn) if fn is not None]
        self.encoder_variables = [_as_keras_variable(v) for v in _variables_used_by(functions)]
        # The layer was frozen before its variables existed; give them its flag, as the `trainable` setter does.
        for variable in self.encoder_variables:
            variable.trainable = variable.trainable and bool(trainable)
        self.built = True

    @property
    def input_signature(self):
        """What the first model (preprocessor, else encoder) declares it takes: a `tf.TensorSpec`, a dict, or None."""
        return _input_signature(self._preprocessor_fn or self._encoder_fn)

    def call(self, inputs, training=None):
        inputs = _cast_to(inputs, self.input_signature)
        if self._preprocessor_fn is not None:
            inputs = self._apply(self._preprocessor_fn, inputs, training=None)
        outputs = self._apply(self._encoder_fn, inputs, training=bool(training) and self.trainable)
        return self._pick(outputs)

    def _apply(self, fn, inputs, training):
        def run(value):
            if self.signature is not None and fn is self._encoder_fn:
                return fn(**_signature_kwargs(fn, value))
            if training is not None and self._encoder_takes_training:
                return fn(value, training=training)
            return fn(value)

        if self.batched:
            return run(inputs)
        output_signature = tf.nest.map_structure(
            lambda spec: tf.TensorSpec(spec.shape, spec.dtype), _output_signature(fn)
        )
        return tf.map_fn(run, inputs, fn_output_signature=output_signature)

    def _pick(self, outputs):
        pooled = _pooled_output(outputs, self.output_key, self.handle)
        sequence = _sequence_output(outputs, self.sequence_key, self.handle)
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
        from keras.src.saving import serialization_lib  # Keras has no public accessor for the safe-mode scope

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


def make_hub_encoder(
    encoder: str,
    *,
    preprocessor: str | None = None,
    trainable: bool | None = None,
    encoder_options: Mapping[str, Any] | None = None,
    name: str = "hub_encoder",
) -> HubEncoder:
    """Build a branch's `HubEncoder` from its "hub:..." arguments.

    Args:
      encoder: "hub:<handle-or-path>".
      preprocessor: None or "hub:<handle-or-path>" of a preprocessing model.
      trainable: whether the pretrained weights train; None means False.
      encoder_options: other `HubEncoder` arguments (`signature`, `output_key`,
        `sequence_key`, `batched`).
      name: the layer's name.

    Returns:
      The `HubEncoder`.

    Raises:
      ValueError: for a malformed argument or an unknown option.

    Example:
      >>> make_hub_encoder("hub:/models/sentence_encoder").trainable
      False
    """
    options = dict(encoder_options or {})
    allowed = ("signature", "output_key", "sequence_key", "batched")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown encoder_options {unknown}; allowed keys are {list(allowed)}.")
    if preprocessor is not None:
        preprocessor = strip_hub_prefix(preprocessor)
    if trainable is not None and not isinstance(trainable, bool):
        raise ValueError(f"`trainable` must be True, False or None (pretrained: frozen), got {trainable!r}.")
    return HubEncoder(
        strip_hub_prefix(encoder), preprocessor=preprocessor, trainable=bool(trainable), name=name, **options
    )


def finish_hub_branch(
    feature: FeatureSpec, inputs, encoded: Mapping[str, Any], *, embed_dim: int, dropout_rate: float
) -> keras.Model:
    """Project a pretrained encoder's outputs to the branch contract and wrap them in the branch model.

    The encoder's pooled output, after dropout and a dense layer, is the
    `embedding`; its per-step output (or the pooled vector as one step),
    projected, is the `sequence`. Layer names match `finish_branch`.

    Args:
      feature: the branch's feature.
      inputs: the branch's `keras.Input`.
      encoded: a `HubEncoder`'s output dict.
      embed_dim: width of both outputs.
      dropout_rate: dropout before the embedding's dense layer.

    Returns:
      A `keras.Model` named `<feature>_branch` with outputs
      `{"embedding": (batch, embed_dim), "sequence": (batch, steps, embed_dim)}`.
    """
    sequence = layers.Dense(embed_dim, name="sequence_projection")(encoded[SEQUENCE])
    pooled = layers.Dropout(dropout_rate)(encoded[EMBEDDING])
    embedding = layers.Dense(embed_dim, activation="relu", name="embedding")(pooled)
    return keras.Model(inputs, {"embedding": embedding, "sequence": sequence}, name=f"{feature.name}_branch")


def _stored_handle(handle: str) -> str:
    if is_local_handle(handle) and not handle.startswith("file://"):
        return str(Path(os.path.expandvars(os.path.expanduser(handle))).resolve())
    return handle


def _callable(loaded, signature: str | None, handle: str):
    if signature is not None:
        if signature not in loaded.signatures:
            raise ValueError(
                f"The SavedModel {handle!r} has no signature {signature!r}; it has {sorted(loaded.signatures)}."
            )
        return loaded.signatures[signature]
    if callable(loaded):
        return loaded
    raise ValueError(
        f"The SavedModel {handle!r} is not callable (no __call__ was saved); pick one of its signatures "
        f"{sorted(loaded.signatures)} with `signature=` (encoder_options={{'signature': ...}} in a branch)."
    )


def _concrete_functions(fn) -> list:
    # A loaded object's traces hang off its restored `__call__`; a signature is one concrete function.
    for candidate in (fn, getattr(fn, "__call__", None)):  # noqa: B004
        if hasattr(candidate, "concrete_functions"):
            return list(candidate.concrete_functions)
    if hasattr(fn, "structured_input_signature"):
        return [fn]
    return []


def _takes_training(fn) -> bool:
    """Whether a restored `__call__` was saved with a `training` argument (as TF Hub's reusable SavedModels are)."""
    for concrete in _concrete_functions(fn):
        args, kwargs = concrete.structured_input_signature
        if "training" in kwargs or len(args) > 1:
            return True
    return False


def _input_signature(fn):
    functions = _concrete_functions(fn)
    if not functions:
        return None
    args, kwargs = functions[0].structured_input_signature
    if args:
        return args[0]
    return dict(kwargs) if len(kwargs) != 1 else next(iter(kwargs.values()))


def _output_signature(fn):
    functions = _concrete_functions(fn)
    if not functions:
        raise ValueError("batched=False needs an encoder whose SavedModel declares its output signature.")
    return functions[0].structured_outputs


def _signature_kwargs(fn, value) -> dict:
    if isinstance(value, Mapping):
        return dict(value)
    names = list(fn.structured_input_signature[1])
    if len(names) != 1:
        raise ValueError(f"The signature takes several inputs {names}; feed it a dict of them.")
    return {names[0]: value}


def _cast_to(inputs, signature):
    """Cast numeric inputs to the dtype the SavedModel declares (float16 under mixed precision, uint8 pixels)."""
    def numeric(dtype) -> bool:
        return dtype.is_floating or dtype.is_integer

    def cast(value, spec):
        if not isinstance(spec, tf.TensorSpec) or value.dtype == spec.dtype:
            return value
        if not (numeric(value.dtype) and numeric(spec.dtype)):
            return value
        if value.dtype.is_floating and spec.dtype.is_integer:
            value = tf.round(value)
        return tf.saturate_cast(value, spec.dtype)

    if isinstance(inputs, Mapping) and isinstance(signature, Mapping):
        return {key: cast(value, signature.get(key)) for key, value in inputs.items()}
    if isinstance(inputs, Mapping):
        return inputs
    return cast(inputs, signature)


def _pooled_output(outputs, key, handle: str):
    """The output `key` names, else the first of `POOLED_KEYS`, else the only one (or only matrix) there is."""
    if not isinstance(outputs, (Mapping, list, tuple)):
        return outputs
    if key is not None:
        return _output_at(outputs, key, "output_key", handle)
    if isinstance(outputs, Mapping):
        for name in POOLED_KEYS:
            if name in outputs:
                return outputs[name]
        matrices = [name for name, value in outputs.items() if len(value.shape) == 2]
        if len(matrices) == 1:
            return outputs[matrices[0]]
        raise ValueError(
            f"HubEncoder {handle!r}: cannot tell which of the outputs {sorted(outputs)} is the pooled embedding; "
            "pass `output_key` (encoder_options={'output_key': ...} in a branch)."
        )
    if len(outputs) == 1:
        return outputs[0]
    raise ValueError(
        f"HubEncoder {handle!r} returns {len(outputs)} outputs; pass `output_key` with the index of the embedding "
        "(e.g. 1 for YAMNet's (scores, embeddings, spectrogram))."
    )


def _sequence_output(outputs, key, handle: str):
    """The output `key` names, else the first of `SEQUENCE_KEYS` present, else None."""
    if key is not None:
        return _output_at(outputs, key, "sequence_key", handle)
    if isinstance(outputs, Mapping):
        return next((outputs[name] for name in SEQUENCE_KEYS if name in outputs), None)
    return None


def _output_at(outputs, key, argument: str, handle: str):
    if isinstance(outputs, Mapping):
        if key not in outputs:
            raise ValueError(f"HubEncoder {handle!r}: no output {key!r}; its outputs are {sorted(outputs)}.")
        return outputs[key]
    if not isinstance(outputs, (list, tuple)) or not isinstance(key, int) or not -len(outputs) <= key < len(outputs):
        count = len(outputs) if isinstance(outputs, (list, tuple)) else 1
        raise ValueError(f"HubEncoder {handle!r}: `{argument}`={key!r} names none of its {count} output(s).")
    return outputs[key]


def _variables_used_by(functions) -> list:
    """The variables the functions read, trainable ones first, each once, in a stable order."""
    seen, trainable, frozen = set(), [], []
    for fn in functions:
        for concrete in _concrete_functions(fn):
            for variable in concrete.trainable_variables:
                if id(variable) not in seen:
                    seen.add(id(variable))
                    trainable.append(variable)
        for concrete in _concrete_functions(fn):
            for variable in concrete.variables:
                if id(variable) not in seen:
                    seen.add(id(variable))
                    frozen.append(variable)
    return trainable + frozen


def _as_keras_variable(variable) -> keras.Variable:
    """Wrap a loaded tf.Variable as a Keras variable sharing its storage (as keras.layers.TFSMLayer does)."""
    return keras.Variable(
        initializer=variable,
        trainable=bool(variable.trainable) and variable.dtype.is_floating,
        dtype=variable.dtype,
        shape=variable.shape,
        # Keras variable names cannot contain slashes.
        name=variable.name.split(":")[0].replace("/", "_"),
    )
