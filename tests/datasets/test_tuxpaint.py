"""Tux Paint stamps builder: on a small stamps folder written here, and on the real Debian package."""
from __future__ import annotations

import csv
import wave
from pathlib import Path

import numpy as np
import pytest

from mmkeras.datasets import tuxpaint

STAMPS = Path(tuxpaint.DEFAULT_STAMPS_DIR)
needs_stamps = pytest.mark.skipif(
    not STAMPS.is_dir(), reason=f"{STAMPS} not found: apt-get install tuxpaint-stamps-default"
)


def _read_manifest(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _write_stamp(folder: Path, name: str, *, english: str | None, french: str | None, recording_rate: int | None):
    """Write one stamp: a transparent PNG with a red square, its .txt and a French ogg recording."""
    import soundfile
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    picture = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    picture.paste((255, 0, 0, 255), (10, 5, 30, 15))
    picture.save(folder / f"{name}.png")
    lines = ([english] if english else []) + ["de.utf8=Etwas."] + ([f"fr.utf8={french}"] if french else [])
    (folder / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if recording_rate:
        time = np.arange(recording_rate // 2) / recording_rate
        stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * time)] * 2, axis=1)
        soundfile.write(folder / f"{name}_desc_fr.ogg", stereo, recording_rate)


@pytest.fixture(scope="module")
def small_stamps(tmp_path_factory):
    """Two categories of 4 stamps and one of 2 (too small), with holes."""
    root = tmp_path_factory.mktemp("stamps")
    for i in range(4):
        _write_stamp(root / "animals" / "cats", f"cat{i}", english=f"A cat {i}.", french=f"Un chat {i}.",
                     recording_rate=44100 if i != 1 else None)
        _write_stamp(root / "food", f"apple{i}", english=f"An apple {i}.", french=None if i == 2 else "Une pomme.",
                     recording_rate=22050)
    for i in range(2):
        _write_stamp(root / "space", f"star{i}", english="A star.", french="Une étoile.", recording_rate=44100)
    (root / "animals" / "cats" / "cat0_mirror.png").write_bytes((root / "animals/cats/cat0.png").read_bytes())
    (root / "food" / "pear.svg").write_text("<svg/>")  # SVG-only: skipped
    (root / "food" / "pear.txt").write_text("A pear.\n")
    return root


def test_builds_a_small_stamps_folder(small_stamps, tmp_path):
    from PIL import Image

    manifest = tuxpaint.build(tmp_path, stamps_dir=small_stamps, language="fr", min_per_category=3,
                              image_size=16, sample_rate=16000, seed=1)
    rows = _read_manifest(manifest)
    assert [r["category"] for r in rows] == ["animals"] * 4 + ["food"] * 4  # space (2 stamps) dropped
    assert not any(r["stamp"].endswith(("_mirror", "pear")) for r in rows)
    for category in ("animals", "food"):
        assert sorted(r["split"] for r in rows if r["category"] == category) == [
            "test", "train", "train", "validation"]
    by_stamp = {r["stamp"]: r for r in rows}
    assert by_stamp["animals/cats/cat3"]["text"] == "Un chat 3."
    assert by_stamp["food/apple2"]["text"] == ""  # no French line: missing text
    assert by_stamp["animals/cats/cat1"]["audio"] == ""  # no recording: missing audio
    picture = np.asarray(Image.open(tmp_path / by_stamp["food/apple0"]["image"]))
    assert picture.shape == (16, 16, 3)
    np.testing.assert_array_equal(picture[0, 0], [255, 255, 255])  # transparent -> white
    assert picture[8, 8, 0] > 200 and picture[8, 8, 1] < 60  # the red square, kept centred
    with wave.open(str(tmp_path / by_stamp["animals/cats/cat0"]["audio"]), "rb") as stream:
        assert (stream.getframerate(), stream.getnchannels()) == (16000, 1)
        assert abs(stream.getnframes() - 8000) <= 1  # half a second at 44.1 kHz -> 16 kHz
        samples = np.frombuffer(stream.readframes(stream.getnframes()), dtype="<i2") / 32767
    assert abs(np.sqrt(np.mean(samples[1000:-1000] ** 2)) - 0.5 / np.sqrt(2)) < 0.02  # amplitude kept
    again = tuxpaint.build(tmp_path / "again", stamps_dir=small_stamps, language="fr", min_per_category=3,
                           image_size=16, seed=1)
    assert [r["split"] for r in _read_manifest(again)] == [r["split"] for r in rows]


