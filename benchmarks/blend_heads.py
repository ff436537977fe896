"""Gradient blending's options on one dataset: smoothed weights, and predicting from every head (issue 18).

Trains the default fused model (concat, modality dropout 0.3,
`balance="gradient_blending"`) once per `--blend-smoothings` value and seed
(`mmkeras.evaluation.comparison.compare_fusions`: test accuracy, macro-F1 and
accuracy with each modality absent), optionally with unimodal baselines. Then,
offline, it reloads every blended run's `final.keras`, predicts the test split
with all its heads (the fused `probabilities` and each branch's `aux_<feature>`
head) and scores combinations of them in NumPy, to see whether serving a mix of
the heads would beat serving the fused head alone:

- "fused": the fused head alone (what `probabilities` serves today);
- "<feature> head": one auxiliary head alone;
- "mean of heads": the mean of the fused and auxiliary heads' probabilities;
- "blend-weighted heads": their mean weighted by the blending weights the
  run's last epoch trained with;
- "mean of aux heads": the auxiliary heads only (a late fusion of the branches).

With `--unimodal`, it also scores the fused model against the unimodal models
trained apart (same seed, label smoothing and branch options): their mean,
the fused model averaged with them, and the share of test examples at least
one unimodal model names.

`--modality-dropout` takes one or more values, each a rate or a JSON mapping of
rates per modality (`'{"text": 0.5, "image": 0.3, "audio": 0.3}'`); every
smoothing is trained with each of them. `--branch-options` likewise takes one or
more JSON mappings of branch options by modality (`'{"text":
{"rare_token_dropout": 0}}'`; `{}` is the defaults); every model, the unimodal
references included, is trained with each, and so is each of `--class-weights`
(`none`, `balanced`, `sqrt`; `default` leaves `train`'s own).

Run: `python benchmarks/blend_heads.py --spec tuxpaint --seeds 2 --epochs 10 --blend-smoothings 0 0.5 --unimodal text`.
Writes `benchmarks/results/<dataset>_blend_heads<suffix>.{json,md}`.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def parse_modality_dropout(text: str) -> float | dict:
    """A `--modality-dropout` value: a rate ("0.3") or a JSON mapping of rates ('{"text": 0.5, "image": 0.3}').

    Raises:
      argparse.ArgumentTypeError: for anything else (the classifier checks the names and rates).
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        return value
    raise argparse.ArgumentTypeError(
        f"expected a rate such as 0.3 or a JSON mapping such as '{{\"text\": 0.5, \"image\": 0.3}}', got {text!r}"
    )


def modality_dropout_label(modality_dropout: float | dict) -> str:
    """How a model's name shows its modality dropout: "0.3", or "text:0.5/image:0.3/audio:0.3"."""
    if isinstance(modality_dropout, dict):
        return "/".join(f"{name}:{rate:g}" for name, rate in modality_dropout.items())
    return f"{modality_dropout:g}"


def parse_branch_options(text: str) -> dict:
    """A `--branch-options` value: a JSON mapping of branch options by modality or feature name.

    Raises:
      argparse.ArgumentTypeError: for anything that is not a JSON object of objects.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict) and all(isinstance(options, dict) for options in value.values()):
        return value
    raise argparse.ArgumentTypeError(
        f"expected a JSON mapping such as '{{\"text\": {{\"rare_token_dropout\": 0}}}}', got {text!r}"
    )


def branch_options_label(branch_options: dict) -> str:
    """What a row's name gets for its branch options ("" for the defaults), e.g. " text.rare_token_dropout=0"."""
    return "".join(f" {branch}.{name}={value}" for branch, options in branch_options.items()
                   for name, value in options.items())


def label_smoothing_label(label_smoothing: float) -> str:
    """What a row's name gets for its label smoothing ("" for none, the defaults until 2026-12-04)."""
    return f" label_smoothing={label_smoothing:g}" if label_smoothing else ""


def class_weight_options(class_weight: str) -> tuple[dict, str]:
    """A `--class-weights` value's training options and row-name tag ("default": `train`'s own, untagged)."""
    if class_weight == "default":
        return {}, ""
    return {"class_weight": None if class_weight == "none" else class_weight}, f" class_weight={class_weight}"


