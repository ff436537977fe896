"""Decoders on real bytes encoded in the test: images, WAVs, text, missing values, the batched path."""
from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from fresh_process import run_fresh  # tests/ helper

from mmkeras.data import decoders
from mmkeras.spec import spec_from_dict


def make_spec(**audio):
    return spec_from_dict({
        "name": "decoders",
        "label": {"column": "label", "class_names": ["a", "b"]},
        "features": [
            {"name": "caption", "modality": "text"},
            {"name": "picture", "modality": "image", "image_size": [6, 4], "channels": 3},
            {"name": "grey", "modality": "image", "image_size": [6, 4], "channels": 1},
            {"name": "sound", "modality": "audio", "sample_rate": 8000, "clip_seconds": 0.05, **audio},
        ],
        "splits": {"train": "manifest.csv"},
    })


SPEC = make_spec()
PIXELS = np.random.default_rng(0).integers(0, 256, (6, 4, 3)).astype(np.uint8)


def sine(rate, seconds, frequency=440.0):
    return (0.5 * np.sin(2 * np.pi * frequency * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def wav_bytes(waveform, rate):
    waveform = np.asarray(waveform, np.float32)
    return tf.audio.encode_wav(waveform if waveform.ndim == 2 else waveform[:, None], rate)


def test_png_decodes_exactly_at_the_spec_size():
    decoded = decoders.decode_image(SPEC.feature("picture"), tf.io.encode_png(PIXELS))
    assert decoded.dtype == tf.uint8 and decoded.shape == (6, 4, 3)
    np.testing.assert_array_equal(decoded.numpy(), PIXELS)


def test_jpeg_decodes_close_to_its_pixels_and_resizes():
    flat = np.full((12, 8, 3), (30, 120, 220), np.uint8)
    decoded = decoders.decode_image(SPEC.feature("picture"), tf.io.encode_jpeg(flat, quality=95))
    assert decoded.shape == (6, 4, 3)
    np.testing.assert_allclose(decoded.numpy().reshape(-1, 3).mean(0), (30, 120, 220), atol=4)


@pytest.mark.parametrize("fmt", ["GIF", "BMP"])
def test_gif_and_bmp_decode(fmt):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 4, 3), (0, 255, 0), np.uint8)).save(buffer, format=fmt)
    decoded = decoders.decode_image(SPEC.feature("picture"), buffer.getvalue()).numpy()
    np.testing.assert_allclose(decoded.reshape(-1, 3).mean(0), (0, 255, 0), atol=2)


def test_one_channel_spec_turns_rgb_into_grey():
    decoded = decoders.decode_image(SPEC.feature("grey"), tf.io.encode_png(PIXELS)).numpy()
    expected = np.round(PIXELS.astype(np.float32) @ np.array([0.2989, 0.587, 0.114], np.float32))
    assert decoded.shape == (6, 4, 1)
    np.testing.assert_allclose(decoded[..., 0], expected, atol=1)


def test_grey_values_are_those_of_tensorflows_rgb_to_grayscale():
    images = tf.constant(np.random.default_rng(1).integers(0, 256, (8, 16, 16, 3)).astype(np.float32))
    np.testing.assert_array_equal(decoders.rgb_to_grayscale(images).numpy(),
                                  tf.image.rgb_to_grayscale(images).numpy())


def test_decoding_grey_images_in_a_pipeline_logs_no_error():
    # tf.image.rgb_to_grayscale's tensordot made oneDNN log "E... oneDNN supports DT_UINT8 only on platforms with
    # AVX-512" in every run of a grayscale spec (avmnist): an alarming line about nothing. A fresh process, as
    # TensorFlow logs it once per process.
    code = (
        "import numpy as np, tensorflow as tf\n"
        "from mmkeras.data import decoders\n"
        "from mmkeras.spec import spec_from_dict\n"
        "spec = spec_from_dict({'name': 'grey', 'label': {'column': 'label', 'class_names': ['a', 'b']},\n"
        "    'features': [{'name': 'grey', 'modality': 'image', 'image_size': [6, 4], 'channels': 1}],\n"
        "    'splits': {'train': 'manifest.csv'}})\n"
        "png = tf.io.encode_png(np.random.default_rng(0).integers(0, 256, (6, 4, 3)).astype(np.uint8))\n"
        "data = tf.data.Dataset.from_tensors(png).repeat(3)\n"
        "print(sum(1 for _ in data.map(lambda b: decoders.decode_image(spec.feature('grey'), b))))\n"
    )
    result = run_fresh(code)
    assert result.stdout.strip() == "3"
    assert "oneDNN supports" not in result.stderr


def test_image_garbage_and_truncated_bytes_fail_naming_the_feature():
    with pytest.raises(tf.errors.InvalidArgumentError, match="picture"):
        decoders.decode_image(SPEC.feature("picture"), b"not an image at all")
    truncated = tf.io.encode_png(PIXELS).numpy()[:40]
    picture = SPEC.feature("picture")  # outside the traced function: autograph must not convert spec methods
    decode = tf.function(lambda data: decoders.decode_image(picture, data))
    with pytest.raises(tf.errors.InvalidArgumentError, match="decode_picture"):
        decode(tf.constant(truncated))


