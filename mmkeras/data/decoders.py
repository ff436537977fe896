"""Decoders: pure TF functions from raw values (strings, file bytes) to model tensors.

A decoder is written once. The tf.data pipeline maps these functions over raw
records and the exported serving signature runs the very same functions on the
raw strings of a request, so training and serving cannot drift apart.

Every function here is graph-safe (no Python control flow on tensor values), so
it runs eagerly, inside `Dataset.map`, inside a `tf.function`, and under
`tf.map_fn` (see `decode_batch`), and is traced as written: the functions
handed to `Dataset.map` are marked `do_not_convert`, because autograph's
source-to-source conversion of these decoders took about 2 s of the first
`make_dataset` call on avmnist, for nothing to convert. Errors are `tf.errors.InvalidArgumentError`s
whose messages (or failing node names, `decode_<feature>/...`) name the
feature, so a serving request with a broken input says which input is broken.

Decoding is bounded: before anything is decoded, the size an input declares
(an image header's width and height, a WAV header's data size and sample
rate, a text's length in bytes) is read with string ops and refused beyond
the feature's limit (`max_image_pixels`, `max_audio_seconds`,
`max_text_bytes`; see `mmkeras.spec.LIMIT_OPTIONS`). A 388 KB PNG that
declares 20000 x 20000 pixels is refused from its first 24 bytes instead of
being decoded to 1.2 GB.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import tensorflow as tf

from mmkeras.spec import DatasetSpec, FeatureSpec

# Weights of R, G and B in an image's grayscale value, those of `tf.image.rgb_to_grayscale` (ITU-R BT.601).
LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)
# Leading bytes of the image formats `tf.io.decode_image` understands.
IMAGE_SIGNATURES = {
    "PNG": b"\x89PNG\r\n\x1a\n",
    "JPEG": b"\xff\xd8\xff",
    "GIF": b"GIF8",
    "BMP": b"BM",
}
# Half-length of the windowed-sinc low-pass run before downsampling audio.
RESAMPLE_HALF_TAPS = 32
# Bytes of an image header that hold its size in all four formats (BMP's height ends at 26).
IMAGE_HEADER_BYTES = 32
# GIF: where the blocks after the logical screen start (before the global colour
# table), how many blocks and sub-blocks the walk to the first image descriptor
# reads (extensions before it are a few in real files; 1024 allow 256 KB of
# metadata), and the size a GIF whose first frame lies past them counts as
# declaring: the largest a GIF can (so it is refused).
GIF_SCREEN_END = 13
MAX_GIF_BLOCKS = 1024
GIF_UNREACHED_SIZE = (65535, 65535)
# Where the WAV chunk walk starts (after "RIFF", the RIFF size and "WAVE"), the
# canonical header's length, and how many chunks it reads looking for "data".
# Past that many chunks the bytes after the walk bound the data size instead:
# `tf.audio.decode_wav` refuses a data chunk longer than the bytes it has.
WAV_FIRST_CHUNK = 12
WAV_HEADER_BYTES = 44
MAX_WAV_CHUNKS = 16


def decode_text(feature: FeatureSpec, value: tf.Tensor, *, check_limit: bool = True) -> tf.Tensor:
    """Return the text as a valid UTF-8 string tensor, refusing texts over `max_text_bytes`.

    Tokenisation happens in the model (its `TextVectorization` layer), so the
    decoder only guarantees valid UTF-8 (invalid byte sequences become U+FFFD
    instead of failing the whole batch) and a bounded length: the model reads
    only its first `sequence_length` tokens, and a 10 MB string would cost
    the server tens of MB for nothing.

    Args:
      feature: the text feature's spec (`max_text_bytes`).
      value: a string tensor of any shape (a scalar per example, or a batch).
      check_limit: refuse texts over `max_text_bytes`; False only for texts
        already checked (see `make_example_decoder`).

    Returns:
      A string tensor of the same shape.

    Raises:
      tf.errors.InvalidArgumentError: if a text is longer than `max_text_bytes`
        bytes; the message names the feature, the length and the option.

    Example:
      >>> decode_text(feature, tf.constant("a red ball")).numpy()
      b'a red ball'
    """
    limit = int(feature.options["max_text_bytes"])
    with tf.name_scope(f"decode_{feature.name}"):
        value = tf.convert_to_tensor(value, tf.string)
        # int64: a limit past 2**31 (set to turn the check off) must not wrap around in int32.
        lengths = tf.cast(tf.reshape(tf.strings.length(value), [-1]), tf.int64)
        longest = tf.reduce_max(tf.concat([lengths, tf.zeros([1], tf.int64)], axis=0))
        message = tf.strings.format(
            f"Feature `{feature.name}`: a text of {{}} bytes is longer than max_text_bytes = {limit} for this "
            f"feature (the model reads its first {feature.options['sequence_length']} tokens). Shorten the text "
            "before sending it, or raise `max_text_bytes` for this feature in the spec.",
            [longest],
        )
        check = tf.debugging.Assert(longest <= limit, [message]) if check_limit else tf.no_op()
        with tf.control_dependencies([check]):
            return tf.strings.unicode_transcode(value, "UTF-8", "UTF-8", errors="replace")


def _read_uint(data: tf.Tensor, offset, size: int, *, big_endian: bool = False) -> tf.Tensor:
    """The unsigned integer of `size` bytes at `offset` of a scalar string, as int64 (the bytes must exist)."""
    digits = tf.cast(tf.io.decode_raw(tf.strings.substr(data, offset, size), tf.uint8), tf.int64)
    weights = [256**i for i in range(size)]
    return tf.reduce_sum(digits * tf.constant(weights[::-1] if big_endian else weights, tf.int64))


def _fixed_prefix(data: tf.Tensor, length: int) -> tf.Tensor:
    """The first `length` bytes of a scalar string, zero-padded if it is shorter (so header reads never fail)."""
    return tf.strings.substr(tf.strings.join([tf.strings.substr(data, 0, length), b"\0" * length]), 0, length)


def declared_image_size(encoded_bytes: tf.Tensor) -> tf.Tensor:
    """The (height, width) an encoded image's header declares, read without decoding it.

    PNG: the IHDR chunk; JPEG: the SOF marker, via `tf.image.extract_jpeg_shape`
    (headers only); GIF: the logical screen (the canvas `tf.io.decode_image`
    allocates) or the first frame's image descriptor, whichever declares more
    pixels (see `declared_gif_frame_size`); BMP: the info header (as
    TensorFlow's BMP decoder reads it). Graph-safe string ops only, so it runs
    in tf.data and in serving graphs. Only a GIF's first frame is read: giflib
    reads every frame at its declared size before TensorFlow crops it to the
    canvas, so serve animated GIFs only from trusted sources (or convert them
    to PNG).

    Args:
      encoded_bytes: a scalar string tensor.

    Returns:
      An int64 tensor `[height, width]`; `[0, 0]` if the bytes are none of the
      four formats. A JPEG whose header is corrupt fails here, as it would in
      the decoder.

    Example:
      >>> declared_image_size(tf.io.encode_png(tf.zeros((20, 30, 3), tf.uint8))).numpy()
      array([20, 30])
    """
    encoded_bytes = tf.convert_to_tensor(encoded_bytes, tf.string)
    header = _fixed_prefix(encoded_bytes, IMAGE_HEADER_BYTES)
    matches = [tf.equal(tf.strings.substr(header, 0, len(magic)), magic) for magic in IMAGE_SIGNATURES.values()]
    # The first matching format (argmax takes the first maximum); the last index is "none".
    index = tf.argmax(tf.cast(tf.stack([*matches, tf.constant(True)]), tf.int32), output_type=tf.int32)

    def png():
        return tf.stack([_read_uint(header, 20, 4, big_endian=True), _read_uint(header, 16, 4, big_endian=True)])

    def jpeg():
        return tf.cast(tf.image.extract_jpeg_shape(encoded_bytes)[:2], tf.int64)

    def gif():
        canvas = tf.stack([_read_uint(header, 8, 2), _read_uint(header, 6, 2)])
        frame = declared_gif_frame_size(encoded_bytes)
        return tf.where(frame[0] * frame[1] > canvas[0] * canvas[1], frame, canvas)

    def bmp():
        # Signed 32-bit (a negative height means top-down rows); the size is the absolute value.
        signed = tf.stack([_read_uint(header, 22, 4), _read_uint(header, 18, 4)])
        return tf.abs(tf.where(signed >= 2**31, signed - 2**32, signed))

    def unknown():
        return tf.zeros([2], tf.int64)

    branches = {"PNG": png, "JPEG": jpeg, "GIF": gif, "BMP": bmp}
    return tf.switch_case(index, [branches[name] for name in IMAGE_SIGNATURES] + [unknown])


# A graph even when called eagerly: the walk is a loop of small ops, 2 s eager for 1024 blocks, 30 ms as a graph.
@tf.function(input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
def declared_gif_frame_size(gif_bytes: tf.Tensor) -> tf.Tensor:
    """The (height, width) a GIF's first image descriptor declares, read without decoding it.

    A frame may declare more than the GIF's logical screen, and giflib
    allocates and decodes it at that size before TensorFlow crops it, so a
    small canvas does not bound the memory. The walk skips the global colour
    table and the extension blocks (graphic control, application, comment:
    each a label and then sub-blocks) up to the first image descriptor (0x2C),
    one byte read per block or sub-block, at most `MAX_GIF_BLOCKS` of them.

    Args:
      gif_bytes: a scalar string tensor holding a GIF.

    Returns:
      An int64 tensor `[height, width]`; `[0, 0]` if the bytes end or hold
      something else (the trailer, garbage) before a descriptor (the decoder
      then reports them as corrupt); `GIF_UNREACHED_SIZE` if the descriptor
      lies past `MAX_GIF_BLOCKS` blocks, so that such a GIF is refused.

    Example:
      >>> declared_gif_frame_size(tf.io.read_file("spinner.gif")).numpy()
      array([32, 32])
    """
    length = tf.cast(tf.strings.length(gif_bytes), tf.int64)
    packed = _read_uint(_fixed_prefix(gif_bytes, GIF_SCREEN_END), 10, 1)
    # The global colour table (flag 0x80) holds 3 * 2**(N + 1) bytes, N the packed field's low 3 bits.
    table = tf.where(packed >= 128, 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), packed % 8), 0)

    def walking(offset, in_sub_blocks, stopped, found):
        return tf.logical_and(tf.logical_not(stopped), offset < length)

    def next_block(offset, in_sub_blocks, stopped, found):
        byte = _read_uint(gif_bytes, offset, 1)
        # In sub-blocks the byte is the next one's size (0 ends them); at a block it is the introducer.
        is_image = tf.logical_and(tf.logical_not(in_sub_blocks), tf.equal(byte, 0x2C))
        is_extension = tf.logical_and(tf.logical_not(in_sub_blocks), tf.equal(byte, 0x21))
        offset = tf.where(in_sub_blocks, offset + 1 + byte, tf.where(is_extension, offset + 2, offset))
        stops = tf.logical_and(tf.logical_not(in_sub_blocks), tf.logical_not(is_extension))
        in_sub_blocks = tf.where(in_sub_blocks, byte > 0, is_extension)
        return offset, in_sub_blocks, stops, is_image

    offset, _, stopped, found = tf.while_loop(
        walking,
        next_block,
        (GIF_SCREEN_END + table, tf.constant(False), tf.constant(False), tf.constant(False)),
        maximum_iterations=MAX_GIF_BLOCKS,
    )
    # The descriptor: 0x2C, left, top, width, height (2 bytes each, little-endian), flags.
    descriptor = tf.strings.substr(
        tf.strings.join([tf.strings.substr(gif_bytes, tf.minimum(offset, length), 10), b"\0" * 10]), 0, 10
    )
    frame = tf.stack([_read_uint(descriptor, 7, 2), _read_uint(descriptor, 5, 2)])
    unreached = tf.logical_and(tf.logical_not(stopped), offset < length)
    missing = tf.where(unreached, tf.constant(GIF_UNREACHED_SIZE, tf.int64), tf.zeros([2], tf.int64))
    return tf.where(found, frame, missing)


def check_image_size(feature: FeatureSpec, encoded_bytes: tf.Tensor) -> tf.Operation:
    """An assertion that the image's declared size is within the feature's `max_image_pixels`.

    Args:
      feature: the image feature's spec.
      encoded_bytes: a scalar string tensor holding one encoded image.

    Returns:
      The assertion op (in eager mode it has already run).

    Raises:
      tf.errors.InvalidArgumentError: (when run) naming the feature, the
        declared height x width, the limit and the option to raise.
    """
    limit = int(feature.options["max_image_pixels"])
    height, width = feature.shape[:2]
    size = declared_image_size(encoded_bytes)
    pixels = tf.cast(size[0], tf.float64) * tf.cast(size[1], tf.float64)
    message = tf.strings.format(
        f"Feature `{feature.name}`: the image declares {{}} x {{}} pixels (height x width), more than "
        f"max_image_pixels = {limit} for this feature (the model uses {height} x {width}). Resize the image "
        "before sending it, or raise `max_image_pixels` for this feature in the spec.",
        [size[0], size[1]],
    )
    return tf.debugging.Assert(pixels <= limit, [message])


def decode_image(feature: FeatureSpec, encoded_bytes: tf.Tensor, *, check_limit: bool = True) -> tf.Tensor:
    """Decode PNG, JPEG, GIF or BMP bytes into the spec's image shape, as uint8.

    The size the header declares is checked against `max_image_pixels` before
    anything is decoded (see `check_image_size`). The image is decoded to RGB (alpha dropped, grey replicated; a GIF keeps
    its first frame), turned to grey with `tf.image.rgb_to_grayscale` weights
    when the spec asks for 1 channel, and resized to `image_size` with
    antialiased bilinear resampling (skipped when the size already matches).

    Args:
      feature: the image feature's spec (`image_size`, `channels`).
      encoded_bytes: a scalar string tensor holding one encoded image.
      check_limit: read the declared size first and refuse it beyond
        `max_image_pixels`; False only for images already checked (see
        `make_example_decoder`).

    Returns:
      A uint8 tensor of shape `feature.shape` (height, width, channels).

    Raises:
      tf.errors.InvalidArgumentError: if the bytes are not one of the four
        formats or declare more than `max_image_pixels` pixels (the message
        names the feature), or are corrupt (the failing node is
        `decode_<feature>/...`).

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
            size_check = check_image_size(feature, encoded_bytes) if check_limit else tf.no_op()
        with tf.control_dependencies([size_check]):
            # channels=3 works for all four formats (GIF and BMP refuse 1).
            image = tf.io.decode_image(encoded_bytes, channels=3, expand_animations=False)
        image = tf.cast(image, tf.float32)
        if channels == 1:
            image = rgb_to_grayscale(image)
        same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], [height, width]))
        image = tf.cond(
            same_size,
            lambda: image,
            lambda: tf.image.resize(image, (height, width), method="bilinear", antialias=True),
        )
        image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
        return tf.ensure_shape(image, feature.shape)


