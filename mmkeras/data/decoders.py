"""Decoders: pure TF functions from raw values (strings, file bytes) to model tensors.

A decoder is written once. The tf.data pipeline maps these functions over raw
records and the exported serving signature runs the very same functions on the
raw strings of a request, so training and serving cannot drift apart.

Every function here is graph-safe (no Python control flow on tensor values), so
it runs eagerly, inside `Dataset.map`, inside a `tf.function`, and under
`tf.map_fn` (see `decode_batch`). Errors are `tf.errors.InvalidArgumentError`s
whose messages (or failing node names, `decode_<feature>/...`) name the
feature, so a serving request with a broken input says which input is broken.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import tensorflow as tf

from mmkeras.spec import DatasetSpec, FeatureSpec

# Leading bytes of the image formats `tf.io.decode_image` understands.
IMAGE_SIGNATURES = {
    "PNG": b"\x89PNG\r\n\x1a\n",
    "JPEG": b"\xff\xd8\xff",
    "GIF": b"GIF8",
    "BMP": b"BM",
}
# Half-length of the windowed-sinc low-pass run before downsampling audio.
RESAMPLE_HALF_TAPS = 32


def decode_text(feature: FeatureSpec, value: tf.Tensor) -> tf.Tensor:
    """Return the text as a valid UTF-8 string tensor.

    Tokenisation happens in the model (its `TextVectorization` layer), so the
    decoder only guarantees valid UTF-8: invalid byte sequences become U+FFFD
    instead of failing the whole batch.

    Args:
      feature: the text feature's spec.
      value: a string tensor of any shape (a scalar per example, or a batch).

    Returns:
      A string tensor of the same shape.

    Example:
      >>> decode_text(feature, tf.constant("a red ball")).numpy()
      b'a red ball'
    """
    with tf.name_scope(f"decode_{feature.name}"):
        value = tf.convert_to_tensor(value, tf.string)
        return tf.strings.unicode_transcode(value, "UTF-8", "UTF-8", errors="replace")


def decode_image(feature: FeatureSpec, encoded_bytes: tf.Tensor) -> tf.Tensor:
    """Decode PNG, JPEG, GIF or BMP bytes into the spec's image shape, as uint8.

    The image is decoded to RGB (alpha dropped, grey replicated; a GIF keeps
    its first frame), turned to grey with `tf.image.rgb_to_grayscale` weights
    when the spec asks for 1 channel, and resized to `image_size` with
    antialiased bilinear resampling (skipped when the size already matches).

    Args:
      feature: the image feature's spec (`image_size`, `channels`).
      encoded_bytes: a scalar string tensor holding one encoded image.

    Returns:
      A uint8 tensor of shape `feature.shape` (height, width, channels).

    Raises:
      tf.errors.InvalidArgumentError: if the bytes are not one of the four
        formats (the message names the feature) or are corrupt (the failing
        node is `decode_<feature>/...`).

    Example:
      >>> decode_image(feature, tf.io.read_file("cat.png")).shape
      TensorShape([64, 64, 3])
    """
    height, width, channels = feature.shape
    with tf.name_scope(f"decode_{feature.name}"):
        encoded_bytes = tf.convert_to_tensor(encoded_bytes, tf.string)
        known = tf.reduce_any([
            tf.equal(tf.strings.substr(encoded_bytes, 0, len(magic)), magic)
            for magic in IMAGE_SIGNATURES.values()
        ])
        message = (
            f"Feature `{feature.name}`: the bytes are not a PNG, JPEG, GIF or BMP image "
            "(empty, corrupt, or another format). Convert the file to PNG or JPEG."
        )
        check = tf.debugging.Assert(known, [message])
        with tf.control_dependencies([check]):
            # channels=3 works for all four formats (GIF and BMP refuse 1).
            image = tf.io.decode_image(encoded_bytes, channels=3, expand_animations=False)
        image = tf.cast(image, tf.float32)
        if channels == 1:
            image = tf.image.rgb_to_grayscale(image)
        same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], [height, width]))
        image = tf.cond(
            same_size,
            lambda: image,
            lambda: tf.image.resize(image, (height, width), method="bilinear", antialias=True),
        )
        image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
        return tf.ensure_shape(image, feature.shape)


def decode_audio(feature: FeatureSpec, wav_bytes: tf.Tensor) -> tf.Tensor:
    """Decode 16-bit PCM WAV bytes into a mono float32 clip of the spec's length.

    Channels are averaged to mono. The file's sample rate must equal the
    feature's `sample_rate` unless the feature sets `resample: true`; then the
    clip is resampled in the graph by linear interpolation, after a 65-tap
    Hann-windowed sinc low-pass when downsampling (so tones above the new
    Nyquist frequency do not alias). That is good enough for spectrogram
    features of speech and everyday sounds; for studio quality resample the
    files offline. Finally the clip is cropped, or padded with zeros (silence
    at the end), to `feature.num_samples`.

    Args:
      feature: the audio feature's spec (`sample_rate`, `clip_seconds`,
        `resample`).
      wav_bytes: a scalar string tensor holding one WAV file.

    Returns:
      A float32 tensor of shape (feature.num_samples,), values in [-1, 1].

    Raises:
      tf.errors.InvalidArgumentError: if the bytes are not a WAV file, are
        truncated, or (with `resample: false`) have another sample rate; the
        message names the feature, the rates and the fix.

    Example:
      >>> decode_audio(feature, tf.io.read_file("dog.wav")).shape
      TensorShape([16000])
    """
    num_samples = feature.num_samples
    expected_rate = int(feature.options["sample_rate"])
    with tf.name_scope(f"decode_{feature.name}"):
        wav_bytes = tf.convert_to_tensor(wav_bytes, tf.string)
        # Pad the first 12 bytes so that a short input fails the check, not `substr`.
        header = tf.strings.join([tf.strings.substr(wav_bytes, 0, 12), b"\0" * 12])
        is_wav = tf.logical_and(
            tf.equal(tf.strings.substr(header, 0, 4), b"RIFF"), tf.equal(tf.strings.substr(header, 8, 4), b"WAVE")
        )
        message = (
            f"Feature `{feature.name}`: the bytes are not a WAV file (no RIFF/WAVE header). "
            "Convert the recording to 16-bit PCM WAV."
        )
        check = tf.debugging.Assert(is_wav, [message])
        with tf.control_dependencies([check]):
            audio, rate = tf.audio.decode_wav(wav_bytes)
        waveform = tf.reduce_mean(audio, axis=1)
        if feature.options.get("resample", False):
            waveform = tf.cond(
                tf.equal(rate, expected_rate),
                lambda: waveform,
                lambda: resample(waveform, rate, expected_rate, max_samples=num_samples),
            )
        else:
            message = tf.strings.format(
                f"Feature `{feature.name}`: the WAV sample rate is {{}} Hz but the spec expects "
                f"{expected_rate} Hz. Set `resample: true` on this feature in the spec, or resample the "
                f"files to {expected_rate} Hz.",
                [rate],
            )
            check = tf.debugging.Assert(tf.equal(rate, expected_rate), [message])
            with tf.control_dependencies([check]):
                waveform = tf.identity(waveform)
        waveform = waveform[:num_samples]
        waveform = tf.pad(waveform, [[0, num_samples - tf.shape(waveform)[0]]])
        return tf.ensure_shape(waveform, (num_samples,))


def resample(waveform: tf.Tensor, rate: tf.Tensor, target_rate: int, *, max_samples: int | None = None) -> tf.Tensor:
    """Resample a mono waveform from `rate` (a tensor) to `target_rate` Hz, in the graph.

    Linear interpolation; when downsampling, a Hann-windowed sinc low-pass at
    0.45 x the new rate runs first to limit aliasing. Only the samples needed
    for the first `max_samples` outputs are processed.

    Args:
      waveform: a float32 tensor of shape (samples,).
      rate: the waveform's sample rate (int scalar tensor).
      target_rate: the wanted sample rate in Hz.
      max_samples: compute at most this many output samples (None: all).

    Returns:
      A float32 tensor of shape (new_samples,).

    Example:
      >>> resample(tf.zeros(16000), tf.constant(16000), 8000).shape
      TensorShape([8000])
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    ratio = float(target_rate) / tf.cast(rate, tf.float32)  # output samples per input sample
    if max_samples is not None:
        needed = tf.cast(tf.math.ceil(max_samples / ratio), tf.int32) + RESAMPLE_HALF_TAPS + 2
        waveform = waveform[:needed]

    def low_pass():
        offsets = tf.range(-RESAMPLE_HALF_TAPS, RESAMPLE_HALF_TAPS + 1, dtype=tf.float32)
        cutoff = 0.45 * ratio  # cycles per input sample; the new Nyquist is 0.5 * ratio
        argument = 2.0 * cutoff * offsets
        at_zero = tf.equal(argument, 0.0)
        safe = tf.where(at_zero, tf.ones_like(argument), argument) * math.pi
        sinc = tf.where(at_zero, tf.ones_like(argument), tf.sin(safe) / safe)
        window = tf.signal.hann_window(2 * RESAMPLE_HALF_TAPS + 3, periodic=False)[1:-1]
        kernel = sinc * window
        kernel = kernel / tf.reduce_sum(kernel)
        filtered = tf.nn.conv1d(waveform[None, :, None], kernel[:, None, None], stride=1, padding="SAME")
        return filtered[0, :, 0]

    waveform = tf.cond(ratio < 1.0, low_pass, lambda: waveform)
    num_in = tf.shape(waveform)[0]
    num_out = tf.cast(tf.math.ceil(tf.cast(num_in, tf.float32) * ratio), tf.int32)
    if max_samples is not None:
        num_out = tf.minimum(num_out, max_samples)

    def interpolate():
        positions = tf.range(num_out, dtype=tf.float32) / ratio
        lower = tf.minimum(tf.cast(tf.floor(positions), tf.int32), num_in - 1)
        upper = tf.minimum(lower + 1, num_in - 1)
        fraction = positions - tf.cast(lower, tf.float32)
        return tf.gather(waveform, lower) * (1.0 - fraction) + tf.gather(waveform, upper) * fraction

    return tf.cond(num_in > 0, interpolate, lambda: tf.zeros([0], tf.float32))


