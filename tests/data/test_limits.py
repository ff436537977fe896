"""Bounded decoding: hostile files built here (small on disk, huge when decoded) are refused from their headers.

Each check runs before anything is decoded, in the one decoder that the
pipeline and the serving export share, so the refusal costs neither time nor
memory; training follows `on_error` (skip with a counted reason, or raise
naming the manifest row and file).
"""
from __future__ import annotations

import io
import logging
import re
import resource
import struct
import time
import zlib

import numpy as np
import pytest
import tensorflow as tf
from data_helpers import good_row, small_spec, write_manifest

from mmkeras.data import decoders
from mmkeras.data.pipeline import make_dataset
from mmkeras.data.scan import BadInputError, scan_split
from mmkeras.spec import spec_from_dict

SPEC_RAW = {
    "name": "limits",
    "label": {"column": "label", "class_names": ["a", "b"]},
    "features": [
        {"name": "caption", "modality": "text", "max_text_bytes": 100},
        # Limits set here, small enough to test at them (the defaults are a 12 Mpx photo and 30 s).
        {"name": "picture", "modality": "image", "image_size": [8, 8], "channels": 3, "max_image_pixels": 4096},
        {"name": "sound", "modality": "audio", "sample_rate": 8000, "clip_seconds": 0.05, "max_audio_seconds": 0.2},
    ],
    "splits": {"train": "manifest.csv"},
}
SPEC = spec_from_dict(SPEC_RAW)
MIB = 1024 * 1024


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid PNG header declaring width x height RGB pixels, then one tiny zlib stream of zero rows."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    zeros = zlib.compress(b"\0" * (1 << 20), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zeros) + chunk(b"IEND", b"")


def wav_header(seconds: float, rate: int = 8000, extra_chunk: bytes = b"") -> bytes:
    """A 16-bit mono WAV header declaring `seconds` of audio, followed by only 1000 bytes of it."""
    data_bytes = int(seconds * rate) * 2
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + fmt + extra_chunk + b"data" + struct.pack("<I", data_bytes)
    return b"RIFF" + struct.pack("<I", len(body) + data_bytes) + body + b"\0" * 1000


def patched_image(fmt: str, height: int, width: int) -> bytes:
    """A real 8x8 image whose header is rewritten to declare height x width."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format=fmt)
    data = bytearray(buffer.getvalue())
    if fmt == "JPEG":
        sof = data.index(b"\xff\xc0")  # baseline SOF0: marker, length, precision, height, width
        data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    elif fmt == "GIF":
        data[6:10] = struct.pack("<HH", width, height)
    else:  # BMP: width and (negative: top-down) height at 18 and 22
        data[18:26] = struct.pack("<ii", width, -height)
    return bytes(data)


def reset_peak_rss() -> None:
    """Reset the process's peak RSS to its current RSS (Linux), so a delta measures only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")
    except OSError:
        pass  # then the delta below can only under-count; it never fails a good decoder


def peak_growth_and_seconds(function) -> tuple[float, float]:
    """Run `function`; return how much the peak RSS grew (bytes) and the seconds it took."""
    reset_peak_rss()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    function()
    seconds = time.perf_counter() - start
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, seconds


def refusal(feature_name: str, data: bytes) -> tuple[str, float, float]:
    """Decode `data` as the feature (it must fail); return the message, the peak RSS growth and the seconds."""
    feature = SPEC.feature(feature_name)
    value = tf.constant(data)
    messages = []

    def decode():
        with pytest.raises(tf.errors.InvalidArgumentError) as caught:
            decoders.DECODERS[feature.modality](feature, value)
        messages.append(caught.value.message)

    decode()  # warm up: the first eager call builds kernels
    growth, seconds = peak_growth_and_seconds(decode)
    return messages[-1], growth, seconds


def test_a_png_declaring_20000_by_20000_pixels_is_refused_without_allocating():
    bomb = png_bomb()
    assert len(bomb) < 4096  # small on disk: 1.2 GB once decoded
    message, growth, seconds = refusal("picture", bomb)
    assert "`picture`" in message and "20000 x 20000" in message and "max_image_pixels = 4096" in message
    assert "Resize the image" in message
    assert growth < 50 * MIB, f"peak RSS grew by {growth / MIB:.0f} MiB"
    assert seconds < 1.0