def rgb_to_grayscale(image: tf.Tensor) -> tf.Tensor:
    """`tf.image.rgb_to_grayscale` of a float image (same luma weights), as an element-wise weighted sum.

    TensorFlow's version is a `tensordot`, whose graph makes oneDNN log an
    ERROR-level line ("oneDNN supports DT_UINT8 only on platforms with
    AVX-512") in every process that decodes a grayscale image, though
    nothing is wrong; this one gives the same values without it.

    Example:
      >>> rgb_to_grayscale(tf.constant([[[100.0, 100.0, 100.0]]])).numpy().round(2)
      array([[[99.99]]], dtype=float32)
    """
    return tf.reduce_sum(image * tf.constant(LUMA_WEIGHTS, image.dtype), axis=-1, keepdims=True)


def declared_wav_size(wav_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The (data bytes, bytes per second) a WAV header declares, read without decoding it.

    Reads the `fmt ` chunk (channels, sample rate, bits per sample) and walks
    up to `MAX_WAV_CHUNKS` chunk headers for the `data` chunk's size, as
    `tf.audio.decode_wav` does; past that, the bytes left bound the data size.

    Args:
      wav_bytes: a scalar string tensor.

    Returns:
      `(data_bytes, bytes_per_second)`, int64 scalars; `bytes_per_second` is 0
      when the header has no usable `fmt ` chunk (then the decoder refuses the
      bytes anyway).

    Example:
      >>> declared_wav_size(tf.audio.encode_wav(tf.zeros((8000, 1)), 8000))
      (<tf.Tensor: ... numpy=16000>, <tf.Tensor: ... numpy=16000>)
    """
    wav_bytes = tf.convert_to_tensor(wav_bytes, tf.string)
    header = _fixed_prefix(wav_bytes, WAV_HEADER_BYTES)
    has_format = tf.equal(tf.strings.substr(header, WAV_FIRST_CHUNK, 4), b"fmt ")
    bytes_per_second = _read_uint(header, 22, 2) * _read_uint(header, 24, 4) * (_read_uint(header, 34, 2) // 8)
    bytes_per_second = tf.where(has_format, bytes_per_second, tf.zeros_like(bytes_per_second))
    length = tf.cast(tf.strings.length(wav_bytes), tf.int64)

    def searching(offset, found, size):
        return tf.logical_and(tf.logical_not(found), offset + 8 <= length)

    def next_chunk(offset, found, size):
        chunk_size = _read_uint(wav_bytes, offset + 4, 4)
        is_data = tf.equal(tf.strings.substr(wav_bytes, offset, 4), b"data")
        return tf.where(is_data, offset, offset + 8 + chunk_size), is_data, chunk_size

    offset, found, size = tf.while_loop(
        searching,
        next_chunk,
        (tf.constant(WAV_FIRST_CHUNK, tf.int64), tf.constant(False), tf.constant(0, tf.int64)),
        maximum_iterations=MAX_WAV_CHUNKS,
    )
    data_bytes = tf.where(found, size, tf.maximum(length - offset, 0))
    return data_bytes, bytes_per_second


def check_audio_length(feature: FeatureSpec, wav_bytes: tf.Tensor) -> tf.Operation:
    """An assertion that the recording's declared duration is within the feature's `max_audio_seconds`.

    Args:
      feature: the audio feature's spec.
      wav_bytes: a scalar string tensor holding one WAV file.

    Returns:
      The assertion op (in eager mode it has already run).

    Raises:
      tf.errors.InvalidArgumentError: (when run) naming the feature, the
        declared duration and sample rate, the limit and the option to raise.
    """
    limit = float(feature.options["max_audio_seconds"])
    data_bytes, bytes_per_second = declared_wav_size(wav_bytes)
    seconds = tf.cast(data_bytes, tf.float64) / tf.cast(tf.maximum(bytes_per_second, 1), tf.float64)
    seconds = tf.where(bytes_per_second > 0, seconds, tf.zeros_like(seconds))
    rate = _read_uint(_fixed_prefix(wav_bytes, WAV_HEADER_BYTES), 24, 4)
    message = tf.strings.join([
        f"Feature `{feature.name}`: the WAV declares ",
        tf.strings.as_string(seconds, precision=1),
        " s of audio (",
        tf.strings.as_string(data_bytes),
        " data bytes at ",
        tf.strings.as_string(rate),
        (
            f" Hz), more than max_audio_seconds = {limit:g} for this feature (the model uses the first "
            f"{float(feature.options['clip_seconds']):g} s). Crop the recording before sending it, or raise "
            "`max_audio_seconds` for this feature in the spec."
        ),
    ])
    return tf.debugging.Assert(seconds <= limit, [message])


def decode_audio(feature: FeatureSpec, wav_bytes: tf.Tensor, *, check_limit: bool = True) -> tf.Tensor:
    """Decode 16-bit PCM WAV bytes into a mono float32 clip of the spec's length.

    The duration the header declares is checked against `max_audio_seconds`
    before anything is decoded (see `check_audio_length`). Channels are
    averaged to mono. The file's sample rate must equal the
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
      check_limit: read the declared duration first and refuse it beyond
        `max_audio_seconds`; False only for recordings already checked (see
        `make_example_decoder`).

    Returns:
      A float32 tensor of shape (feature.num_samples,), values in [-1, 1].

    Raises:
      tf.errors.InvalidArgumentError: if the bytes are not a WAV file, declare
        more than `max_audio_seconds`, are truncated, or (with `resample:
        false`) have another sample rate; the message names the feature, the
        sizes or rates, and the fix.

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
            length_check = check_audio_length(feature, wav_bytes) if check_limit else tf.no_op()
        with tf.control_dependencies([length_check]):
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


# Modality -> decoder of one example's raw value; each takes `check_limit=` (see `make_example_decoder`).
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


def decode_feature(
    feature: FeatureSpec, value: tf.Tensor, present: tf.Tensor, *, check_limit: bool = True
) -> tf.Tensor:
    """Decode one example's raw value, or return `missing_value` where `present` is False.

    The per-example step that both the tf.data pipeline (`make_example_decoder`)
    and the serving signatures (`decode_batch`) run, so a missing modality
    decodes to the same zeros (or "") in training and serving.

    Args:
      feature: the feature's spec.
      value: a scalar string tensor (text, or encoded file bytes).
      present: a scalar bool tensor; when False `value` is not looked at.
      check_limit: refuse a value beyond the feature's size limit before
        decoding it; False only for values already checked (see
        `make_example_decoder`).

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
        # Elementwise: no branch needed; an ignored value becomes "" so that its length is not checked.
        return decoder(feature, tf.where(present, value, missing_value(feature)), check_limit=check_limit)
    return tf.cond(present, lambda: decoder(feature, value, check_limit=check_limit), lambda: missing_value(feature))


def make_example_decoder(spec: DatasetSpec, *, check_limits: bool = True) -> Callable:
    """Return the function that turns one raw record into model inputs and a label.

    The pipeline maps it over `read_split`'s records; the serving export uses
    the same `decode_feature` calls through `decode_batch`.

    With `check_limits=False` the decoders do not read each image's and
    recording's declared size (nor measure each text) before decoding it.
    The training pipeline does that for a split that the bad-input scan
    (`mmkeras.data.scan`) has already decoded with the checks on: the scan
    refused or skipped every example over a limit, for this version of the
    files (its cache is keyed by each file's size and modification time), and
    on avmnist the header reads were half of an example's decoding (0.55
    -> 0.28 ms on one core). The scan and the serving signatures always check.

    Args:
      spec: the dataset spec.
      check_limits: refuse values beyond their feature's size limit
        (`max_image_pixels`, `max_audio_seconds`, `max_text_bytes`) before
        decoding them; False only for examples already checked.

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
    @tf.autograph.experimental.do_not_convert  # graph-safe: no autograph (see the module docstring)
    def decode(raw, label):
        features = {}
        for feature in spec.features:
            present = tf.convert_to_tensor(raw[feature.presence_key], tf.bool)
            features[feature.name] = decode_feature(feature, raw[feature.name], present, check_limit=check_limits)
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
