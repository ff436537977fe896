"""Defaults that generalise (issue 18): carved validation splits, modality absence, small-data text.

Two parts, each saving what it measured in one run:

- `--part rows`: the default model (`mmkeras.train` defaults, concat fusion) on
  train+test-only copies of the bundled specs, so the validation split is
  carved automatically: group-disjoint by the spec's `group` column
  ("group"), stratified by class ("stratified"), or the spec's own
  validation split for reference ("own"). Per run: test accuracy, macro-F1,
  accuracy with each modality marked absent, the report's warnings, and each
  auxiliary head's train/validation loss gap (`generalisation_gaps`).
  Writes `results/generalising_defaults.{json,md}`.
- `--part text`: the text branch alone on tuxpaint (its own validation split),
  word tokens against character n-grams. Writes
  `results/small_data_text_tuxpaint.{json,md}`.

Run: `MMKERAS_DATA_DIR=../shared/data nice -n 5 python benchmarks/generalising_defaults.py --part rows`
(see `--help` for the budget options). Each finished run is appended to the
JSON at once, so a run cut short keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CARVES = ("group", "stratified", "own")


def train_and_measure(spec, carve: str, seed: int, epochs: int, folder: Path, **options) -> dict:
    """Train the defaults on `spec` with the given validation source; return the measured row."""
    import mmkeras
    from mmkeras.data.pipeline import make_dataset
    from mmkeras.data.validation import with_validation_split
    from mmkeras.evaluation.reliance import generalisation_gaps
    from mmkeras.training.run_dir import RunPaths

    if carve != "own":
        spec = spec.replace(splits={name: split for name, split in spec.splits.items() if name != "validation"})
    if carve == "stratified":
        spec = spec.replace(group=None)
    output = folder / f"{spec.name}-{carve}-{seed}"
    started = time.time()
    result = mmkeras.train(spec, epochs=epochs, seed=seed, output_dir=output, verbose=0, **options)
    seconds = time.time() - started
    report = mmkeras.evaluate(result.model, spec, "test")
    carved, _ = with_validation_split(spec, record=RunPaths(output).validation_split)
    batches = {split: make_dataset(carved, split, batch_size=64).as_numpy_iterator()
               for split in ("train", "validation")}
    summary = json.loads(RunPaths(output).summary.read_text())
    return {
        "dataset": spec.name, "carve": carve, "seed": seed, "epochs": epochs,
        "epochs_completed": summary["epochs_completed"], "best_epoch": summary["best_epoch"],
        "validation_split": summary.get("validation_split"),
        "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
        "absent": {name: scores["absent"] for name, scores in report["reliance"].items()},
        "warnings": report["warnings"],
        "gaps": generalisation_gaps(result.model, carved, batches),
        "train_seconds": round(seconds, 1),
    }


def text_row(spec, tokens: str, seed: int, epochs: int, folder: Path, token_dropout: float | None = None) -> dict:
    """The tuxpaint text branch alone with `tokens` (and `token_dropout`), on the spec's own validation split."""
    import mmkeras

    text_spec = spec.with_features(["text"])
    started = time.time()
    options = {"tokens": tokens} if token_dropout is None else {"tokens": tokens, "token_dropout": token_dropout}
    result = mmkeras.train(text_spec, epochs=epochs, seed=seed, output_dir=folder / f"text-{tokens}-{seed}",
                           verbose=0, branch_options={"text": options})
    if token_dropout is not None:
        tokens = f"{tokens}, token_dropout={token_dropout:g}"
    report = mmkeras.evaluate(result.model, text_spec, "test")
    return {"tokens": tokens, "seed": seed, "epochs": epochs, "epochs_completed": len(result.history["epoch"]),
            "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
            "parameters": int(result.model.count_params()), "train_seconds": round(time.time() - started, 1)}


def append(path: Path, command: str, row: dict) -> list[dict]:
    """Add a row to the JSON results (created with the command on first use); return every row."""
    data = json.loads(path.read_text()) if path.is_file() else {"command": command, "rows": []}
    data["rows"].append(row)
    path.write_text(json.dumps(data, indent=1))
    print(json.dumps(row), flush=True)
    return data["rows"]


def mean_std(values) -> str:
    import numpy as np

    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def header(title: str, command: str, machine: str, description: str) -> list[str]:
    """The first lines of a results file: title, reproducing command, machine, what was measured."""
    return [f"# {title}", "", f"Command: `{command}`  ", f"Machine: {machine}", "", description, ""]