def head_predictions(model_path: Path, spec) -> tuple[dict, object]:
    """`({output name: (N, C) probabilities}, labels)` of a saved classifier on the test split."""
    import numpy as np

    import mmkeras

    model = mmkeras.load_classifier(model_path)
    inputs = set(model.input)  # a unimodal model reads only its own feature (and its presence flag)
    outputs, labels = {}, []
    for features, batch_labels in mmkeras.make_dataset(spec, "test", batch_size=64, deterministic=True):
        labels.append(batch_labels.numpy().reshape(-1))
        for name, value in model({k: v for k, v in features.items() if k in inputs}, training=False).items():
            outputs.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(parts) for name, parts in outputs.items()}, np.concatenate(labels)


def head_combinations(outputs: dict, labels, blend_weights: dict) -> dict:
    """Test accuracy of the fused head, each auxiliary head and three mixes of them (see the module docstring).

    Args:
      outputs: the classifier's outputs on the test split (`probabilities`, `aux_<feature>`).
      labels: the test labels.
      blend_weights: `{head: weight}` with heads "fused" and the feature names (equal when empty).
    """
    import numpy as np

    features = [name[len("aux_"):] for name in outputs if name.startswith("aux_")]
    heads = {"fused": outputs["probabilities"], **{f: outputs[f"aux_{f}"] for f in features}}

    def accuracy(probabilities):
        return float(np.mean(np.argmax(probabilities, axis=1) == labels))

    weights = np.array([blend_weights.get(name, 1.0) for name in heads])  # equal without blending
    return {
        "fused": accuracy(heads["fused"]),
        **{f"{feature} head": accuracy(heads[feature]) for feature in features},
        "mean of heads": accuracy(np.mean(list(heads.values()), axis=0)),
        "blend-weighted heads": accuracy(np.tensordot(weights / weights.sum(), np.stack(list(heads.values())), 1)),
        "mean of aux heads": accuracy(np.mean([heads[f] for f in features], axis=0)),
    }


def ensemble_combinations(fused, unimodal: dict, labels) -> dict:
    """Test accuracy of averaging the fused model with separately trained unimodal models (same seed).

    Args:
      fused: the fused model's (N, C) test probabilities.
      unimodal: `{feature: (N, C) probabilities}` of the models trained on one feature alone.
      labels: the test labels.

    Returns:
      "mean of unimodal models" (a late fusion of models trained apart), "fused + unimodal models",
      "fused + <feature> model" per feature, and "any unimodal model right": the share of examples at
      least one unimodal model names, a bound on what choosing between them could reach.
    """
    import numpy as np

    def accuracy(probabilities):
        return float(np.mean(np.argmax(probabilities, axis=1) == labels))

    models = list(unimodal.values())
    right = np.stack([np.argmax(p, axis=1) == labels for p in models])
    return {
        "mean of unimodal models": accuracy(np.mean(models, axis=0)),
        "fused + unimodal models": accuracy(np.mean([fused, *models], axis=0)),
        **{f"fused + {feature} model": accuracy((fused + p) / 2) for feature, p in unimodal.items()},
        "any unimodal model right": float(np.mean(right.any(axis=0))),
    }


