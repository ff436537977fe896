"""Training throughput: examples/s with and without mixed precision and XLA.

Run `python benchmarks/train_throughput.py [--spec tiny] [--steps 30]`. On a
GPU it measures float32 and mixed_float16, each with and without
`jit_compile`; without a GPU it says so and measures CPU float32 with and
without `jit_compile`. Each setting trains the spec's classifier (built and
compiled exactly as `mmkeras.training.train` does) for a warm-up epoch, then
times `--steps` steps. Keras falls back to no XLA for models with layers XLA
cannot compile (text vectorisation), so each row says whether XLA was really
used; the spec is also measured without its text features and with image
augmentation off, where XLA can act. `--features` picks one subset instead.
The figures are printed and saved in `benchmarks/results/train_throughput.{json,md}`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def measure(spec, *, mixed_precision: bool, jit_compile: bool, batch_size: int, steps: int, model_options: dict,
            label: str):
    """Train `steps` timed steps (after a warm-up epoch) and return one result row."""
    import keras

    from mmkeras.data.pipeline import make_dataset
    from mmkeras.training.config import ModelConfig, RuntimeConfig, TrainingConfig
    from mmkeras.training.loop import build_and_compile
    from mmkeras.training.strategy import resolve_runtime

    runtime = resolve_runtime(RuntimeConfig(mixed_precision=mixed_precision, jit_compile=jit_compile))
    _, trainer = build_and_compile(spec, ModelConfig(**model_options), TrainingConfig(seed=0), runtime)
    data = make_dataset(spec, "train", batch_size=batch_size, training=True, seed=0, cache=True).repeat()

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.started

    timer = Timer()
    trainer.fit(data, epochs=2, steps_per_epoch=steps, callbacks=[timer], verbose=0, shuffle=False)  # 1: warm-up
    return {
        "model": label,
        "device": runtime.device_type,
        "precision": "mixed_float16" if mixed_precision else "float32",
        "jit_compile_requested": jit_compile,
        "jit_compile_used": bool(trainer.jit_compile),
        "replicas": runtime.num_replicas,
        "examples_per_second": round(steps * batch_size / timer.seconds, 1),
        "milliseconds_per_step": round(1000 * timer.seconds / steps, 2),
    }


def format_markdown(report: dict) -> str:
    """The report as a Markdown table with a header saying what was measured."""
    lines = [
        f"# Training throughput: {report['spec']}",
        "",
        (f"{report['note']} Batch {report['batch_size']}, {report['steps']} timed steps after a warm-up epoch; "
         f"{report['machine']}."),
        "",
        "| model | device | precision | XLA requested | XLA used | examples/s | ms/step |",
        "| --- | --- | --- | --- | --- | ---: | ---: |",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['model']} | {row['device']} | {row['precision']} | {row['jit_compile_requested']} "
            f"| {row['jit_compile_used']} "
            f"| {row['examples_per_second']} | {row['milliseconds_per_step']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="tiny", help="bundled spec name or YAML path (default: tiny)")
    parser.add_argument("--features", default="", help="comma-separated feature subset (default: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per setting")
    parser.add_argument("--output-dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)

    import tensorflow as tf

    from mmkeras.spec import load_spec

    spec = load_spec(args.spec)
    if args.features:
        chosen = spec.with_features([name.strip() for name in args.features.split(",")])
        variants = [(",".join(chosen.feature_names), chosen, {})]
    else:
        # Text vectorisation and image augmentation keep Keras from using XLA.
        plain = [f.name for f in spec.features if f.modality != "text"]
        variants = [(",".join(spec.feature_names), spec, {})]
        if plain:
            variants.append((",".join(plain) + " (no augmentation)", spec.with_features(plain),
                             {"image": {"augment": False}}))
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    if on_gpu:
        settings = [(mixed, jit) for mixed in (False, True) for jit in (False, True)]
        note = "GPU found: float32 and mixed_float16, each with and without XLA."
    else:
        settings = [(False, False), (False, True)]
        note = "No GPU found: CPU float32 with and without XLA (mixed precision only pays on GPUs)."
    print(note, flush=True)
    # Small branches keep the CPU run short; the ratios are what matter.
    model_options = {"units": 64, "embed_dim": 32} if not on_gpu else {}
    rows = []
    for label, subset, branch_options in variants:
        for mixed_precision, jit_compile in settings:
            row = measure(subset, mixed_precision=mixed_precision, jit_compile=jit_compile,
                          batch_size=args.batch_size, steps=args.steps, label=label,
                          model_options={**model_options, "branch_options": branch_options})
            print(json.dumps(row), flush=True)
            rows.append(row)
    report = {
        "spec": spec.name,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "model_options": model_options,
        "note": note,
        "machine": (f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end "
                    f"(a loaded machine gives noisy figures), TensorFlow {tf.__version__}"),
        "rows": rows,
    }
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "train_throughput.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (output_dir / "train_throughput.md").write_text(format_markdown(report), encoding="utf-8")
    print(format_markdown(report))
    print(f"saved: {output_dir / 'train_throughput.json'} and {output_dir / 'train_throughput.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