def rows_markdown(command: str, rows: list[dict], machine: str) -> str:
    lines = header(
        "Defaults that generalise: carved validation splits (issue 18)", command, machine,
        "Default model (`mmkeras.train` defaults: concat, modality dropout 0.3, aux heads with gradient blending), test split. "
        "`group`: train+test-only spec, validation carved group-disjoint by the spec's `group` column "
        "(avmnist: speaker, tuxpaint: text); `stratified`: the same, carved by class only; `own`: the spec "
        "with its own validation split. Mean ± std over seeds; gaps are each auxiliary head's validation minus "
        "train loss after training (mean over seeds).",
    ) + ["| dataset | validation | seeds | held out | epochs run | accuracy | macro-F1 | accuracy with each modality "
         "absent | absence warnings | loss gap per head |", "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["carve"]), []).append(row)
    for (dataset, carve), runs in groups.items():
        names = list(runs[0]["absent"])
        absent = ", ".join(f"{name} {mean_std([r['absent'][name] for r in runs])}" for name in names)
        gaps = ", ".join(f"{name} {sum(r['gaps'][name]['gap'] for r in runs) / len(runs):.2f}" for name in runs[0]["gaps"])
        split = runs[0]["validation_split"]
        held = f"{split['carved']}/{split['of']}" if split else "own split"
        lines.append(
            f"| {dataset} | {carve} | {len(runs)} | {held} | {', '.join(str(r['epochs_completed']) for r in runs)} | "
            f"{mean_std([r['accuracy'] for r in runs])} | {mean_std([r['macro_f1'] for r in runs])} | {absent} | "
            f"{sum(len(r['warnings']) for r in runs)} | {gaps} |"
        )
    lines += ["", "No modality's absence should raise the accuracy by more than 1 point: per run, the largest gain "
              "from marking a modality absent:", ""]
    for row in rows:
        gain = max(row["absent"].values()) - row["accuracy"]
        lines.append(f"- {row['dataset']} {row['carve']} seed {row['seed']}: {100 * gain:+.1f} points "
                     f"({'met' if gain <= 0.01 else 'NOT met'})")
    return "\n".join(lines) + "\n"


def text_markdown(command: str, rows: list[dict], machine: str) -> str:
    lines = header(
        "Small-data text on tuxpaint: word tokens vs character n-grams (issue 18)", command, machine,
        "The text branch alone (tuxpaint's French descriptions), the spec's own validation split for early "
        "stopping, test split. `words`: word tokens, embedding, BiLSTM; `char_ngrams`: a bag of character "
        "2-, 3- and 4-grams; `token_dropout`: the share of training tokens replaced with the "
        "out-of-vocabulary id. Mean ± std over seeds.",
    ) + ["| tokens | seeds | accuracy | macro-F1 | parameters | epochs run | train s |", "|---|---|---|---|---|---|---|"]
    for tokens in dict.fromkeys(row["tokens"] for row in rows):
        runs = [row for row in rows if row["tokens"] == tokens]
        lines.append(f"| {tokens} | {len(runs)} | {mean_std([r['accuracy'] for r in runs])} | "
                     f"{mean_std([r['macro_f1'] for r in runs])} | {runs[0]['parameters']:,} | "
                     f"{', '.join(str(r['epochs_completed']) for r in runs)} | "
                     f"{sum(r['train_seconds'] for r in runs) / len(runs):.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("rows", "text"), required=True)
    parser.add_argument("--datasets", nargs="+", default=["avmnist", "tuxpaint"])
    parser.add_argument("--carves", nargs="+", choices=CARVES, default=["group", "stratified"])
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 for the first carve")
    parser.add_argument("--other-seeds", type=int, default=None, help="seeds for the other carves (default --seeds)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--tokens", nargs="+", default=["words", "char_ngrams"])
    parser.add_argument("--token-dropout", type=float, default=None,
                        help="the text branch's token_dropout in the text part (default: the branch's default)")
    parser.add_argument("--suffix", default="", help="added to the results' file names")
    args = parser.parse_args(argv)
    command = "python benchmarks/generalising_defaults.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    import mmkeras
    from mmkeras.evaluation.comparison import machine_description

    described = machine_description()
    load = [round(value, 2) for value in os.getloadavg()]
    machine = (f"{described['cpu_count']} CPUs (load average at the start {load}), TF {described['tensorflow']}, "
               f"GPUs: {', '.join(described['gpus']) or 'none'}")
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        if args.part == "text":
            path = RESULTS / f"small_data_text_tuxpaint{args.suffix}.json"
            path.unlink(missing_ok=True)
            spec = mmkeras.load_spec("tuxpaint")
            for seed in range(args.seeds):
                for tokens in args.tokens:
                    row = text_row(spec, tokens, seed, args.epochs, Path(folder), args.token_dropout)
                    rows = append(path, command, row)
            path.with_suffix(".md").write_text(text_markdown(command, rows, machine))
        else:
            path = RESULTS / f"generalising_defaults{args.suffix}.json"
            path.unlink(missing_ok=True)
            for index, carve in enumerate(args.carves):
                seeds = args.seeds if index == 0 or args.other_seeds is None else args.other_seeds
                for seed in range(seeds):
                    for dataset in args.datasets:
                        row = train_and_measure(mmkeras.load_spec(dataset), carve, seed, args.epochs, Path(folder))
                        rows = append(path, command, row)
                        path.with_suffix(".md").write_text(rows_markdown(command, rows, machine))
    print(path.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
