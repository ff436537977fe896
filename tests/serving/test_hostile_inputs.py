"""Hostile inputs (small on the wire, huge if decoded) are refused by the served export with INVALID_ARGUMENT.

The refusal comes from the size checks that run before decoding, so it is
fast, costs the server no memory, names the feature, the declared size and
the spec option, and leaves the server answering the next good request.
"""
from __future__ import annotations

import resource
import time

import numpy as np
import pytest
import tensorflow as tf

from mmkeras.serving import ServingError
from mmkeras.serving._loopback import decompression_bomb_png, hostile_inputs, wav_header_only

MIB = 1024 * 1024
# kind -> words the refusal must hold besides the feature's name.
EXPECTED = {
    "bomb png": ("20000 x 20000", "max_image_pixels = 12192768"),
    "hour-long wav": ("3600.0 s", "8000 Hz", "max_audio_seconds = 30"),
    "10 MB text": ("10485760 bytes", "max_text_bytes = 65536"),
}


def _good_row(served) -> dict:
    root = served.spec.data_dir
    time_axis = np.arange(2000) / 8000
    wav = tf.audio.encode_wav((0.3 * np.sin(2 * np.pi * 440 * time_axis))[:, None].astype(np.float32), 8000)
    return {"caption": "a red ball", "picture": (root / "images/00000.png").read_bytes(), "sound": wav.numpy()}


def _peak_growth(function) -> int:
    """Bytes the process's peak RSS grew by while `function` ran (the peak is reset first, on Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")
    except OSError:
        pass  # then the growth can only be under-counted
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    function()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024


def test_the_hostile_inputs_are_small_on_the_wire():
    assert len(decompression_bomb_png()) < 2048  # 1.2 GB decoded
    assert len(wav_header_only(3600.0, 8000)) < 2048  # declares 57.6 MB of samples


@pytest.mark.parametrize("protocol, code", [("grpc", "INVALID_ARGUMENT"), ("rest", 400)])
@pytest.mark.parametrize("kind", list(EXPECTED))
def test_hostile_inputs_are_refused_naming_feature_size_and_option(served, protocol, code, kind):
    feature_name, value = hostile_inputs(served.spec)[kind]
    client = served.client()
    row = {**_good_row(served), feature_name: value}
    client.predict(_good_row(served), protocol=protocol)  # warm: the first call builds kernels
    errors = []

    def refuse():
        with pytest.raises(ServingError) as caught:
            client.predict(row, protocol=protocol)
        errors.append(caught.value)

    start = time.perf_counter()
    growth = _peak_growth(refuse)
    seconds = time.perf_counter() - start
    error = errors[0]
    assert error.code == code
    assert f"`{feature_name}`" in error.message, error.message
    for word in EXPECTED[kind]:
        assert word in error.message, error.message
    if kind != "10 MB text":  # the text itself is 10 MB in the client, the JSON and the server
        # Server and client share this process: the bound covers both. (Decoding the PNG would take 1.2 GB.)
        assert growth < 50 * MIB, f"peak RSS grew by {growth / MIB:.0f} MiB"
        assert seconds < 2.0
    assert client.predict(_good_row(served), protocol=protocol)["probabilities"].shape == (1, 3)


def test_one_hostile_row_fails_its_batch_and_not_the_next(served):
    """A batch holding one bomb is refused whole (TF Serving answers per request), then good batches pass."""
    client = served.client()
    feature_name, bomb = hostile_inputs(served.spec)["bomb png"]
    rows = [_good_row(served), {**_good_row(served), feature_name: bomb}]
    with pytest.raises(ServingError, match="max_image_pixels") as caught:
        client.predict(rows)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert client.predict([_good_row(served)] * 2)["probabilities"].shape == (2, 3)
