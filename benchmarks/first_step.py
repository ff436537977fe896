"""The first training step (trace, graph optimisation, first execution): this checkout against another.

Run `python benchmarks/first_step.py --compare-with PATH [--spec avmnist] [--rounds 3]` (or `mmkeras bench
first_step ...`), where PATH is a checkout of an older commit (`git worktree add --detach /tmp/before
<commit>`). Each measurement runs in a fresh Python process with that checkout first on
`sys.path`: it builds and compiles the spec's default classifier as `mmkeras.train` does (`build_and_compile`, then
`TrainingView.build_for` where the checkout has it), and times the model build, the first
training step on one batch of the real train split and the first evaluation step. The two
checkouts alternate, `--rounds` times each, so a shared machine's load falls on both alike;
the figures are medians and their ratios. Printed and saved in
`benchmarks/results/first_step_<spec>.{json,md}`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _report import commit_of

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CHECKOUT = Path(__file__).resolve().parent.parent


def measure(spec_name: str, batch_size: int) -> dict:
    """In this process: seconds to build, to run the first training step and the first evaluation step."""
    import tensorflow as tf

    from mmkeras.data.pipeline import make_dataset
    from mmkeras.datasets import prepare
    from mmkeras.spec import load_spec
    from mmkeras.training.config import ModelConfig, RuntimeConfig, TrainingConfig
    from mmkeras.training.loop import build_and_compile
    from mmkeras.training.strategy import resolve_runtime

    spec = load_spec(spec_name)
    prepare(spec)
    data = make_dataset(spec, "train", batch_size=batch_size, training=True, seed=0)
    one = tf.data.Dataset.from_tensors(next(iter(data)))
    started = time.perf_counter()
    _, trainer = build_and_compile(spec, ModelConfig(), TrainingConfig(seed=0, epochs=8), resolve_runtime(RuntimeConfig()),
                                   steps_per_epoch=100)
    if hasattr(trainer, "build_for"):  # the step `mmkeras.train` takes before `fit` where it exists
        trainer.build_for(data.element_spec)
    built = time.perf_counter()
    trainer.fit(one, epochs=1, verbose=0)
    stepped = time.perf_counter()
    trainer.evaluate(one, verbose=0)
    evaluated = time.perf_counter()
    return {"build_seconds": built - started, "first_step_seconds": stepped - built,
            "first_evaluation_seconds": evaluated - stepped}


def run(spec_name: str, other: Path, rounds: int, batch_size: int) -> dict:
    """Alternate fresh processes of both checkouts and return the report."""
    def one(checkout: Path) -> dict:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")]),
               "TF_CPP_MIN_LOG_LEVEL": "3"}
        command = [sys.executable, __file__, "--measure", "--spec", spec_name, "--batch-size", str(batch_size)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    runs = {"this checkout": [], "other checkout": []}
    load_start = [round(value, 2) for value in os.getloadavg()]
    for round_ in range(rounds):
        for label, checkout in (("other checkout", other), ("this checkout", CHECKOUT)):
            runs[label].append(one(checkout))
            print(json.dumps({"round": round_, "checkout": label, **runs[label][-1]}), flush=True)
    medians = {label: {key: round(statistics.median(r[key] for r in rows), 3) for key in rows[0]}
               for label, rows in runs.items()}
    return {
        "spec": spec_name, "batch_size": batch_size, "rounds": rounds, "other": str(other),
        "other_commit": commit_of(other), "this_commit": commit_of(CHECKOUT),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_start": load_start, "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": runs, "medians": medians,
        "ratios": {key: round(medians["this checkout"][key] / medians["other checkout"][key], 2)
                   for key in medians["this checkout"]},
    }


def format_markdown(report: dict) -> str:
    """The report as a Markdown table."""
    lines = [
        f"# First training step: {report['spec']}",
        "",
        (f"`python benchmarks/first_step.py --compare-with <checkout of {report['other_commit']}> --rounds "
         f"{report['rounds']}`; this checkout {report['this_commit']}; {report['machine']}; batch "
         f"{report['batch_size']}; medians of {report['rounds']} fresh processes per checkout, alternating. "
         f"Measured {report['date']}; load average {report['load_average_at_start']} at the start, "
         f"{report['load_average_at_end']} at the end."),
        "",
        f"| seconds | {report['other_commit']} | {report['this_commit']} | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, ratio in report["ratios"].items():
        lines.append(f"| {key.replace('_seconds', '').replace('_', ' ')} | {report['medians']['other checkout'][key]} "
                     f"| {report['medians']['this checkout'][key]} | {ratio}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare-with", type=Path, help="a checkout of another commit")
    parser.add_argument("--spec", default="avmnist", help="bundled spec name or YAML path (default: avmnist)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output-dir", default=str(RESULTS_DIR))
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one measurement, as JSON
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.spec, args.batch_size)))
        return 0
    if args.compare_with is None or not (args.compare_with / "mmkeras").is_dir():
        parser.error(f"--compare-with must name a checkout with an mmkeras/ folder, e.g. one made with "
                     f"`git worktree add --detach /tmp/before <commit>`; got {args.compare_with}.")
    report = run(args.spec, args.compare_with.resolve(), args.rounds, args.batch_size)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / f"first_step_{args.spec}.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (output / f"first_step_{args.spec}.md").write_text(format_markdown(report), encoding="utf-8")
    print(format_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
