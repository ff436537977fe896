"""Compare fusions and unimodal baselines on one dataset, over several seeds, with the same budget."""
from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mmkeras.checks import check_positive_int
from mmkeras.data import make_dataset
from mmkeras.datasets import prepare
from mmkeras.evaluation.report import evaluate
from mmkeras.fusion import FUSIONS
from mmkeras.models.classifier import PROBABILITIES
from mmkeras.registry import lookup
from mmkeras.spec import DatasetSpec, load_spec
from mmkeras.training.class_weights import split_labels
from mmkeras.training.config import BALANCES
from mmkeras.training.loop import train


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One model of a comparison: which features it sees and how it fuses them.

    Args:
      name: the row's label, e.g. "attention+mdrop0.3" or "image only".
      features: the feature names it is trained on.
      fusion: a name in `mmkeras.FUSIONS`.
      options: extra `mmkeras.train` options (e.g. `modality_dropout`, `balance`).
    """

    name: str
    features: tuple[str, ...]
    fusion: str = "concat"
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def make_candidates(
    spec: DatasetSpec,
    *,
    fusions: Sequence[str] | None = None,
    modality_dropouts: Sequence[float] = (0.0, 0.3),
    balances: Sequence[str] = ("aux_heads",),
    unimodal: bool = True,
) -> list[Candidate]:
    """List the models a comparison trains: each modality alone, then every fusion setting.

    Every candidate states its `modality_dropout` and `balance` explicitly, so a
    row's name says how it was trained whatever `mmkeras.train`'s defaults are.

    Args:
      spec: the dataset spec.
      fusions: fusion names (default: all of `mmkeras.FUSIONS`).
      modality_dropouts: modality-dropout rates each fusion is trained with.
      balances: `balance` training options each fusion is trained with
        ("none", "aux_heads", "ogm_ge", "gradient_blending"; default: "aux_heads").
      unimodal: include one single-modality model per feature (trained
        without modality dropout or balancing, which need two modalities).

    Returns:
      The candidates, unimodal ones first; fusion rows are named like
      "concat mdrop=0.3 balance=aux_heads".

    Raises:
      ValueError: for an unknown fusion or balance, or a rate outside [0, 1).
    """
    for fusion in fusions or ():
        lookup(FUSIONS, fusion, "fusion")
    for balance in balances:
        if balance not in BALANCES:
            raise ValueError(f"Unknown balance {balance!r}; choose one of {sorted(BALANCES)}.")
    for rate in modality_dropouts:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"A modality-dropout rate must be in [0, 1); got {rate!r}.")
    candidates = []
    if unimodal:
        for feature in spec.features:
            options = {"modality_dropout": 0.0, "balance": "none"}
            candidates.append(Candidate(f"{feature.name} only", (feature.name,), "concat", options))
    for fusion in fusions or sorted(FUSIONS):
        for rate in modality_dropouts:
            for balance in balances:
                options = {"modality_dropout": float(rate), "balance": balance}
                candidates.append(Candidate(f"{fusion} mdrop={rate:g} balance={balance}", spec.feature_names, fusion, options))
    return candidates


def compare_fusions(
    spec: DatasetSpec | str,
    *,
    candidates: Sequence[Candidate] | None = None,
    seeds: int = 5,
    epochs: int = 10,
    batch_size: int = 64,
    output_dir: str | os.PathLike | None = None,
    train_options: Mapping[str, Any] | None = None,
    progress: bool = True,
    first_seed: int = 0,
) -> dict:
    """Train and evaluate every candidate over `seeds` seeds with the same budget.

    Each run uses the same epochs, batch size and optimiser; only the model
    (features, fusion, options) and the seed change. The test split scores
    each run, with each modality absent as well; where the spec has its own
    validation split, each run's accuracy on it is recorded too, so that a
    candidate can be chosen without reading the test split.

    Args:
      spec: the dataset spec, or its name or path.
      candidates: what to train (default: `make_candidates(spec)`).
      seeds: how many seeds per candidate (`first_seed`, `first_seed + 1`, ...).
      epochs: epochs per run.
      batch_size: global batch size.
      output_dir: where run folders go (default: a temporary folder, removed).
      train_options: extra `mmkeras.train` options for every run.
      progress: show a progress bar over runs.
      first_seed: the first seed, so that a later call can add seeds to an
        earlier one's without training the same runs again.

    Returns:
      `{"dataset", "machine", "budget", "rows": [per-candidate mean/std],
      "runs": [per-run figures]}`; rows hold `accuracy_mean/std`,
      `macro_f1_mean/std`, `absent_accuracy` (feature -> mean), `parameters`,
      `examples_per_second`, `seconds_per_epoch`, and `validation_accuracy_mean`
      when the spec has a validation split.

    Example:
      >>> results = compare_fusions("tiny", seeds=2, epochs=1)
      >>> results["rows"][0]["model"]
      'caption only'
    """
    spec = spec if isinstance(spec, DatasetSpec) else load_spec(spec)
    prepare(spec)
    candidates = list(candidates or make_candidates(spec))
    num_train = len(split_labels(spec, "train"))
    temporary = None
    if output_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="mmkeras-compare-")
        output_dir = temporary.name
    runs = []
    first_seed = check_positive_int(first_seed, "first_seed", allow_zero=True)
    plan = [(c, seed) for c in candidates for seed in range(first_seed, first_seed + seeds)]
    for candidate, seed in tqdm(plan, desc=f"{spec.name} runs", disable=not progress):
        sub_spec = spec.with_features(candidate.features)
        started = time.perf_counter()
        result = train(
            sub_spec, fusion=candidate.fusion, epochs=epochs, batch_size=batch_size, seed=seed,
            output_dir=run_folder(output_dir, candidate.name, seed), verbose=0,
            **{**(train_options or {}), **candidate.options},
        )
        seconds = time.perf_counter() - started
        report = evaluate(result.model, sub_spec, "test")
        epochs_run = len(result.history.get("loss", [])) or epochs
        runs.append({
            "model": candidate.name, "seed": seed, "fusion": candidate.fusion, "features": list(candidate.features),
            "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
            "absent_accuracy": {name: r["absent"] for name, r in report["reliance"].items()},
            "parameters": int(result.model.count_params()), "epochs": epochs_run,
            "seconds_per_epoch": seconds / epochs_run, "examples_per_second": num_train * epochs_run / seconds,
            **({"validation_accuracy": split_accuracy(result.model, sub_spec, "validation", batch_size)}
               if "validation" in sub_spec.splits else {}),
        })
    if temporary is not None:
        temporary.cleanup()
    return {
        "dataset": spec.name,
        "machine": machine_description(),
        "budget": {"epochs": epochs, "batch_size": batch_size, "seeds": seeds, "first_seed": first_seed,
                   "train_examples": num_train,
                   **dict(train_options or {})},
        "rows": [_summarise(c, [r for r in runs if r["model"] == c.name]) for c in candidates],
        "runs": runs,
    }


def split_accuracy(model, spec: DatasetSpec, split: str, batch_size: int = 64) -> float:
    """The accuracy of a classifier's `probabilities` output on one split of the spec (all inputs present).

    Example:
      >>> split_accuracy(result.model, spec, "validation")
      0.79
    """
    right = total = 0
    for features, labels in make_dataset(spec, split, batch_size=batch_size, deterministic=True):
        predicted = np.argmax(np.asarray(model(features, training=False)[PROBABILITIES]), axis=1)
        right += int(np.sum(predicted == np.asarray(labels).reshape(-1)))
        total += len(predicted)
    return right / total


def machine_description() -> dict:
    """What the figures were measured on: CPU count, platform, TF version and visible GPUs."""
    import tensorflow as tf

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "gpus": [device.name for device in tf.config.list_physical_devices("GPU")],
    }


def _summarise(candidate: Candidate, runs: list[dict]) -> dict:
    def stats(key):
        values = np.array([r[key] for r in runs], dtype=float)
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0

    accuracy_mean, accuracy_std = stats("accuracy")
    f1_mean, f1_std = stats("macro_f1")
    return {
        "model": candidate.name, "fusion": candidate.fusion, "features": list(candidate.features),
        "options": dict(candidate.options), "seeds": len(runs),
        "accuracy_mean": accuracy_mean, "accuracy_std": accuracy_std,
        "macro_f1_mean": f1_mean, "macro_f1_std": f1_std,
        "absent_accuracy": {
            name: float(np.mean([r["absent_accuracy"][name] for r in runs])) for name in runs[0]["absent_accuracy"]
        },
        "parameters": runs[0]["parameters"],
        "examples_per_second": float(np.mean([r["examples_per_second"] for r in runs])),
        "seconds_per_epoch": float(np.mean([r["seconds_per_epoch"] for r in runs])),
        **({"validation_accuracy_mean": float(np.mean([r["validation_accuracy"] for r in runs]))}
           if all("validation_accuracy" in r for r in runs) else {}),
    }


def run_folder(output_dir: str | os.PathLike, candidate_name: str, seed: int) -> Path:
    """The folder `compare_fusions` trains a candidate's seed in, under its `output_dir`.

    Example:
      >>> run_folder("runs", "concat mdrop=0.3", 1)
      PosixPath('runs/concat-mdrop-0-3/seed1')
    """
    slug = "".join(c if c.isalnum() else "-" for c in candidate_name).strip("-")
    return Path(output_dir) / slug / f"seed{seed}"
