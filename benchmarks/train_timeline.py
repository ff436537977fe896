"""Where the first epoch of `mmkeras.train` goes: set-up, first step, first epoch, in fresh processes.

Run `python benchmarks/train_timeline.py [--spec avmnist] [--epochs 2] [--rounds 2] [--compare-with DIR]`
(or `mmkeras bench timeline ...`). Each round runs `mmkeras.train` once in a fresh Python process, as a
user's command does, and marks the time of: the imports done, the start of training (`on_train_begin`),
the first epoch's start, the first training step's end, the first epoch's end (its callbacks
included) and `train` returning. With `--compare-with DIR` (a checkout of another commit, e.g. made
with `git worktree add --detach DIR <commit>`) that checkout's rounds alternate with this one's, so a
shared machine's load falls on both alike. Printed and saved in
`benchmarks/results/train_timeline_<spec>.{json,md}` (`--suffix` appends to the name).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import commit_of, save_report

PROCESS_START = time.perf_counter()
RESULTS_DIR = Path(__file__).resolve().parent / "results"
CHECKOUT = Path(__file__).resolve().parent.parent
# Figure -> (from mark, to mark).
SPANS = {
    "set_up": ("imported", "train_begin"),
    "before_first_step": ("train_begin", "epoch_begin"),
    "first_step": ("epoch_begin", "first_step_end"),
    "first_epoch": ("train_begin", "first_epoch_end"),
    "imported_to_first_epoch_end": ("imported", "first_epoch_end"),
    "after_last_epoch": ("last_epoch_end", "returned"),
}


def measure(spec_name: str, epochs: int, features: list[str] | None = None) -> dict:
    """In this process: train once (on `features` only, if given) and return the marks, in seconds."""
    import keras

    import mmkeras

    marks = {"imported": time.perf_counter() - PROCESS_START}

    def mark(name):
        marks.setdefault(name, time.perf_counter() - PROCESS_START)

    class Marks(keras.callbacks.Callback):  # runs after the run's own callbacks
        def on_train_begin(self, logs=None):
            mark("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            mark("epoch_begin")

        def on_train_batch_end(self, batch, logs=None):
            mark("first_step_end")

        def on_epoch_end(self, epoch, logs=None):
            mark("first_epoch_end")
            marks["last_epoch_end"] = time.perf_counter() - PROCESS_START
            marks["epochs"] = marks.get("epochs", 0) + 1

    with tempfile.TemporaryDirectory() as run_dir:
        spec = mmkeras.load_spec(spec_name)
        spec = spec.with_features(features) if features else spec
        mmkeras.train(spec, epochs=epochs, seed=0, output_dir=run_dir, verbose=0, callbacks=[Marks()])
        mark("returned")
    return {name: round(value, 3) for name, value in marks.items()}


def spans(marks: dict) -> dict:
    """The figures of one round (seconds between marks; a steady epoch: the mean of the later epochs)."""
    figures = {name: round(marks[end] - marks[start], 3) for name, (start, end) in SPANS.items()}
    if marks.get("epochs", 1) > 1:
        figures["steady_epoch"] = round((marks["last_epoch_end"] - marks["first_epoch_end"]) / (marks["epochs"] - 1), 3)
    return figures


def run(spec_name: str, epochs: int, rounds: int, other: Path | None, features: list[str] | None = None) -> dict:
    """Alternate fresh processes of the checkouts and summarise them."""
    checkouts = {"this checkout": CHECKOUT, **({"other checkout": other} if other else {})}
    runs: dict[str, list[dict]] = {label: [] for label in checkouts}
    load_start = [round(value, 2) for value in os.getloadavg()]
    for round_ in range(rounds):
        for label, checkout in reversed(checkouts.items()):
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")]),
                   "TF_CPP_MIN_LOG_LEVEL": "3"}
            done = subprocess.run([sys.executable, __file__, "--measure", "--spec", spec_name, "--epochs", str(epochs),
                                   *(["--features", *features] if features else [])],
                                  env=env, capture_output=True, text=True, check=False)
            if done.returncode:
                raise RuntimeError(f"The round in {checkout} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
            figures = spans(json.loads(done.stdout.strip().splitlines()[-1]))
            runs[label].append(figures)
            print(json.dumps({"round": round_, "checkout": label, **figures}), flush=True)
    medians = {label: {key: round(statistics.median(row[key] for row in rows), 3) for key in rows[0]}
               for label, rows in runs.items()}
    return {
        "command": "python benchmarks/train_timeline.py " + " ".join(sys.argv[1:]),
        "spec": spec_name, "features": features, "epochs": epochs, "rounds": rounds,
        "commits": {label: commit_of(path) for label, path in checkouts.items()},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_at_start": load_start, "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "runs": runs, "medians": medians,
    }


def format_markdown(report: dict) -> str:
    """The report as a Markdown table of medians (seconds)."""
    lines = [
        f"# Where the first epoch goes: {report['spec']}"
        + (f" ({', '.join(report['features'])} only)" if report.get("features") else ""),
        "",
        (f"`{report['command']}`; {report['machine']}; `mmkeras.train` defaults, {report['epochs']} epochs, in a "
         f"fresh process per round; medians of {report['rounds']} rounds per checkout, alternating. Measured "
         f"{report['date']}; load average {report['load_average_at_start']} at the start, "
         f"{report['load_average_at_end']} at the end. First epoch: from the start of training (after the run's "
         f"own `on_train_begin`) to the end of the first epoch's callbacks. Steady epoch: the mean of the later epochs."),
        "",
        "| seconds | " + " | ".join(f"{label} ({report['commits'][label]})" for label in report["medians"]) + " |",
        "| --- |" + " ---: |" * len(report["medians"]),
    ]
    for key in next(iter(report["medians"].values())):
        lines.append(f"| {key.replace('_', ' ')} | "
                     + " | ".join(str(figures[key]) for figures in report["medians"].values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="avmnist", help="bundled spec name or YAML path (default: avmnist)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compare-with", type=Path, help="a checkout of another commit, to alternate with")
    parser.add_argument("--features", nargs="+", help="train on these features of the spec only (e.g. text)")
    parser.add_argument("--suffix", default="")
    parser.add_argument("--output-dir", default=str(RESULTS_DIR))
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one round, as JSON
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.spec, args.epochs, args.features)))
        return 0
    if args.compare_with is not None and not (args.compare_with / "mmkeras").is_dir():
        parser.error(f"--compare-with must name a checkout with an mmkeras/ folder, e.g. one made with "
                     f"`git worktree add --detach /tmp/before <commit>`; got {args.compare_with}.")
    report = run(args.spec, args.epochs, args.rounds, args.compare_with.resolve() if args.compare_with else None,
                 args.features)
    markdown = format_markdown(report)
    print(markdown)
    save_report(args.output_dir, f"train_timeline_{Path(args.spec).stem}", report, markdown, suffix=args.suffix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