def test_wav_decodes_to_the_clip_and_pads_with_zeros():
    feature = SPEC.feature("sound")  # 400 samples
    waveform = sine(8000, 0.03)  # 240 samples
    decoded = decoders.decode_audio(feature, wav_bytes(waveform, 8000)).numpy()
    assert decoded.dtype == np.float32 and decoded.shape == (400,)
    np.testing.assert_allclose(decoded[:240], waveform, atol=1 / 16000)
    assert not decoded[240:].any()


def test_long_wav_is_cropped():
    waveform = sine(8000, 0.2)
    decoded = decoders.decode_audio(SPEC.feature("sound"), wav_bytes(waveform, 8000)).numpy()
    np.testing.assert_allclose(decoded, waveform[:400], atol=1 / 16000)


def test_stereo_wav_becomes_the_channel_mean():
    left, right = sine(8000, 0.05), sine(8000, 0.05, frequency=1000.0)
    decoded = decoders.decode_audio(SPEC.feature("sound"), wav_bytes(np.stack([left, right], 1), 8000)).numpy()
    np.testing.assert_allclose(decoded, (left + right) / 2, atol=1 / 16000)


def test_wrong_sample_rate_fails_naming_feature_rates_and_fix():
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        decoders.decode_audio(SPEC.feature("sound"), wav_bytes(sine(16000, 0.05), 16000))
    for words in ("`sound`", "16000 Hz", "8000 Hz", "resample: true"):
        assert words in error.value.message


# Linear interpolation between 4 kHz samples of a 440 Hz tone is off by up to ~3%.
@pytest.mark.parametrize(("source_rate", "tolerance"), [(16000, 0.02), (4000, 0.04)])
def test_resample_true_converts_the_rate(source_rate, tolerance):
    feature = make_spec(resample=True).feature("sound")
    decoded = decoders.decode_audio(feature, wav_bytes(sine(source_rate, 0.1), source_rate)).numpy()
    expected = sine(8000, 0.05)
    assert decoded.shape == (400,)
    # Away from the clip's start (where the low-pass sees zeros), the tone is reproduced closely.
    np.testing.assert_allclose(decoded[40:], expected[40:], atol=tolerance)


def test_wav_garbage_and_truncation_fail_naming_the_feature():
    sound = SPEC.feature("sound")  # outside the traced function: autograph must not convert spec methods
    decode = tf.function(lambda data: decoders.decode_audio(sound, data))
    with pytest.raises(tf.errors.InvalidArgumentError, match="sound"):
        decode(tf.constant(b"RIFF? no, just garbage"))
    truncated = wav_bytes(sine(8000, 0.05), 8000).numpy()[:30]
    with pytest.raises(tf.errors.InvalidArgumentError, match="decode_sound"):
        decode(tf.constant(truncated))


def test_text_is_kept_and_invalid_utf8_replaced():
    feature = SPEC.feature("caption")
    assert decoders.decode_text(feature, "a red ball").numpy() == b"a red ball"
    assert decoders.decode_text(feature, b"caf\xff").numpy() == "caf\ufffd".encode()


def test_missing_values_decode_to_zeros_without_reading_the_bytes():
    absent = tf.constant(False)
    for feature in SPEC.features:
        value = decoders.decode_feature(feature, tf.constant(b"garbage"), absent).numpy()
        if feature.modality == "text":
            assert value == b""
        else:
            assert value.shape == feature.shape and value.dtype == feature.dtype and not value.any()


def test_batched_serving_decode_equals_the_per_example_decoder():
    png, wav = tf.io.encode_png(PIXELS).numpy(), wav_bytes(sine(8000, 0.05), 8000).numpy()
    raw = {"caption": [b"a red ball", b""], "picture": [png, png], "grey": [b"", png], "sound": [wav, b""]}
    serve = tf.function(
        lambda batch: decoders.decode_batch(SPEC, batch),
        input_signature=[{name: tf.TensorSpec([None], tf.string) for name in raw}],
    )
    batched = serve({name: tf.constant(values) for name, values in raw.items()})
    decode = decoders.make_example_decoder(SPEC)
    for index in range(2):
        example = {name: values[index] for name, values in raw.items()}
        example.update({f"{name}_present": len(values[index]) > 0 for name, values in raw.items()})
        features, label = decode(example, 1)
        assert label.dtype == tf.int32
        for key, value in features.items():
            np.testing.assert_array_equal(batched[key][index].numpy(), value.numpy(), err_msg=key)
    assert batched["picture"].shape == (2, 6, 4, 3) and batched["sound"].shape == (2, 400)
    assert batched["sound_present"].numpy().tolist() == [True, False]
