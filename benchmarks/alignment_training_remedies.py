"""Training-side hubness remedies on avmnist: temperature bounds and a memory queue of negatives.

Run `python benchmarks/alignment_training_remedies.py [--seeds 0 1] [--variants ...]`
(with `MMKERAS_DATA_DIR` pointing at a folder holding FSDD). It reuses the
alignment benchmark's machinery (`benchmarks/alignment.py`: its FULL avmnist
encoder and schedule, held-out classes and retrieval figures) on the
class-level, label-aware variant (`ContrastiveLoss(positives="labels")`), and
changes one training option at a time (`VARIANTS`): the temperature's bounds
and the length of the memory queue. Zero-shot and fine-tuning are left out to
keep the budget under 20 minutes on 2 CPU cores. The figures are saved after
every run in `benchmarks/results/alignment_avmnist_training_remedies.{json,md}`.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import alignment  # benchmarks/alignment.py: this script runs from the benchmarks folder

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DATASET = "avmnist"
# build_dual_encoder arguments of each variant; the baseline is the library's default (floor 0.01, no queue).
VARIANTS = {
    "labels": {},
    "labels_unbounded": {"min_temperature": None},
    "labels_bounds_0.1_1": {"initial_temperature": 0.1, "min_temperature": 0.1, "max_temperature": 1.0},
    "labels_queue256": {"queue_size": 256},
    "labels_queue1024": {"queue_size": 1024},
}
SCORINGS = ("cosine", "inverted_softmax")


def train_variant(spec, variant: str, seed: int) -> tuple:
    """Align the label-aware encoder with one variant's options; returns (encoder, training figures)."""
    from mmkeras.alignment.contrastive import ContrastiveLoss
    from mmkeras.alignment.pretrain import pretrain_encoder

    setting, options = alignment.SETTINGS[DATASET], alignment.FULL[DATASET]
    started = time.time()
    encoder, history = pretrain_encoder(
        spec, setting["modalities"], epochs=options["epochs"], batch_size=options["batch_size"],
        learning_rate=options["learning_rate"], loss=ContrastiveLoss(positives="labels"),
        exclude_classes=setting["holdout"], seed=seed, verbose=0, **options["encoder"], **VARIANTS[variant],
    )
    return encoder, {"first_loss": float(history.history["loss"][0]),
                     "final_loss": float(history.history["loss"][-1]), "temperature": encoder.temperature,
                     "seconds": round(time.time() - started, 1)}


def run(seeds=(0,), variants=tuple(VARIANTS), command: str = "") -> dict:
    """Train each variant once per seed (seed-major), measure retrieval, save after each run; return the figures."""
    import keras

    import mmkeras

    setting = alignment.SETTINGS[DATASET]
    spec = mmkeras.load_spec(DATASET)
    mmkeras.prepare(spec)
    spec = spec.with_features([f.name for f in alignment._features(spec, setting["modalities"])])
    started = time.time()
    figures = {"dataset": DATASET, "command": command, "variants": {v: VARIANTS[v] for v in variants},
               "settings": {"seeds": list(seeds), "loss": "ContrastiveLoss(positives='labels')",
                            "holdout": list(setting["holdout"]), **alignment._jsonable(alignment.FULL[DATASET])},
               "machine": f"{platform.machine()}, {alignment._cpu_count()} CPU cores, keras {keras.__version__}",
               "runs": {}}
    for seed in seeds:
        for variant in variants:
            print(f"[remedies] {variant}, seed {seed} ...", flush=True)
            encoder, training = train_variant(spec, variant, seed)
            figures["runs"][f"{variant}/seed{seed}"] = {
                "training": training,
                "retrieval": {scoring: alignment.retrieval_figures(encoder, spec, ("class",), setting["holdout"],
                                                                   scoring) for scoring in SCORINGS},
            }
            done = [s for s in seeds if all(f"{v}/seed{s}" in figures["runs"] for v in variants)]
            figures["summary"] = {v: alignment._mean_std([figures["runs"][f"{v}/seed{s}"] for s in done or [seed]])
                                  for v in variants if f"{v}/seed{(done or [seed])[0]}" in figures["runs"]}
            figures["seeds_complete"] = done
            figures["seconds"] = round(time.time() - started, 1)
            save(figures)
            print(f"[remedies] {variant}, seed {seed} done ({training['seconds']} s of training)", flush=True)
    return figures


def save(figures: dict) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"alignment_{DATASET}_training_remedies"
    path.with_suffix(".json").write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(format_markdown(figures), encoding="utf-8")


def format_markdown(figures: dict) -> str:
    """A table per scoring: class-level R@1/5/10, mean rank and hubness, both directions, per variant."""
    lines = [
        "# Training-side remedies for alignment: avmnist (image <-> audio)",
        "",
        f"Command: `{figures['command']}` ({figures['seconds']} s; {figures['machine']}).",
        "",
        f"Label-aware contrastive encoders (`{figures['settings']['loss']}`, the FULL avmnist budget of "
        f"`benchmarks/alignment.py`: {figures['settings']['epochs']} epochs, batch {figures['settings']['batch_size']}) "
        f"trained without the held-out classes {figures['settings']['holdout']}; seeds with every variant done: "
        f"{figures['seeds_complete']} (mean ± std over them). Variants (build_dual_encoder options): "
        + "; ".join(f"`{v}` {options or '(defaults: min_temperature 0.01, no max, queue_size 0)'}"
                    for v, options in figures["variants"].items()) + ".",
        "",
        "## Training",
        "",
        "| variant | first loss | final loss | temperature | seconds |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for variant, entry in figures["summary"].items():
        t = entry["training"]
        lines.append(f"| {variant} | {_pm(t['first_loss'])} | {_pm(t['final_loss'])} | {_pm(t['temperature'])} | "
                     f"{t['seconds']['mean']:.0f} |")
    lines += ["", "## Class-level retrieval on the test split", "",
              "| examples | direction | variant | scoring | R@1 | R@5 | R@10 | mean rank | N_k skew | hub q. |",
              "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for subset in ("all_test", "seen_classes"):
        for direction in ("image_to_audio", "audio_to_image"):
            for scoring in SCORINGS:
                for variant, entry in figures["summary"].items():
                    r = entry["retrieval"][scoring][f"{subset}/class"][direction]
                    lines.append(
                        f"| {subset} | {direction.replace('_to_', ' -> ')} | {variant} | {scoring} | "
                        f"{_pm(r['recall@1'])} | {_pm(r['recall@5'])} | {_pm(r['recall@10'])} | "
                        f"{r['mean_rank']['mean']:.1f} | {r['hubness']['skewness']['mean']:.2f} | "
                        f"{r['hubness']['queries_with_hub']['mean']:.2f} |")
            chance = next(iter(figures["summary"].values()))["retrieval"]["cosine"][f"{subset}/class"]["chance"]
            lines.append(f"| {subset} | | *chance* | | {chance['recall@1']['mean']:.3f} | "
                         f"{chance['recall@5']['mean']:.3f} | {chance['recall@10']['mean']:.3f} | "
                         f"{chance['mean_rank']['mean']:.1f} | | |")
    return "\n".join(lines) + "\n"


def _pm(entry, digits: int = 3) -> str:
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args(argv)
    arguments = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/alignment_training_remedies.py " + " ".join(shlex.quote(a) for a in arguments)
    figures = run(tuple(args.seeds), tuple(args.variants), command.strip())
    print(format_markdown(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
