"""Bad requests get a clear INVALID_ARGUMENT naming the input: from the SavedModel, the server and the client."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mmkeras.export import signatures as sig
from mmkeras.serving import ServingError


def _wav(rate: int, seconds: float = 0.25) -> bytes:
    time = np.arange(int(rate * seconds)) / rate
    return tf.audio.encode_wav((0.3 * np.sin(2 * np.pi * 440 * time))[:, None].astype(np.float32), rate).numpy()


def _good_row(served) -> dict:
    root = served.spec.data_dir
    return {"caption": "a red ball", "picture": (root / "images/00000.png").read_bytes(), "sound": _wav(8000)}


# (case, change to a good row, the input the error must name, another word the message must hold)
BAD_REQUESTS = [
    ("invalid image bytes", {"picture": b"\x89PNG but not really"}, "picture", "PNG"),
    ("garbage wav", {"sound": b"RIFF\x00\x00\x00\x00WAVEgarbage"}, "sound", "sound"),
    ("not a wav at all", {"sound": b"OggS\x00\x02 an ogg file"}, "sound", "WAV"),
    ("wrong sample rate", {"sound": "16k"}, "sound", "16000 Hz"),
    ("wrong dtype", {"picture": 3.5}, "picture", "DT_STRING"),
    ("missing input", {"sound": None}, "sound", "missing"),
]


def _bad_row(served, change: dict) -> dict:
    row = {**_good_row(served), **change}
    if row["sound"] == "16k":
        row["sound"] = _wav(16000)
    return {key: value for key, value in row.items() if value is not None}


@pytest.mark.parametrize("protocol, code", [("grpc", "INVALID_ARGUMENT"), ("rest", 400)])
@pytest.mark.parametrize("case, change, input_name, word", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_server_and_client_refuse_bad_requests_naming_the_input(served, protocol, code, case, change, input_name,
                                                                word):
    client = served.client()
    with pytest.raises(ServingError) as caught:
        client.predict(_bad_row(served, change), protocol=protocol)
    error = caught.value
    assert error.code == code
    assert f"`{input_name}`" in error.message or f"'{input_name}'" in error.message, error.message
    assert word in error.message, error.message
    # The server is still up and right after a bad request.
    answer = client.predict(_good_row(served), protocol=protocol)
    assert answer["probabilities"].shape == (1, 3)


@pytest.mark.parametrize("protocol, code", [("grpc", "INVALID_ARGUMENT"), ("rest", 400)])
def test_a_present_flag_with_no_bytes_is_an_error_not_a_blank_image(served, protocol, code):
    row = {**_good_row(served), "picture": "", **{f"{n}_present": True for n in ("caption", "picture", "sound")}}
    with pytest.raises(ServingError, match="`picture`") as caught:
        served.client(signature_name=sig.WITH_PRESENCE).predict(row, protocol=protocol)
    assert caught.value.code == code


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_rows_of_different_lengths_or_shapes_are_refused(served, protocol):
    client = served.client(signature_name=sig.WAVEFORM)
    flags = {f"{n}_present": True for n in ("caption", "picture", "sound")}
    row = {**_good_row(served), **flags, "sound": np.zeros((2, 10), np.float32)}  # one row holding a 3-D batch
    with pytest.raises(ServingError, match="`sound`") as caught:
        client.predict(row, protocol=protocol)
    assert caught.value.code in ("INVALID_ARGUMENT", 400)
    loud = {**row, "sound": np.full(2000, 1.5, np.float32)}  # WAV would clip it: refused, not guessed
    with pytest.raises(ServingError, match=r"`sound`.*\[-1, 1\]"):
        client.predict(loud, protocol=protocol)


def test_the_savedmodel_itself_names_the_bad_input(served):
    """Without a server: the decoders' asserts and TF's argument binding name the input too."""
    from mmkeras.serving._loopback import SavedModelBackend

    backend = SavedModelBackend(served.path)
    serve = backend.signatures[sig.DEFAULT]
    good = {key: tf.constant([value]) for key, value in _good_row(served).items()}
    assert serve(**good)["probabilities"].shape == (1, 3)
    for change, input_name in [(c[1], c[2]) for c in BAD_REQUESTS[:4]]:
        inputs = {key: tf.constant([value]) for key, value in _bad_row(served, change).items()}
        # The decoder's message names the feature, or its failing op does (`decode_<feature>/...`).
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"`{input_name}`|decode_{input_name}/"):
            serve(**inputs)
    with pytest.raises(TypeError, match="sound"):
        serve(caption=good["caption"], picture=good["picture"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="rows.*`caption`|`picture`.*rows"):
        serve(**{**good, "picture": tf.constant([b"", b""])})
    # TF's own dtype error gives only the position; the checked call names the input.
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError)):
        serve(**{**good, "picture": tf.constant([3.5])})
    with pytest.raises(ServingError, match="`picture`.*DT_STRING, got DT_FLOAT"):
        backend.predict(sig.DEFAULT, {**{k: v.numpy() for k, v in good.items()}, "picture": np.array([3.5], "f4")})
