"""Calling a loaded SavedModel: its callable or signature, the inputs it declares, the outputs it gives, its variables.

SavedModels on TF Hub differ in how they are called (`__call__` with or
without `training`, a named signature taking keyword inputs), in the dtypes
they declare and in how their outputs are keyed; these helpers turn each
into what `HubEncoder` needs.
"""
from __future__ import annotations

from collections.abc import Mapping

import keras
import tensorflow as tf

# Output keys tried, in order, for the pooled embedding and the per-step sequence.
POOLED_KEYS = ("pooled_output", "default", "embedding", "embeddings", "output_0", "outputs", "output")

SEQUENCE_KEYS = ("sequence_output",)


def saved_model_function(loaded, signature: str | None, handle: str):
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


def takes_training(fn) -> bool:
    """Whether a restored `__call__` was saved with a `training` argument (as TF Hub's reusable SavedModels are)."""
    for concrete in _concrete_functions(fn):
        args, kwargs = concrete.structured_input_signature
        if "training" in kwargs or len(args) > 1:
            return True
    return False


def declared_input_signature(fn):
    functions = _concrete_functions(fn)
    if not functions:
        return None
    args, kwargs = functions[0].structured_input_signature
    if args:
        return args[0]
    return dict(kwargs) if len(kwargs) != 1 else next(iter(kwargs.values()))


def declared_output_signature(fn):
    functions = _concrete_functions(fn)
    if not functions:
        raise ValueError("batched=False needs an encoder whose SavedModel declares its output signature.")
    return functions[0].structured_outputs


def signature_kwargs(fn, value) -> dict:
    if isinstance(value, Mapping):
        return dict(value)
    names = list(fn.structured_input_signature[1])
    if len(names) != 1:
        raise ValueError(f"The signature takes several inputs {names}; feed it a dict of them.")
    return {names[0]: value}


def cast_to_signature(inputs, signature):
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


def pooled_output(outputs, key, handle: str):
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


def sequence_output(outputs, key, handle: str):
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


def variables_used_by(functions) -> list:
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


def as_keras_variable(variable) -> keras.Variable:
    """Wrap a loaded tf.Variable as a Keras variable sharing its storage (as keras.layers.TFSMLayer does)."""
    return keras.Variable(
        initializer=variable,
        trainable=bool(variable.trainable) and variable.dtype.is_floating,
        dtype=variable.dtype,
        shape=variable.shape,
        # Keras variable names cannot contain slashes.
        name=variable.name.split(":")[0].replace("/", "_"),
    )