# Modality -> decoder of one example's raw value.
DECODERS: Mapping[str, Callable[[FeatureSpec, tf.Tensor], tf.Tensor]] = {
    "text": decode_text,
    "image": decode_image,
    "audio": decode_audio,
}


def missing_value(feature: FeatureSpec) -> tf.Tensor:
    """The tensor a missing modality decodes to: zeros of the right shape and dtype ("" for text)."""
    if feature.modality == "text":
        return tf.constant("", tf.string)
    return tf.zeros(feature.shape, tf.as_dtype(feature.dtype))


def decode_feature(feature: FeatureSpec, value: tf.Tensor, present: tf.Tensor) -> tf.Tensor:
    """Decode one example's raw value, or return `missing_value` where `present` is False.

    The per-example step that both the tf.data pipeline (`make_example_decoder`)
    and the serving signatures (`decode_batch`) run, so a missing modality
    decodes to the same zeros (or "") in training and serving.

    Args:
      feature: the feature's spec.
      value: a scalar string tensor (text, or encoded file bytes).
      present: a scalar bool tensor; when False `value` is not looked at.

    Returns:
      A tensor of shape `feature.shape` and dtype `feature.dtype`.

    Raises:
      KeyError: if `feature.modality` has no decoder in `DECODERS`.
      tf.errors.InvalidArgumentError: if `present` is True and the image or
        audio decoder refuses `value` (see `decode_image`, `decode_audio`).

    Example:
      >>> decode_feature(feature, tf.constant(b""), tf.constant(False)).shape
      TensorShape([16, 16, 3])
    """
    decoder = DECODERS[feature.modality]
    if feature.modality == "text":
        # Elementwise and cannot fail: no branch needed.
        return tf.where(present, decoder(feature, value), missing_value(feature))
    return tf.cond(present, lambda: decoder(feature, value), lambda: missing_value(feature))