def run(spec_name: str, *, seeds: int, epochs: int, batch_size: int = 32, smoothings=(0.0,), unimodal=(),
        modality_dropouts=(0.3,), label_smoothings=(0.0,), branch_options=({},), class_weights=("default",),
        first_seed: int = 0, suffix: str = "", command: str = "") -> dict:
    """Train, evaluate and score the head mixes; save `<dataset>_blend_heads<suffix>.{json,md}`; return the figures.

    Every smoothing is trained with each of `modality_dropouts` (a rate, or a mapping of rates per modality),
    each of `label_smoothings` (the crossentropy's label smoothing), each of `class_weights` ("default", "none",
    "balanced", "sqrt") and each of `branch_options` (a mapping of branch options by modality; the unimodal
    references get them too, and the same label smoothings and class weights).
    """
    import numpy as np

    import mmkeras
    from mmkeras.evaluation.comparison import (
        Candidate,
        compare_fusions,
        make_candidates,
        run_folder,
    )
    from mmkeras.training.run_dir import read_history

    spec = mmkeras.load_spec(spec_name)
    mmkeras.prepare(spec)
    candidates = []
    tags = {}  # candidate -> its training setting's tag: the unimodal models a fused one is mixed with share it
    settings = []  # (branch options, label smoothing, class-weight options, the row names' tag)
    for branches in branch_options:
        for label_smoothing in label_smoothings:
            for class_weight in class_weights:
                weighting, weighting_tag = class_weight_options(class_weight)
                tag = label_smoothing_label(label_smoothing) + weighting_tag + branch_options_label(branches)
                settings.append((branches, label_smoothing, weighting, tag))
    for branches, label_smoothing, weighting, tag in settings:  # the unimodal references: the same settings
        for unimodal_candidate in make_candidates(spec, fusions=(), modality_dropouts=()):
            if unimodal_candidate.features[0] in unimodal:
                tags[unimodal_candidate.name + tag] = tag
                candidates.append(Candidate(
                    unimodal_candidate.name + tag,
                    unimodal_candidate.features, unimodal_candidate.fusion,
                    {**unimodal_candidate.options, "label_smoothing": float(label_smoothing), **weighting,
                     **({"branch_options": branches} if branches else {})},
                ))
    for branches, label_smoothing, weighting, tag in settings:
        for modality_dropout in modality_dropouts:
            for smoothing in smoothings:
                options = {"modality_dropout": modality_dropout, "balance": "gradient_blending",
                           "blend_smoothing": float(smoothing), "label_smoothing": float(label_smoothing), **weighting,
                           **({"branch_options": branches} if branches else {})}
                name = (f"concat mdrop={modality_dropout_label(modality_dropout)} gradient_blending "
                        f"smoothing={smoothing:g}" + tag)
                tags[name] = tag
                candidates.append(Candidate(name, spec.feature_names, "concat", options))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mmkeras-blend-heads-") as folder:
        results = compare_fusions(spec, candidates=candidates, seeds=seeds, epochs=epochs, batch_size=batch_size,
                                  output_dir=folder, first_seed=first_seed)
        unimodal_outputs, fused_outputs = {}, {}
        for run_row in results["runs"]:
            run_dir = run_folder(folder, run_row["model"], run_row["seed"])
            outputs, labels = head_predictions(run_dir / "final.keras", spec)
            if len(run_row["features"]) < 2:
                unimodal_outputs.setdefault((tags[run_row["model"]], run_row["seed"]), {})[
                    run_row["features"][0]] = outputs["probabilities"]
                continue
            history = read_history(run_dir / "history.csv")
            weights = {name[len("blend_weight_"):]: values for name, values in history.items()
                       if name.startswith("blend_weight_")}
            run_row["blend_weights"] = weights
            run_row["heads"] = head_combinations(outputs, labels, {h: w[-1] for h, w in weights.items()})
            fused_outputs[id(run_row)] = outputs["probabilities"]
        for run_row in results["runs"]:
            alone = unimodal_outputs.get((tags[run_row["model"]], run_row["seed"]))
            if id(run_row) in fused_outputs and alone:
                run_row["ensembles"] = ensemble_combinations(fused_outputs[id(run_row)], alone, labels)
    for row in results["rows"]:
        for key in ("heads", "ensembles"):
            runs = [r for r in results["runs"] if r["model"] == row["model"] and key in r]
            if runs:
                row[key] = {name: [float(np.mean([r[key][name] for r in runs])),
                                   float(np.std([r[key][name] for r in runs], ddof=1)) if len(runs) > 1 else 0.0]
                            for name in runs[0][key]}
    results["wall_minutes"] = (time.perf_counter() - started) / 60
    results["command"] = command
    write_results(results, f"{spec.name}_blend_heads{suffix}")
    return results


