"""`tiny`: a small synthetic text + image + audio dataset written on the fly.

Tests, notebooks and quick checks need real files in the real manifest format
without downloads; this builder writes them in a second. Class k ("red",
"green", "blue") has a caption naming its colour among filler words, a picture
tinted with that colour, and a tone at a class frequency, all with seeded noise.
A few rows leave a cell empty so that missing modalities are exercised.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 70, 210)}
TONES_HZ = {"red": 440.0, "green": 880.0, "blue": 1320.0}
FILLER = ("a", "the", "small", "big", "round", "shiny", "thing", "ball", "box", "toy")


def build(
    data_dir: Path,
    *,
    num_train: int = 60,
    num_validation: int = 15,
    num_test: int = 24,
    seed: int = 0,
    image_size: int = 16,
    sample_rate: int = 8000,
    clip_seconds: float = 0.25,
) -> Path:
    """Write the tiny dataset (PNG pictures, WAV tones, manifest.csv) into `data_dir`.

    Args:
      data_dir: the folder to write into (created if needed).
      num_train, num_validation, num_test: examples per split.
      seed: seed for every random choice, so two builds are identical.
      image_size: picture height and width in pixels.
      sample_rate: WAV sample rate in Hz.
      clip_seconds: tone length in seconds.

    Returns:
      The manifest's path.

    Example:
      >>> build(Path("/tmp/tiny"))
      PosixPath('/tmp/tiny/manifest.csv')
    """
    import tensorflow as tf

    data_dir = Path(data_dir)
    (data_dir / "images").mkdir(parents=True, exist_ok=True)
    (data_dir / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    class_names = list(COLOURS)
    sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    rows = []
    for split, count in sizes.items():
        for i in range(count):
            index = len(rows)
            label = class_names[int(rng.integers(len(class_names)))]
            words = list(rng.choice(FILLER, size=3)) + [label]
            rng.shuffle(words)
            pixels = rng.normal(COLOURS[label], 40.0, size=(image_size, image_size, 3))
            image_path = f"images/{index:05d}.png"
            tf.io.write_file(str(data_dir / image_path), tf.io.encode_png(np.clip(pixels, 0, 255).astype(np.uint8)))
            time = np.arange(int(sample_rate * clip_seconds)) / sample_rate
            wave = 0.5 * np.sin(2 * np.pi * TONES_HZ[label] * time + rng.uniform(0, 2 * np.pi))
            wave = np.clip(wave + rng.normal(0.0, 0.1, size=time.shape), -1.0, 1.0).astype(np.float32)
            audio_path = f"audio/{index:05d}.wav"
            tf.io.write_file(str(data_dir / audio_path), tf.audio.encode_wav(wave[:, None], sample_rate))
            rows.append({
                # Every 9th caption and every 7th sound is missing: real data has holes.
                "caption": "" if index % 9 == 4 else " ".join(words),
                "picture": image_path,
                "sound": "" if index % 7 == 3 else audio_path,
                "label": label,
                "split": split,
            })
    manifest = data_dir / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest
