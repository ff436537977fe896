"""Runtime options against the default, per training step, and the share of a step the in-model features take.

Run `python benchmarks/step_options.py [--spec avmnist] [--variant NAME=JSON ...] [--rounds 3]` (or
`mmkeras bench step_options ...`). Each variant is a set of `RuntimeConfig` fields (by default
`bfloat16={"mixed_precision": true}` and `steps_per_execution 4={"steps_per_execution": 4}`) and
`"grappler": false` to switch TensorFlow's graph optimiser off (`"grappler_passes": {...}` to switch single
passes, by their `tf.config.optimizer.set_experimental_options` names), `"inter_op_threads": N` /
`"intra_op_threads": N` to size its thread pools. Each measurement runs in a fresh
Python process that builds and compiles the spec's default classifier as `mmkeras.train` does
(`build_and_compile`, `TrainingView.build_for`) and fits it on the same batches of the real train
split, cached in memory: the first `--first-steps` steps (tracing, graph optimisation, first
executions) and then `--steps` steady steps, timed per epoch. The variants alternate with the
default, `--rounds` times each, so a shared machine's load falls on all alike; figures are medians
and ratios to the default.

The default's process also times the model's deterministic feature layers (log-mel frames,
text vectorisation) alone, traced, on the same batches: the most that computing them once per
example in the input pipeline (issue 14, item 4) could take off a step. Printed and saved in
`benchmarks/results/step_options_<spec>.{json,md}` (`--suffix` appends to the name).
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

from _report import save_report

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_VARIANTS = ('bfloat16={"mixed_precision": true}', 'steps_per_execution 4={"steps_per_execution": 4}')


def measure(spec_name: str, options: dict, *, first_steps: int, steps: int, batch_size: int, features: bool) -> dict:
    """In this process: seconds of the first steps, milliseconds per steady step, and the features' share."""
    import tensorflow as tf

    requested, options = options, dict(options)
    if not options.pop("grappler", True):
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    if "grappler_passes" in options:  # e.g. {"constant_folding": false}: `tf.config.optimizer` option names
        tf.config.optimizer.set_experimental_options(options.pop("grappler_passes"))
    # TensorFlow's thread pools (default: one thread per core each), set before the first op runs.
    if "inter_op_threads" in options:
        tf.config.threading.set_inter_op_parallelism_threads(int(options.pop("inter_op_threads")))
    if "intra_op_threads" in options:
        tf.config.threading.set_intra_op_parallelism_threads(int(options.pop("intra_op_threads")))

    from mmkeras.data.pipeline import make_dataset
    from mmkeras.datasets import prepare
    from mmkeras.spec import load_spec
    from mmkeras.training.config import ModelConfig, RuntimeConfig, TrainingConfig
    from mmkeras.training.loop import build_and_compile
    from mmkeras.training.strategy import resolve_runtime

    spec = load_spec(spec_name)
    prepare(spec)
    data = make_dataset(spec, "train", batch_size=batch_size, training=True, seed=0)
    batches = data.repeat().take(first_steps + steps).cache()  # a small split is repeated
    for _ in batches:  # fill the cache: decoding is not what is timed
        pass
    runtime = resolve_runtime(RuntimeConfig(**options))
    _, trainer = build_and_compile(spec, ModelConfig(), TrainingConfig(seed=0), runtime,
                                   steps_per_epoch=first_steps + steps)
    trainer.build_for(batches.element_spec)
    started = time.perf_counter()
    trainer.fit(batches.take(first_steps), epochs=1, verbose=0)
    first = time.perf_counter() - started
    per_step = []
    for _ in range(3):
        started = time.perf_counter()
        trainer.fit(batches.skip(first_steps), epochs=1, verbose=0)
        per_step.append((time.perf_counter() - started) / steps)
    row = {"options": requested, "first_steps_seconds": round(first, 3),
           "step_ms": round(1000 * statistics.median(per_step), 2), "xla": bool(trainer.jit_compile)}
    if features:
        row["feature_ms"] = _feature_ms(spec, trainer, batches.skip(first_steps))
    return row


def _feature_ms(spec, trainer, batches) -> dict:
    """Milliseconds per batch of each deterministic feature layer (log-mel, text vectorisation), traced, alone."""
    import keras
    import tensorflow as tf

    from mmkeras.branches.log_mel import LogMelSpectrogram

    kinds = {"audio": LogMelSpectrogram, "text": keras.layers.TextVectorization}
    layers = list(trainer._flatten_layers())
    timings = {}
    for feature in spec.features:
        kind = kinds.get(feature.modality)
        found = [layer for layer in layers if kind is not None and isinstance(layer, kind)]
        # One feature of a modality: its layer; several: the layer named after the feature.
        found = found if len([f for f in spec.features if f.modality == feature.modality]) == 1 else [
            layer for layer in found if feature.name in layer.path]
        if not found:
            continue
        call = tf.function(lambda values, layer=found[0]: layer(values), autograph=False)
        inputs = [features[feature.name] for features, _ in batches]
        call(inputs[0])
        rounds = []
        for _ in range(3):
            started = time.perf_counter()
            for values in inputs:
                result = call(values)
            _ = result.numpy()
            rounds.append((time.perf_counter() - started) / len(inputs))
        timings[f"{found[0].name} ({feature.name})"] = round(1000 * statistics.median(rounds), 2)
    return timings