def make_example_decoder(spec: DatasetSpec) -> Callable:
    """Return the function that turns one raw record into model inputs and a label.

    The pipeline maps it over `read_split`'s records; the serving export uses
    the same `decode_feature` calls through `decode_batch`.

    Args:
      spec: the dataset spec.

    Returns:
      `decode(raw, label) -> (features, label)` where `raw` maps each feature
      name to a scalar string and `"<name>_present"` to a scalar bool, and
      `features` maps each feature name to its decoded tensor and
      `"<name>_present"` to the same bool. The label passes through as int32.

    Example:
      >>> decode = make_example_decoder(spec)
      >>> features, label = decode(raw, label)
      >>> features["picture"].dtype
      tf.uint8
    """
    def decode(raw, label):
        features = {}
        for feature in spec.features:
            present = tf.convert_to_tensor(raw[feature.presence_key], tf.bool)
            features[feature.name] = decode_feature(feature, raw[feature.name], present)
            features[feature.presence_key] = present
        return features, tf.cast(label, tf.int32)

    return decode


def decode_batch(spec: DatasetSpec, raw: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Decode a batch of raw values, as a serving signature receives them.

    Text is decoded elementwise; images and audio go through `tf.map_fn` over
    the per-example `decode_feature`, so the batch is decoded by exactly the
    functions the training pipeline used.

    Args:
      spec: the dataset spec.
      raw: feature name -> (batch,) string tensor (text, or encoded bytes).
        `"<name>_present"` -> (batch,) bool tensor is optional; when left out,
        an empty string means the modality is missing.

    Returns:
      Feature name -> (batch, *feature.shape) tensor, and `"<name>_present"`
      -> (batch,) bool tensor, for every feature of the spec.

    Raises:
      ValueError: if `raw` lacks a feature of the spec.

    Example:
      >>> decode_batch(spec, {"caption": ["a red ball"], "picture": [png], "sound": [""]})["sound_present"]
      <tf.Tensor: shape=(1,), dtype=bool, numpy=array([False])>
    """
    missing = [f.name for f in spec.features if f.name not in raw]
    if missing:
        raise ValueError(f"decode_batch got no values for features {missing}; expected keys {list(spec.feature_names)}.")
    decoded = {}
    for feature in spec.features:
        values = tf.convert_to_tensor(raw[feature.name], tf.string)
        if feature.presence_key in raw:
            present = tf.convert_to_tensor(raw[feature.presence_key], tf.bool)
        else:
            present = tf.strings.length(values) > 0
        if feature.modality == "text":
            decoded[feature.name] = decode_feature(feature, values, present)
        else:
            decoded[feature.name] = tf.map_fn(
                lambda args, feature=feature: decode_feature(feature, args[0], args[1]),
                (values, present),
                fn_output_signature=tf.TensorSpec(feature.shape, tf.as_dtype(feature.dtype)),
            )
        decoded[feature.presence_key] = present
    return decoded