def test_requested_categories_must_exist_with_enough_stamps(small_stamps, tmp_path):
    with pytest.raises(ValueError, match=r"\['space'\].*min_per_category=3"):
        tuxpaint.build(tmp_path, stamps_dir=small_stamps, categories=["food", "space"], min_per_category=3)
    with pytest.raises(ValueError, match="plants"):
        tuxpaint.build(tmp_path, stamps_dir=small_stamps, categories=["plants"], min_per_category=3)


def test_missing_stamps_folder_says_what_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install tuxpaint-stamps-default"):
        tuxpaint.build(tmp_path, stamps_dir=tmp_path / "nowhere")


def test_read_description_handles_english_and_locales(tmp_path):
    text = tmp_path / "owl.txt"
    text.write_text("An owl.\nca@valencia.utf8=Un mussol.\npt_BR.utf8=Uma coruja.\nfr.utf8= Un hibou. \n",
                    encoding="utf-8")
    assert tuxpaint.read_description(text, "en") == "An owl."
    assert tuxpaint.read_description(text, "fr") == "Un hibou."
    assert tuxpaint.read_description(text, "pt_BR") == "Uma coruja."
    assert tuxpaint.read_description(text, "pt") == ""
    assert tuxpaint.recording_path(tmp_path / "owl.png", "fr") is None


@needs_stamps
def test_the_spec_classes_are_what_the_builder_finds():
    import mmkeras

    spec = mmkeras.load_spec("tuxpaint")
    assert spec.feature_names == ("image", "text", "audio")
    assert spec.feature("image").shape == (spec.source_options["image_size"],) * 2 + (3,)
    assert spec.feature("audio").options["sample_rate"] == spec.source_options["sample_rate"]
    assert tuple(spec.source_options["categories"]) == spec.label.class_names
    counts: dict[str, int] = {}
    for stamp in tuxpaint.find_stamps(STAMPS):
        counts[stamp.relative_to(STAMPS).parts[0]] = counts.get(stamp.relative_to(STAMPS).parts[0], 0) + 1
    kept = sorted(name for name, count in counts.items() if count >= spec.source_options["min_per_category"])
    assert tuple(kept) == spec.label.class_names


@needs_stamps
def test_builds_from_the_real_package(tmp_path):
    import tensorflow as tf

    import mmkeras

    spec = mmkeras.load_spec("tuxpaint")
    options = dict(spec.source_options, categories=["animals", "food", "symbols"], max_per_category=5)
    rows = _read_manifest(tuxpaint.build(tmp_path, **options))
    assert len(rows) == 15 and {r["category"] for r in rows} <= set(spec.label.class_names)
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    assert all(r["text"] for r in rows) and sum(bool(r["audio"]) for r in rows) >= 10
    for row in rows[::4]:
        image = tf.io.decode_png(tf.io.read_file(str(tmp_path / row["image"])))
        assert tuple(image.shape) == spec.feature("image").shape
        if row["audio"]:
            audio, rate = tf.audio.decode_wav(tf.io.read_file(str(tmp_path / row["audio"])))
            assert int(rate) == spec.feature("audio").options["sample_rate"] and audio.shape[1] == 1
            assert 0.01 < float(tf.reduce_max(tf.abs(audio))) <= 1.0
