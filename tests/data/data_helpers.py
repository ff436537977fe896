"""Helpers for the data tests: real files written in the test, small specs pointing at tmp_path."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

RATE = 8000
CLIP_SECONDS = 0.05  # 400 samples
IMAGE_SIZE = 8
CLASSES = ["red", "blue"]


def write_png(path: Path, colour=(200, 30, 30), size: int = IMAGE_SIZE) -> str:
    """Write a flat-coloured PNG and return its path."""
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size, size, 3), colour, np.uint8)
    path.write_bytes(tf.io.encode_png(pixels).numpy())
    return str(path)


def write_wav(path: Path, waveform=None, rate: int = RATE) -> str:
    """Write a 16-bit WAV (samples x channels, or a mono vector) and return its path."""
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    if waveform is None:
        waveform = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(int(RATE * CLIP_SECONDS)) / RATE)
    waveform = np.asarray(waveform, np.float32)
    if waveform.ndim == 1:
        waveform = waveform[:, None]
    path.write_bytes(tf.audio.encode_wav(waveform, rate).numpy())
    return str(path)


def write_manifest(path: Path, rows: list[dict]) -> Path:
    """Write rows as CSV or JSONL, by the path's extension (None cells are left out of JSONL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        columns = list(dict.fromkeys(key for row in rows for key in row))
        with open(path, "w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=columns)
            writer.writeheader()
            writer.writerows([{k: ("" if v is None else v) for k, v in row.items()} for row in rows])
    else:
        with open(path, "w", encoding="utf-8") as stream:
            stream.writelines(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n" for row in rows)
    return path


def small_spec(data_dir: Path, manifest: str = "manifest.csv", *, on_error: str = "raise", **audio_options):
    """A caption + picture + sound spec over `data_dir/manifest` (8x8 RGB, 8 kHz 0.05 s audio)."""
    from mmkeras.spec import spec_from_dict

    return spec_from_dict({
        "name": "small",
        "data_dir": str(data_dir),
        "on_error": on_error,
        "label": {"column": "label", "class_names": CLASSES},
        "features": [
            {"name": "caption", "modality": "text"},
            {"name": "picture", "modality": "image", "image_size": [IMAGE_SIZE, IMAGE_SIZE], "channels": 3},
            {"name": "sound", "modality": "audio", "sample_rate": RATE, "clip_seconds": CLIP_SECONDS,
             **audio_options},
        ],
        "splits": {"train": {"manifest": manifest, "select": "train"}, "all": {"manifest": manifest}},
    })


def good_row(data_dir: Path, index: int, label: str = "red", split: str = "train") -> dict:
    """A manifest row with a real PNG and WAV (relative paths) and a caption."""
    write_png(data_dir / f"img/{index}.png")
    write_wav(data_dir / f"wav/{index}.wav")
    return {"caption": f"a {label} thing {index}", "picture": f"img/{index}.png", "sound": f"wav/{index}.wav",
            "label": label, "split": split}