def run(spec_name: str, variants: dict[str, dict], *, rounds: int, first_steps: int, steps: int,
        batch_size: int) -> dict:
    """Alternate the default and every variant in fresh processes, `rounds` times, and summarise."""
    rows: dict[str, list[dict]] = {name: [] for name in ("default", *variants)}
    load_start = [round(value, 2) for value in os.getloadavg()]
    for round_ in range(rounds):
        for name, runs in rows.items():
            request = {"spec": spec_name, "options": variants.get(name, {}), "first_steps": first_steps,
                       "steps": steps, "batch_size": batch_size, "features": name == "default"}
            done = subprocess.run([sys.executable, __file__, "--measure", json.dumps(request)], capture_output=True,
                                  text=True, check=False, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            if done.returncode:
                raise RuntimeError(f"The measurement {request} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps({"round": round_, "variant": name, **runs[-1]}), flush=True)
    medians = {name: {key: statistics.median(row[key] for row in runs) for key in ("first_steps_seconds", "step_ms")}
               for name, runs in rows.items()}
    features = {key: statistics.median(row["feature_ms"][key] for row in rows["default"])
                for key in rows["default"][0]["feature_ms"]}
    return {
        "command": "python benchmarks/step_options.py " + " ".join(sys.argv[1:]),
        "spec": spec_name, "batch_size": batch_size, "rounds": rounds, "first_steps": first_steps, "steps": steps,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {_cpu_flags()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_at_start": load_start, "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "variants": variants, "rows": rows, "medians": medians,
        "ratios": {name: {key: round(figures[key] / medians["default"][key], 3) for key in figures}
                   for name, figures in medians.items()},
        "feature_ms": features,
        "feature_share_of_step": {key: round(value / medians["default"]["step_ms"], 3) for key, value in features.items()},
        "xla": {name: runs[0]["xla"] for name, runs in rows.items()},
    }


def _cpu_flags() -> str:
    """The CPU's vector and matrix extensions that matter for these options, from /proc/cpuinfo."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "CPU flags unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    present = [flag for flag in wanted if flag in flags.split()]
    return " ".join(present) or "no AVX2"


def format_markdown(report: dict) -> str:
    """The report as Markdown: medians, ratios to the default and the feature layers' share."""
    lines = [
        f"# Runtime options per training step: {report['spec']}",
        "",
        (f"`{report['command']}`; {report['machine']}; batch {report['batch_size']}; the default classifier built "
         f"as `mmkeras.train` builds it, fitted on cached batches of the train split; first = the first "
         f"{report['first_steps']} steps (tracing, graph optimisation, first executions); step = median of 3 "
         f"epochs of {report['steps']} steps; medians of {report['rounds']} fresh processes per variant, "
         f"alternating. Measured {report['date']}; load average {report['load_average_at_start']} at the start, "
         f"{report['load_average_at_end']} at the end."),
        "",
        "| variant | options | first steps s | ms per step | first / default | step / default |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, figures in report["medians"].items():
        ratios = report["ratios"][name]
        options = report["variants"].get(name, {})
        refused = " (Keras refused XLA)" if options.get("jit_compile") and not report["xla"][name] else ""
        options = json.dumps(options) + refused
        lines.append(f"| {name} | `{options}` | {figures['first_steps_seconds']:.2f} | {figures['step_ms']:.1f} "
                     f"| {ratios['first_steps_seconds']:.2f} | {ratios['step_ms']:.2f} |")
    lines += ["", "Deterministic feature layers alone, traced, on the same batches (the default's processes):", "",
              "| layer (input) | ms per batch | share of a default training step |", "| --- | ---: | ---: |"]
    for key, value in report["feature_ms"].items():
        lines.append(f"| {key} | {value:.2f} | {100 * report['feature_share_of_step'][key]:.1f}% |")
    return "\n".join(lines) + "\n"


def parse_variant(text: str) -> tuple[str, dict]:
    """`NAME=JSON` -> (name, options), with a clear error for anything else."""
    name, sep, options = text.partition("=")
    try:
        parsed = json.loads(options) if sep else None
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: the part after '=' is not JSON ({error}).") from None
    if not name or not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"--variant {text!r}: write NAME=JSON, e.g. 'bf16={{\"mixed_precision\": true}}'.")
    return name, parsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="avmnist", help="bundled spec name or YAML path (default: avmnist)")
    parser.add_argument("--variant", action="append", type=parse_variant, metavar="NAME=JSON",
                        help="RuntimeConfig fields (and \"grappler\": false, \"inter_op_threads\" / \"intra_op_threads\": N) "
                             "to compare with the default (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--first-steps", type=int, default=8)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--suffix", default="")
    parser.add_argument("--output-dir", default=str(RESULTS_DIR))
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # one measurement in this process, as JSON
    args = parser.parse_args(argv)
    if args.measure:
        request = json.loads(args.measure)
        print(json.dumps(measure(request["spec"], request["options"], first_steps=request["first_steps"],
                                 steps=request["steps"], batch_size=request["batch_size"],
                                 features=request["features"])))
        return 0
    variants = dict(args.variant or [parse_variant(text) for text in DEFAULT_VARIANTS])
    report = run(args.spec, variants, rounds=args.rounds, first_steps=args.first_steps, steps=args.steps,
                 batch_size=args.batch_size)
    markdown = format_markdown(report)
    print(markdown)
    save_report(args.output_dir, f"step_options_{Path(args.spec).stem}", report, markdown, suffix=args.suffix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
