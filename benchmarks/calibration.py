"""Calibration and attribution benchmark: ECE before/after temperature scaling; attribution shares next to reliance.

For each dataset spec it trains the default classifier (`mmkeras.train`, which
calibrates on the validation split), evaluates it on the test split
(`mmkeras.evaluate`: ECE with 15 bins, NLL and Brier score before and after,
with every input and with each modality absent; occlusion attribution shares;
modality reliance), and evaluates the same model calibrated with one
temperature per presence pattern. Everything in the tables is measured in this
one run.

Run: `python benchmarks/calibration.py --spec avmnist --spec tuxpaint --epochs 4`
(or `mmkeras bench calibration ...`). Writes `benchmarks/results/calibration.{json,md}`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def run_one(spec_name: str, *, epochs: int, batch_size: int, seed: int, work_dir: Path) -> dict:
    """Train, calibrate and evaluate one spec; return its figures."""
    import mmkeras
    from mmkeras.models.calibration import temperatures_of

    started = time.perf_counter()
    spec = mmkeras.load_spec(spec_name)
    result = mmkeras.train(spec, epochs=epochs, batch_size=batch_size, seed=seed, output_dir=work_dir / spec_name,
                           verbose=2)
    train_minutes = (time.perf_counter() - started) / 60
    report = mmkeras.evaluate(result.model, spec, "test", batch_size=64, output_dir=work_dir / spec_name / "evaluation")
    per_pattern = mmkeras.calibrate(result.model, spec, "validation", per_pattern=True)
    pattern_report = mmkeras.evaluate(per_pattern, spec, "test", batch_size=64)
    calibration = json.loads((result.run_dir / "calibration.json").read_text())["final"]
    rows = []
    for pattern, figures in report["calibration"]["patterns"].items():
        after_pattern = pattern_report["calibration"]["patterns"][pattern]["after"]
        rows.append({
            "pattern": pattern,
            "accuracy": figures["before"]["accuracy"],
            **{f"{name}_before": figures["before"][name] for name in ("ece", "nll", "brier")},
            **{f"{name}_after": figures["after"][name] for name in ("ece", "nll", "brier")},
            **{f"{name}_after_per_pattern": after_pattern[name] for name in ("ece", "nll", "brier")},
            "mean_confidence_before": _mean_confidence(figures["before"]["bins"]),
        })
    return {
        "dataset": spec.name,
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "num_test_examples": report["num_examples"],
        "train_minutes": round(train_minutes, 1),
        "accuracy": report["accuracy"],
        "temperature": calibration["temperatures"][0],
        "validation_nll": {"before": calibration["nll_before"], "after": calibration["nll_after"]},
        "per_pattern_temperatures": dict(zip(
            ["all / several absent"] + [f"{name} absent" for name in spec.feature_names],
            temperatures_of(per_pattern),
        )),
        "calibration": rows,
        "attribution_share": report["attribution"]["overall"],
        "attribution_share_per_class": report["attribution"]["per_class"],
        "reliance_absent_drop": {name: value["absent_drop"] for name, value in report["reliance"].items()},
    }


def _mean_confidence(bins: dict) -> float:
    total = sum(bins["count"])
    return sum(c * n for c, n in zip(bins["confidence"], bins["count"]) if c is not None) / max(total, 1)


def _order(values: dict) -> list[str]:
    return sorted(values, key=lambda name: -values[name])


def write_results(results: dict, directory: Path = RESULTS, stem: str = "calibration") -> Path:
    """Write `<stem>.json` and `<stem>.md` from one run's results."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stem}.json").write_text(json.dumps(results, indent=2))
    lines = [
        "# Calibration and per-modality attribution", "",
        f"Command: `{results['command']}`  ",
        f"Machine: {results['machine']}; {results['wall_minutes']:.1f} minutes in all; load average (1, 5, 15 min) "
        f"at the end {results.get('load_average', 'not recorded')}.  ",
        f"Budget: {results['note']}", "",
        "Default classifier (`mmkeras.train` defaults but the epochs), calibrated by `train` on the validation "
        "split with one temperature; scored on the test split. ECE: 15 equal-width bins. \"per pattern\": the same "
        "model calibrated with one temperature per presence pattern (`mmkeras.calibrate(..., per_pattern=True)`).", "",
    ]
    for dataset in results["datasets"]:
        lines += [
            f"## `{dataset['dataset']}` ({dataset['epochs']} epochs, test accuracy {dataset['accuracy']:.3f}, "
            f"{dataset['num_test_examples']} test examples)", "",
            f"Temperature {dataset['temperature']:.3f}; validation NLL {dataset['validation_nll']['before']:.4f} -> "
            f"{dataset['validation_nll']['after']:.4f}. Per-pattern temperatures: "
            + ", ".join(f"{k} {v:.3f}" for k, v in dataset["per_pattern_temperatures"].items()) + ".", "",
            "| test inputs | accuracy | mean confidence | ECE before | ECE after | ECE after (per pattern) | NLL before "
            "| NLL after | Brier before | Brier after |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in dataset["calibration"]:
            lines.append(
                f"| {row['pattern']} | {row['accuracy']:.3f} | {row['mean_confidence_before']:.3f} | "
                f"{row['ece_before']:.3f} | {row['ece_after']:.3f} | {row['ece_after_per_pattern']:.3f} | "
                f"{row['nll_before']:.3f} | {row['nll_after']:.3f} | {row['brier_before']:.3f} | "
                f"{row['brier_after']:.3f} |"
            )
        shares, drops = dataset["attribution_share"], dataset["reliance_absent_drop"]
        agree = _order(shares) == _order(drops)
        lines += [
            "", "| modality | occlusion attribution share (mean, test) | reliance: accuracy drop when absent |",
            "|---|---|---|",
            *[f"| {name} | {shares[name]:.3f} | {drops[name]:.3f} |" for name in shares],
            "", f"Order by attribution share: {', '.join(_order(shares))}; by reliance drop: "
            f"{', '.join(_order(drops))} ({'the same' if agree else 'they differ'}).", "",
        ]
    path = directory / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", action="append", help="dataset spec (repeatable); default avmnist and tuxpaint")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import tensorflow as tf

    specs = args.spec or ["avmnist", "tuxpaint"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        datasets = [run_one(name, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, work_dir=Path(work))
                    for name in specs]
    results = {
        "command": "python benchmarks/calibration.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine": f"{platform.platform()}, TF {tf.__version__}",
        "note": f"one seed, {args.epochs} epochs per dataset (short: the calibration and attribution figures, "
                "not the accuracy, are the point here; the accuracy tables are in *_fusion.md)",
        "wall_minutes": (time.perf_counter() - started) / 60,
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "datasets": datasets,
    }
    print(write_results(results).read_text())


if __name__ == "__main__":
    main()