def write_results(results: dict, stem: str, directory: Path = RESULTS) -> None:
    """Save the figures as JSON and as Markdown tables (models, then head mixes, then weights) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stem}.json").write_text(json.dumps(results, indent=2))
    budget, machine = results["budget"], results["machine"]
    features = list(results["rows"][-1]["absent_accuracy"])
    lines = [
        f"# Gradient blending's options: `{results['dataset']}`", "",
        f"Command: `{results['command']}`  ",
        (f"Budget per run: {budget['epochs']} epochs, batch {budget['batch_size']}, {budget['seeds']} seeds "
         f"from seed {budget['first_seed']}, {budget['train_examples']} training examples; test split; "
         f"{results['wall_minutes']:.0f} minutes in all.  "),
        f"Machine: {machine['cpu_count']} CPUs, {machine['platform']}, TF {machine['tensorflow']}", "",
        "| model | accuracy (per seed) | macro-F1 | " + " | ".join(f"acc. without {f}" for f in features)
        + " | validation accuracy |",
        "|---|---|---|" + "---|" * len(features) + "---|",
    ]
    for row in results["rows"]:
        per_seed = ", ".join(f"{r['accuracy']:.3f}" for r in results["runs"] if r["model"] == row["model"])
        absent = [f"{row['absent_accuracy'][f]:.3f}" if f in row["absent_accuracy"] else "-" for f in features]
        lines.append(f"| {row['model']} | {row['accuracy_mean']:.3f} ± {row['accuracy_std']:.3f} ({per_seed}) | "
                     f"{row['macro_f1_mean']:.3f} ± {row['macro_f1_std']:.3f} | " + " | ".join(absent)
                     + (f" | {row['validation_accuracy_mean']:.3f} |" if "validation_accuracy_mean" in row else " | - |"))
    mixed = [row for row in results["rows"] if "heads" in row]
    if mixed:
        names = list(mixed[0]["heads"])
        lines += ["", ("Test accuracy of each head and of mixes of the heads' probabilities, from each run's saved "
                       "`final.keras` (offline, NumPy):"), "",
                  "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        lines += [f"| {row['model']} | " + " | ".join(f"{row['heads'][n][0]:.3f} ± {row['heads'][n][1]:.3f}"
                                                    for n in names) + " |" for row in mixed]
        ensembled = [row for row in mixed if "ensembles" in row]
        if ensembled:
            names = list(ensembled[0]["ensembles"])
            lines += ["", ("The fused model against the unimodal models trained apart with the same seed and options: "
                           "test accuracy of their mean probabilities, and the share of examples at least one "
                           "unimodal model names:"), "",
                      "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            lines += [f"| {row['model']} | " + " | ".join(f"{row['ensembles'][n][0]:.3f} ± {row['ensembles'][n][1]:.3f}"
                                                        for n in names) + " |" for row in ensembled]
        lines += ["", "Gradient-blending weights each epoch trained with (epoch 1 first):", "",
                  "| run | head | weights |", "|---|---|---|"]
        for run_row in results["runs"]:
            for head, values in run_row.get("blend_weights", {}).items():
                lines.append(f"| {run_row['model']} seed {run_row['seed']} | {head} | "
                             f"{' '.join(f'{w:.2f}' for w in values)} |")
    (directory / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    from mmkeras.training.config import CLASS_WEIGHT_POWERS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="tuxpaint")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--blend-smoothings", nargs="*", type=float, default=[0.0],
                        help="gradient blending's blend_smoothing values, one blended model each (none: unimodal rows only)")
    parser.add_argument("--modality-dropout", nargs="+", type=parse_modality_dropout, default=[0.3],
                        help="the blended models' modality dropout, one model each: a rate, or a JSON mapping of "
                             "rates per modality, e.g. '{\"text\": 0.5, \"image\": 0.3, \"audio\": 0.3}'")
    parser.add_argument("--label-smoothings", nargs="+", type=float, default=[0.0],
                        help="the blended models' label smoothing, one model each")
    parser.add_argument("--branch-options", nargs="+", type=parse_branch_options, default=[{}],
                        help="JSON mappings of branch options by modality, one set of models each ({} = defaults), "
                             "e.g. '{\"text\": {\"rare_token_dropout\": 0}}'")
    parser.add_argument("--class-weights", nargs="+", default=["default"],
                        choices=["default", "none", *CLASS_WEIGHT_POWERS],
                        help="class weightings, one set of models each (the unimodal references too); "
                             "default: train's own, untagged")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--unimodal", nargs="*", default=[], help="features also trained alone, for reference")
    parser.add_argument("--suffix", default="", help="added to the results' file names")
    args = parser.parse_args()
    results = run(args.spec, seeds=args.seeds, epochs=args.epochs, batch_size=args.batch_size,
                  smoothings=tuple(args.blend_smoothings), unimodal=tuple(args.unimodal),
                  modality_dropouts=tuple(args.modality_dropout), label_smoothings=tuple(args.label_smoothings),
                  branch_options=tuple(args.branch_options), class_weights=tuple(args.class_weights),
                  first_seed=args.first_seed, suffix=args.suffix,
                  command="python benchmarks/blend_heads.py " + shlex.join(sys.argv[1:]))
    print((RESULTS / f"{results['dataset']}_blend_heads{args.suffix}.md").read_text())


if __name__ == "__main__":
    main()
