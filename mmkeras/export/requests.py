"""Example requests for an export: synthetic inputs in the format of each signature.

The warm-up file, the example REST bodies and the `saved_model_cli` input
file written next to every export are built from these, so they need no
dataset on disk: a caption, a seeded-noise picture and a tone of the spec's
shapes. Row 0 has every modality; each later row leaves one modality out
(empty string, flag False), so that both branches of each decoder are exercised.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mmkeras.data.decoders import decode_feature
from mmkeras.export import signatures
from mmkeras.spec import DatasetSpec, FeatureSpec

EXAMPLE_TONE_HZ = 440.0


def example_value(feature: FeatureSpec, index: int = 0) -> str | bytes:
    """One synthetic raw value of a feature: a caption, PNG bytes or WAV bytes.

    Args:
      feature: the feature's spec (its shape and sample rate are used).
      index: which example (changes the caption, pixels and tone).

    Returns:
      `str` for text, encoded file `bytes` for images and audio.

    Example:
      >>> example_value(spec.feature("picture"))[:4]
      b'\\x89PNG'
    """
    rng = np.random.default_rng(index)
    if feature.modality == "text":
        return f"example text number {index}"
    if feature.modality == "image":
        pixels = rng.integers(0, 256, feature.shape, dtype=np.uint8)
        return tf.io.encode_png(pixels).numpy()
    return tf.audio.encode_wav(example_waveform(feature, index)[:, None], int(feature.options["sample_rate"])).numpy()


def example_waveform(feature: FeatureSpec, index: int = 0) -> np.ndarray:
    """A float32 tone of the audio feature's length and rate, quantised to 16 bits as a WAV holds it."""
    rate = float(feature.options["sample_rate"])
    time = np.arange(feature.num_samples) / rate
    tone = 0.5 * np.sin(2 * np.pi * EXAMPLE_TONE_HZ * (1 + index) * time)
    return (np.round(tone * 32768.0) / 32768.0).astype(np.float32)


def example_columns(spec: DatasetSpec, signature_name: str = signatures.DEFAULT, batch_size: int = 2) -> dict:
    """Synthetic inputs for one signature, as columns (input name -> numpy array).

    Args:
      spec: the dataset spec.
      signature_name: one of `signatures.signature_names(spec)`.
      batch_size: number of examples (rows).

    Returns:
      Input name -> array of `batch_size` rows, in the signature's dtypes
      (object arrays of str/bytes for string inputs).

    Raises:
      ValueError: for a signature name the spec's exports do not have.

    Example:
      >>> sorted(example_columns(spec, "serving_with_presence", 1))
      ['caption', 'caption_present', 'picture', 'picture_present', 'sound', 'sound_present']
    """
    names = signatures.signature_names(spec)
    if signature_name not in names:
        raise ValueError(f"Unknown signature {signature_name!r} for spec {spec.name!r}. Expected one of {list(names)}.")
    present = {
        f.name: np.array([row == 0 or (row - 1) % len(spec.features) != i for row in range(batch_size)])
        for i, f in enumerate(spec.features)
    }
    if len(spec.features) == 1:
        present = {f.name: np.ones(batch_size, bool) for f in spec.features}
    raw = {
        f.name: np.array([example_value(f, row) if present[f.name][row] else "" for row in range(batch_size)], object)
        for f in spec.features
    }
    if signature_name in (signatures.DEFAULT, signatures.EXPLAIN):
        return raw
    flags = {f.presence_key: present[f.name] for f in spec.features}
    if signature_name == signatures.WITH_PRESENCE:
        return {**raw, **flags}
    if signature_name == signatures.WAVEFORM:
        for f in spec.features:
            if f.modality == "audio":
                raw[f.name] = np.stack([
                    example_waveform(f, row) if present[f.name][row] else np.zeros(f.num_samples, np.float32)
                    for row in range(batch_size)
                ])
        return {**raw, **flags}
    # Decoded one example at a time by the pipeline's `decode_feature` (eager `map_fn` would autograph it).
    decoded = {
        f.name: _stack([
            decode_feature(f, tf.constant(_as_bytes(raw[f.name][row])), tf.constant(present[f.name][row])).numpy()
            for row in range(batch_size)
        ])
        for f in spec.features
    }
    return {**decoded, **flags}


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _stack(values: list) -> np.ndarray:
    """Stack decoded examples; texts (bytes) become an object array of str."""
    if isinstance(values[0], bytes):
        column = np.empty(len(values), object)
        column[:] = [value.decode("utf-8") for value in values]
        return column
    return np.stack(values)