@pytest.mark.parametrize("fmt", ["JPEG", "GIF", "BMP"])
def test_jpeg_gif_and_bmp_headers_are_read_before_decoding(fmt):
    data = patched_image(fmt, 30000, 20000)
    assert decoders.declared_image_size(data).numpy().tolist() == [30000, 20000]
    message, growth, _ = refusal("picture", data)
    assert "`picture`" in message and "30000 x 20000" in message and "max_image_pixels" in message
    assert growth < 50 * MIB


def test_the_image_limit_is_inclusive():
    picture = SPEC.feature("picture")
    assert picture.limit == ("max_image_pixels", 64 * 64)
    at_limit = tf.io.encode_png(np.zeros((64, 64, 3), np.uint8))
    assert decoders.decode_image(picture, at_limit).shape == (8, 8, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="65 x 64"):
        decoders.decode_image(picture, tf.io.encode_png(np.zeros((65, 64, 3), np.uint8)))


def gif_with_first_frame(height: int = 8, width: int = 8, extensions: bytes = b"") -> bytes:
    """A real 8x8 GIF (canvas 8x8) with `extensions` before its first frame, whose descriptor declares height x width."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format="GIF")
    data = buffer.getvalue()
    # Walk to the first image descriptor: the global colour table, then extension blocks (introducer,
    # label, sub-blocks ended by an empty one).
    offset = 13 + (3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while data[offset] == 0x21:
        offset += 2
        while data[offset]:
            offset += data[offset] + 1
        offset += 1
    assert data[offset] == 0x2C
    patched = bytearray(data[:offset] + extensions + data[offset:])
    descriptor = offset + len(extensions)
    patched[descriptor + 5:descriptor + 9] = struct.pack("<HH", width, height)
    return bytes(patched)


NETSCAPE_LOOP = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # application extension: loop forever


def comment_extension(text: bytes, sub_block: int = 255) -> bytes:
    """A GIF comment extension holding `text` in sub-blocks of at most `sub_block` bytes."""
    blocks = b"".join(bytes([len(text[i:i + sub_block])]) + text[i:i + sub_block]
                      for i in range(0, len(text), sub_block))
    return b"\x21\xfe" + blocks + b"\x00"


def test_a_gif_frame_declaring_more_than_its_canvas_is_refused_without_allocating():
    extensions = NETSCAPE_LOOP + comment_extension(b"made in a test " * 40)  # two sub-blocks
    bomb = gif_with_first_frame(30000, 20000, extensions)
    assert struct.unpack("<HH", bomb[6:10]) == (8, 8)  # the canvas alone would pass
    assert decoders.declared_gif_frame_size(bomb).numpy().tolist() == [30000, 20000]
    assert decoders.declared_image_size(bomb).numpy().tolist() == [30000, 20000]
    message, growth, seconds = refusal("picture", bomb)
    assert "`picture`" in message and "30000 x 20000" in message and "max_image_pixels = 4096" in message
    assert growth < 50 * MIB, f"peak RSS grew by {growth / MIB:.0f} MiB"
    assert seconds < 1.0
    # In a graph too (tf.data, serving), and a frame that fits its canvas still decodes.
    good = gif_with_first_frame(8, 8, extensions)
    serve = tf.function(lambda raw: decoders.decode_batch(SPEC, raw))
    raw = {"caption": tf.constant(["a"]), "picture": tf.constant([good]), "sound": tf.constant([wav_header(0.01)])}
    assert serve(raw)["picture"].shape == (1, 8, 8, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="30000 x 20000"):
        serve({**raw, "picture": tf.constant([bomb])})


def test_a_gif_whose_first_frame_is_past_the_walk_is_refused_and_a_truncated_one_is_corrupt():
    padded = gif_with_first_frame(extensions=comment_extension(b"x" * decoders.MAX_GIF_BLOCKS, sub_block=1))
    assert decoders.declared_gif_frame_size(padded).numpy().tolist() == list(decoders.GIF_UNREACHED_SIZE)
    message, _, seconds = refusal("picture", padded)
    assert "max_image_pixels" in message and seconds < 1.0
    # Fewer extension blocks than the walk reads: found, and decoded.
    within = gif_with_first_frame(extensions=comment_extension(b"x" * (decoders.MAX_GIF_BLOCKS // 2), sub_block=1))
    assert decoders.decode_image(SPEC.feature("picture"), within).shape == (8, 8, 3)
    # Cut inside the extensions: no frame size (the canvas is checked), and the decoder calls it corrupt.
    truncated = padded[:200]
    assert decoders.declared_gif_frame_size(truncated).numpy().tolist() == [0, 0]
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        decoders.decode_image(SPEC.feature("picture"), truncated)
    assert "max_image_pixels" not in caught.value.message


def test_a_wav_declaring_one_hour_is_refused_without_allocating():
    hostile = wav_header(3600)
    assert len(hostile) < 2048
    message, growth, seconds = refusal("sound", hostile)
    assert "`sound`" in message and "3600.0 s" in message and "8000 Hz" in message
    assert "max_audio_seconds = 0.2" in message and "Crop the recording" in message
    assert growth < 50 * MIB, f"peak RSS grew by {growth / MIB:.0f} MiB"
    assert seconds < 1.0


def test_the_wav_data_chunk_is_found_after_other_chunks():
    extra = b"LIST" + struct.pack("<I", 10) + b"INFOabcdef"
    message, _, _ = refusal("sound", wav_header(3600, extra_chunk=extra))
    assert "3600.0 s" in message
    # A real recording with the same chunk decodes: 0.1 s, within max_audio_seconds.
    encoded = tf.audio.encode_wav(tf.fill([800, 1], 0.25), 8000).numpy()
    with_list = encoded[:36] + extra + encoded[36:]
    with_list = with_list[:4] + struct.pack("<I", len(with_list) - 8) + with_list[8:]
    assert decoders.declared_wav_size(with_list)[0].numpy() == 1600
    np.testing.assert_allclose(decoders.decode_audio(SPEC.feature("sound"), with_list).numpy(), 0.25, atol=1e-4)


def test_a_text_over_max_text_bytes_is_refused_and_an_ignored_one_is_not():
    caption = SPEC.feature("caption")
    assert decoders.decode_text(caption, "x" * 100).numpy() == b"x" * 100
    message, growth, _ = refusal("caption", b"y" * (10 * MIB))
    assert "`caption`" in message and f"{10 * MIB} bytes" in message and "max_text_bytes = 100" in message
    assert growth < 50 * MIB
    # A limit past 2**31 (to turn the check off) compares in int64: no wrap-around refusing every text.
    unbounded = spec_from_dict({**SPEC_RAW, "features": [{"name": "caption", "modality": "text",
                                                          "max_text_bytes": 2**40}]}).feature("caption")
    assert decoders.decode_text(unbounded, "a red ball").numpy() == b"a red ball"
    # A missing modality's value is never looked at, whatever it holds.
    ignored = decoders.decode_feature(caption, tf.constant("z" * 1000), tf.constant(False))
    assert ignored.numpy() == b""


def test_the_checks_are_graph_ops_in_tf_data_and_in_decode_batch():
    good = tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)).numpy()
    picture = SPEC.feature("picture")
    dataset = tf.data.Dataset.from_tensor_slices([good, png_bomb()]).map(lambda b: decoders.decode_image(picture, b))
    iterator = iter(dataset)
    assert next(iterator).shape == (8, 8, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_image_pixels"):
        next(iterator)
    serve = tf.function(lambda raw: decoders.decode_batch(SPEC, raw))
    raw = {"caption": tf.constant(["a", "b"]), "picture": tf.constant([good, png_bomb()]),
           "sound": tf.constant([wav_header(0.01), wav_header(3600)])}
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`picture`|`sound`"):
        serve(raw)


def write_hostile_rows(tmp_path) -> list[dict]:
    rows = [good_row(tmp_path, i) for i in range(4)]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bomb.png").write_bytes(png_bomb())
    (tmp_path / "bad" / "hour.wav").write_bytes(wav_header(3600))
    rows[1]["picture"] = "bad/bomb.png"
    rows[2]["sound"] = "bad/hour.wav"
    rows[3]["caption"] = "long " * 20000  # 100 kB, over the default 64 KiB
    return rows


def test_training_skips_oversized_examples_with_a_counted_reason(tmp_path, caplog):
    write_manifest(tmp_path / "manifest.csv", write_hostile_rows(tmp_path))
    spec = small_spec(tmp_path, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="mmkeras"):
        _, report = make_dataset(spec, "train", batch_size=4, return_report=True)
    assert report.skipped == {"image too large": 1, "audio too long": 1, "text too long": 1}
    assert (report.total, report.kept) == (4, 1)
    reasons = {bad.row: bad.reason for bad in report.bad}
    assert re.search(r"20000 x 20000 .* max_image_pixels", reasons[2])
    assert "3600.0 s" in reasons[3] and "max_audio_seconds" in reasons[3]
    assert "max_text_bytes" in reasons[4]
    assert "image too large: 1" in caplog.text
    assert scan_split(spec, "train") == report


def test_training_raises_naming_the_row_file_and_option(tmp_path):
    manifest = write_manifest(tmp_path / "manifest.csv", write_hostile_rows(tmp_path))
    with pytest.raises(BadInputError) as caught:
        make_dataset(small_spec(tmp_path, on_error="raise"), "train")
    message = str(caught.value)
    assert f"{manifest} row 2: file {tmp_path / 'bad' / 'bomb.png'}: image too large" in message
    assert f"{manifest} row 3: file {tmp_path / 'bad' / 'hour.wav'}: audio too long" in message
    assert f"{manifest} row 4: text too long" in message and "max_text_bytes" in message


def real_wav(seconds: float, rate: int = 8000) -> bytes:
    """A complete 16-bit mono WAV of `seconds` of a quiet tone."""
    samples = 0.1 * np.sin(np.arange(int(seconds * rate), dtype=np.float32) / 5.0)
    return tf.audio.encode_wav(samples[:, None], rate).numpy()


def test_decoders_told_the_limits_were_checked_decode_the_same_tensors_and_skip_only_the_limits():
    small_png = tf.io.encode_png(np.full((8, 8, 3), 7, np.uint8)).numpy()
    large_png = tf.io.encode_png(np.full((80, 80, 3), 7, np.uint8)).numpy()  # 6400 px > max_image_pixels 4096
    cases = {
        "picture": (small_png, large_png, "max_image_pixels"),
        "sound": (real_wav(0.1), real_wav(0.3), "max_audio_seconds"),  # 0.3 s > max_audio_seconds 0.2
        "caption": (b"a short caption", b"x" * 150, "max_text_bytes"),  # 150 bytes > 100
    }
    for name, (within, beyond, option) in cases.items():
        feature = SPEC.feature(name)
        decode = decoders.DECODERS[feature.modality]
        checked = decode(feature, tf.constant(within))
        unchecked = decode(feature, tf.constant(within), check_limit=False)
        np.testing.assert_array_equal(checked.numpy(), unchecked.numpy())
        with pytest.raises(tf.errors.InvalidArgumentError, match=option):
            decode(feature, tf.constant(beyond))
        assert decode(feature, tf.constant(beyond), check_limit=False).shape == checked.shape


def test_the_training_pipeline_leaves_the_limits_to_the_scan(tmp_path, monkeypatch):
    write_manifest(tmp_path / "manifest.csv", write_hostile_rows(tmp_path) + [good_row(tmp_path, 9)])
    spec = small_spec(tmp_path, on_error="skip")

    def batches():
        dataset, report = make_dataset(spec, "train", batch_size=8, return_report=True)
        return report, [tf.nest.map_structure(lambda value: value.numpy(), batch) for batch in dataset]

    report, first = batches()  # the scan decodes every row with the limits on, and refuses three
    assert report.skipped == {"image too large": 1, "audio too long": 1, "text too long": 1}

    def refuse(*args, **kwargs):
        raise AssertionError("the pipeline read a declared size that the scan had checked")

    monkeypatch.setattr(decoders, "check_image_size", refuse)
    monkeypatch.setattr(decoders, "check_audio_length", refuse)
    again, second = batches()  # the scan's result is cached: only the pipeline decodes now
    assert again == report
    assert len(first) == len(second) == 1
    for one, other in zip(tf.nest.flatten(first), tf.nest.flatten(second)):
        np.testing.assert_array_equal(one, other)
