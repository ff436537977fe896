"""The default fused model with one setting changed at a time, judged on the validation split (issue 18).

Trains the default classifier of a spec (every feature, `mmkeras.train`'s
defaults) once per seed and per `--variant`, each variant a name and a JSON
mapping of `train` options that differ from the defaults (`'wd=
{"weight_decay": 0.05}'`; `'default={}'` for the defaults themselves; a
`"fusion"` key picks the candidate's fusion, concat otherwise), with
`mmkeras.evaluation.comparison.compare_fusions`: test accuracy, macro-F1,
accuracy with each modality absent, and the accuracy on the spec's own
validation split. It also reads each run's history for the epoch of lowest
validation loss (the one early stopping keeps) and the epochs trained.

A variant is meant to be chosen by its validation accuracy, never by the
test column: the test split is what the issue's targets are read on.
`--batch-size` applies to every variant (a batch size is a variant of its own
run of the script).

Run: `python benchmarks/one_change.py --spec tuxpaint --seeds 8 --variant 'default={}'
'wd=0.05={"weight_decay": 0.05}'` (or `mmkeras bench one_change` with the same arguments).
Writes `benchmarks/results/<dataset>_one_change<suffix>.{json,md}`.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

from _report import save_report

RESULTS = Path(__file__).resolve().parent / "results"


def parse_variant(text: str) -> tuple[str, dict]:
    """A `--variant` value, `name=<JSON mapping of train options>`, as `(name, options)`.

    The name ends at the first "={" (so "wd=0.05" is a name).

    Raises:
      argparse.ArgumentTypeError: without a name, or when the part after it is not a JSON object.
    """
    cut = text.find("={")
    name, options = (text[:cut], text[cut + 1:]) if cut >= 0 else (text, "")
    try:
        value = json.loads(options)
    except json.JSONDecodeError:
        value = None
    if not name or not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected NAME=JSON such as 'wd={{\"weight_decay\": 0.05}}' or 'default={{}}', got {text!r}"
        )
    return name, value


def run(spec_name: str, variants: list[tuple[str, dict]], *, seeds: int, first_seed: int, epochs: int,
        batch_size: int, command: str) -> dict:
    """Train every variant on every seed; return `compare_fusions`' results with each run's best epoch added."""
    import numpy as np

    import mmkeras
    from mmkeras.evaluation.comparison import Candidate, compare_fusions, run_folder
    from mmkeras.training.run_dir import read_history

    spec = mmkeras.load_spec(spec_name)
    mmkeras.prepare(spec)
    candidates = [Candidate(name, spec.feature_names, options.get("fusion", "concat"),
                            {k: v for k, v in options.items() if k != "fusion"}) for name, options in variants]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mmkeras-one-change-") as folder:
        results = compare_fusions(spec, candidates=candidates, seeds=seeds, epochs=epochs, batch_size=batch_size,
                                  output_dir=folder, first_seed=first_seed)
        for run_row in results["runs"]:
            history = read_history(run_folder(folder, run_row["model"], run_row["seed"]) / "history.csv")
            monitored = history.get("val_loss") or history["loss"]
            run_row["best_epoch"] = int(np.argmin(monitored)) + 1
            run_row["epochs_trained"] = len(monitored)
    results.update(command=command, variants=dict(variants), wall_minutes=(time.perf_counter() - started) / 60)
    return results


def markdown(results: dict) -> str:
    """The results as a Markdown table, one row per variant (means over seeds, then each seed)."""
    budget = results["budget"]
    lines = [f"# One change at a time: `{results['dataset']}`", "",
             f"Command: `{results['command']}`  ",
             f"Budget per run: {budget['epochs']} epochs, batch {budget['batch_size']}, {budget['seeds']} seeds from "
             f"seed {budget['first_seed']}"
             + (f"; {results['wall_minutes']:.0f} minutes in all." if results.get("wall_minutes") else "."), "",
             "| variant | options | validation accuracy | test accuracy (per seed) | macro-F1 | best epoch / trained |",
             "|---|---|---|---|---|---|"]
    for row in results["rows"]:
        runs = [r for r in results["runs"] if r["model"] == row["model"]]
        validation = row.get("validation_accuracy_mean")
        lines.append(
            f"| {row['model']} | `{json.dumps(results['variants'][row['model']])}` | "
            + (f"{validation:.3f}" if validation is not None else "-")
            + f" | {row['accuracy_mean']:.3f} ± {row['accuracy_std']:.3f} ("
            + ", ".join(f"{r['accuracy']:.3f}" for r in runs) + f") | {row['macro_f1_mean']:.3f} | "
            + " ".join(f"{r['best_epoch']}/{r['epochs_trained']}" for r in runs) + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="tuxpaint")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--variant", nargs="+", type=parse_variant, required=True,
                        help="NAME=JSON train options, one model each, e.g. 'default={}' "
                             "'wd=0.05={\"weight_decay\": 0.05}'")
    parser.add_argument("--suffix", default="", help="added to the results' file names")
    args = parser.parse_args()
    results = run(args.spec, args.variant, seeds=args.seeds, first_seed=args.first_seed, epochs=args.epochs,
                  batch_size=args.batch_size, command="python benchmarks/one_change.py " + shlex.join(sys.argv[1:]))
    text = markdown(results)
    save_report(RESULTS, f"{results['dataset']}_one_change", results, text, suffix=args.suffix.lstrip("_"))
    print(text)


if __name__ == "__main__":
    main()
