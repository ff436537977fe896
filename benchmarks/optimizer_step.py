"""The optimiser's share of the first epoch and of every step: Keras' AdamW against the fused update.

Run `python benchmarks/optimizer_step.py [--spec avmnist] [--rounds 3] [--steps 40]` or
`mmkeras bench step ...`. Each measurement runs in a fresh Python process (so no
trace or kernel cache carries over) that builds and compiles the spec's default
classifier exactly as `mmkeras.train` does (`build_and_compile`), with
`RuntimeConfig(fused_optimizer=True)` or `False`, and trains on batches of the real
train split held in memory: the first step's time (tracing, graph optimisation and
the first execution: the part of the first epoch that a steady one lacks) and the
mean time of the `--steps` steps after a few warm-up steps. The two settings
alternate, `--rounds` times each, so a shared machine's load falls on both alike;
the figures are medians over the rounds and their ratios. Printed and saved in
`benchmarks/results/optimizer_step_<spec>.{json,md}`.
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

RESULTS_DIR = Path(__file__).resolve().parent / "results"
WARMUP_STEPS = 5


def measure(spec_name: str, fused: bool, steps: int, batch_size: int) -> dict:
    """In this process: the first step's seconds and the steady seconds per step."""
    import keras

    from mmkeras.data.pipeline import make_dataset
    from mmkeras.datasets import prepare
    from mmkeras.spec import load_spec
    from mmkeras.training.config import ModelConfig, RuntimeConfig, TrainingConfig
    from mmkeras.training.loop import build_and_compile
    from mmkeras.training.strategy import resolve_runtime

    spec = load_spec(spec_name)
    prepare(spec)
    runtime = resolve_runtime(RuntimeConfig(fused_optimizer=fused))
    train_steps = steps + WARMUP_STEPS + 1
    batches = list(make_dataset(spec, "train", batch_size=batch_size, training=False).take(train_steps))
    keras.utils.set_random_seed(0)  # the same weights and dropout masks: both settings end at the same loss
    _, trainer = build_and_compile(spec, ModelConfig(), TrainingConfig(seed=0), runtime, steps_per_epoch=train_steps)
    started = time.perf_counter()
    trainer.train_on_batch(*batches[0])
    first = time.perf_counter() - started
    for batch in batches[1:WARMUP_STEPS + 1]:
        trainer.train_on_batch(*batch)
    started = time.perf_counter()
    for batch in batches[WARMUP_STEPS + 1:]:
        logs = trainer.train_on_batch(*batch, return_dict=True)
    steady = (time.perf_counter() - started) / steps
    return {"fused": fused, "first_step_seconds": round(first, 3), "step_seconds": round(steady, 4),
            "trainable_variables": len(trainer.trainable_variables), "final_loss": round(float(logs["loss"]), 4)}


def run(spec_name: str, rounds: int, steps: int, batch_size: int) -> dict:
    """Alternate the two settings in fresh processes and summarise them."""
    rows = []
    for round_index in range(rounds):
        order = (True, False) if round_index % 2 == 0 else (False, True)
        for fused in order:
            command = [sys.executable, __file__, "--measure", "--spec", spec_name, "--steps", str(steps),
                       "--batch-size", str(batch_size)] + (["--fused"] if fused else [])
            output = subprocess.run(command, check=True, capture_output=True, text=True,
                                    env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}).stdout
            row = json.loads(output.strip().splitlines()[-1])
            print(f"round {round_index + 1}/{rounds}: {'fused' if fused else 'keras'} first step "
                  f"{row['first_step_seconds']} s, step {1000 * row['step_seconds']:.1f} ms", flush=True)
            rows.append(row)

    def median(fused: bool, key: str) -> float:
        return statistics.median(row[key] for row in rows if row["fused"] is fused)

    summary = {
        name: {key: median(fused, key) for key in ("first_step_seconds", "step_seconds")}
        for name, fused in (("keras AdamW", False), ("fused AdamW", True))
    }
    return {
        "command": "python benchmarks/optimizer_step.py " + " ".join(sys.argv[1:]),
        "spec": spec_name,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "batch_size": batch_size,
        "steps": steps,
        "rounds": rounds,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
        "summary": summary,
        "ratios": {
            "first_step_fused_over_keras": round(summary["fused AdamW"]["first_step_seconds"]
                                                 / summary["keras AdamW"]["first_step_seconds"], 3),
            "step_fused_over_keras": round(summary["fused AdamW"]["step_seconds"]
                                           / summary["keras AdamW"]["step_seconds"], 3),
        },
    }


def format_markdown(report: dict) -> str:
    """The report as Markdown: medians, ratios and every measurement."""
    lines = [
        f"# Optimiser step: {report['spec']}",
        "",
        (f"`{report['command']}`; {report['machine']}; batch {report['batch_size']}; the default classifier "
         f"built as `mmkeras.train` builds it; {report['rounds']} rounds per setting, alternating, each in a "
         f"fresh process; first step = tracing + graph optimisation + first execution; step = mean of "
         f"{report['steps']} steps after {WARMUP_STEPS} warm-up steps. {report['date']}; load average at the "
         f"end {report['load_average_at_end']} (a shared machine: read the ratios)."),
        "",
        "| optimiser | first step s (median) | ms per step (median) |",
        "| --- | ---: | ---: |",
    ]
    for name, figures in report["summary"].items():
        lines.append(f"| {name} | {figures['first_step_seconds']:.2f} | {1000 * figures['step_seconds']:.1f} |")
    ratios = report["ratios"]
    lines += [
        "",
        f"Fused / Keras: first step {ratios['first_step_fused_over_keras']:.2f}x, "
        f"steady step {ratios['step_fused_over_keras']:.2f}x.",
        "",
        "| round | optimiser | first step s | ms per step | loss after the timed steps |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for index, row in enumerate(report["rows"]):
        lines.append(f"| {index // 2 + 1} | {'fused' if row['fused'] else 'keras'} | {row['first_step_seconds']} "
                     f"| {1000 * row['step_seconds']:.1f} | {row['final_loss']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="avmnist", help="bundled spec name or YAML path (default: avmnist)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per setting (default: 3)")
    parser.add_argument("--steps", type=int, default=40, help="timed steady steps (default: 40)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output-dir", default=str(RESULTS_DIR))
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one measurement, as JSON
    parser.add_argument("--fused", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.spec, args.fused, args.steps, args.batch_size)))
        return 0
    report = run(args.spec, args.rounds, args.steps, args.batch_size)
    markdown = format_markdown(report)
    print(markdown)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    name = Path(report["spec"]).stem
    (output / f"optimizer_step_{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (output / f"optimizer_step_{name}.md").write_text(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
