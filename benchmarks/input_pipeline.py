"""Input-pipeline benchmark: does the tf.data pipeline keep training fed?

For a dataset spec (default `avmnist`) it measures, in one run:
- examples/s of the pipeline alone, reading the manifest's files and reading TFRecord shards;
- the time of one training epoch fed by each pipeline, divided by the time of
  the same epoch fed from tensors already in memory (same model, same batches).
A ratio near 1.0 means the pipeline never starves the model. Target: <= 1.10.

Run: `python benchmarks/input_pipeline.py [--spec avmnist] [--quick]` or `mmkeras bench pipeline`.
Writes `benchmarks/results/input_pipeline_<spec>.{json,md}`.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def pipeline_throughput(dataset, repeats: int = 2) -> float:
    """Examples/s of iterating a batched dataset (best of `repeats` passes, after a warm-up pass)."""
    for _ in dataset:  # warm-up: fills any cache and compiles the map functions
        pass
    best = 0.0
    for _ in range(repeats):
        count, started = 0, time.perf_counter()
        for features, labels in dataset:
            count += int(labels.shape[0])
        best = max(best, count / (time.perf_counter() - started))
    return best


def epoch_seconds(model, data, repeats: int) -> float:
    """Fastest of `repeats` one-epoch `fit` calls on a dataset.

    One untimed epoch comes first: it traces the training function for this input.
    """
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        model.fit(data, epochs=1, verbose=0)
        times.append(time.perf_counter() - started)
    return min(times[1:])


def run(spec_name: str = "avmnist", *, batch_size: int = 64, repeats: int = 3, quick: bool = False,
        save: bool = True) -> dict:
    """Measure the pipeline and the pipeline/in-memory epoch-time ratios; returns and saves the figures.

    Args:
      spec_name: a bundled spec name or a spec path.
      batch_size: examples per batch.
      repeats: timed passes per figure (the fastest counts: the machine is shared and noisy).
      quick: a smaller model and fewer repeats.
      save: write `benchmarks/results/input_pipeline_<spec>.{json,md}`.

    Returns:
      The figures as a dict.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    import mmkeras
    from mmkeras.evaluation.comparison import machine_description
    from mmkeras.training.training_view import TrainingView

    spec = mmkeras.load_spec(spec_name)
    mmkeras.prepare(spec)
    repeats = 1 if quick else repeats
    tfrecord_dir = Path(tempfile.mkdtemp(prefix="mmkeras-bench-tfrecords-"))
    mmkeras.write_tfrecords(spec, "train", tfrecord_dir, num_shards=4)
    splits = dict(spec.splits)
    splits["train_tfrecords"] = dataclass_replace(splits["train"], tfrecords=str(tfrecord_dir / "train-*.tfrecord"))
    spec_tf = spec.replace(splits=splits)

    # cache=False: measure reading and decoding every epoch, the case a larger-than-memory dataset is in.
    from_files = mmkeras.make_dataset(spec, "train", batch_size=batch_size, training=True, seed=0, cache=False)
    from_tfrecords = mmkeras.make_dataset(spec_tf, "train_tfrecords", batch_size=batch_size, training=True,
                                          seed=0, cache=False)
    default = mmkeras.make_dataset(spec, "train", batch_size=batch_size, training=True, seed=0)
    figures = {
        "pipeline_examples_per_second": {
            "files": pipeline_throughput(from_files, repeats),
            "tfrecords": pipeline_throughput(from_tfrecords, repeats),
            "files_cached": pipeline_throughput(default, repeats),
        }
    }

    features, labels = [], []
    for batch_features, batch_labels in mmkeras.make_dataset(spec, "train", batch_size=batch_size, seed=0):
        features.append({k: v.numpy() for k, v in batch_features.items()})
        labels.append(batch_labels.numpy())
    # Whole batches only, as the training pipeline drops the remainder: both sides see the same examples.
    kept = len(np.concatenate(labels)) // batch_size * batch_size
    in_memory = ({k: np.concatenate([f[k] for f in features])[:kept] for k in features[0]},
                 np.concatenate(labels)[:kept])
    # The ideal feed: every batch already a tensor in memory (cached after the untimed epoch).
    in_memory_data = tf.data.Dataset.from_tensor_slices(in_memory).batch(batch_size).cache()

    options = {"units": 64, "embed_dim": 64} if quick else {}
    model = TrainingView(mmkeras.build_classifier(spec, seed=0, **options))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    memory_time = epoch_seconds(model, in_memory_data, repeats)
    files_time = epoch_seconds(model, from_files, repeats)
    cached_time = epoch_seconds(model, default, repeats)
    tfrecords_time = epoch_seconds(model, from_tfrecords, repeats)
    figures["epoch_seconds"] = {"in_memory": memory_time, "files": files_time, "files_cached": cached_time,
                                "tfrecords": tfrecords_time}
    figures["epoch_ratio_to_in_memory"] = {
        "files": files_time / memory_time, "files_cached": cached_time / memory_time,
        "tfrecords": tfrecords_time / memory_time,
    }
    figures.update(dataset=spec.name, train_examples=int(len(in_memory[1])), batch_size=batch_size, repeats=repeats,
                   quick=quick, target_ratio=1.10, machine=machine_description(),
                   command=f"python benchmarks/input_pipeline.py --spec {spec_name} --batch-size {batch_size} "
                           f"--repeats {repeats}" + (" --quick" if quick else ""),
                   measured=time.strftime("%Y-%m-%dT%H:%M:%S%z"), load_average=os.getloadavg()[0])
    if save:
        write_results(figures, f"input_pipeline_{spec.name}")
    return figures


def dataclass_replace(split, **changes):
    """A copy of a frozen `SplitSpec` with some fields changed."""
    import dataclasses

    return dataclasses.replace(split, manifest=None, select=None, **changes)


def write_results(figures: dict, stem: str) -> None:
    """Save figures as JSON and as a Markdown table in benchmarks/results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(figures, indent=2))
    rates, seconds, ratios = (figures["pipeline_examples_per_second"], figures["epoch_seconds"],
                              figures["epoch_ratio_to_in_memory"])
    lines = [
        f"# Input pipeline: `{figures['dataset']}` ({figures['train_examples']} training examples, batch "
        f"{figures['batch_size']})", "",
        f"Command: `{figures['command']}`  ",
        f"Machine: {figures['machine']['cpu_count']} CPUs, {figures['machine']['platform']}, TF "
        f"{figures['machine']['tensorflow']}, GPUs: {figures['machine']['gpus'] or 'none'}", "",
        "| source | pipeline alone (examples/s) | epoch time (s) | epoch time / in-memory |",
        "|---|---|---|---|",
        f"| in-memory tensors | - | {seconds['in_memory']:.2f} | 1.00 |",
    ]
    target = figures["target_ratio"]
    for key, label in (("files", "manifest files, decoded every epoch"),
                       ("files_cached", "manifest files, cached (the default when the split fits in memory)"),
                       ("tfrecords", "TFRecord shards, decoded every epoch")):
        verdict = "met" if ratios[key] <= target else "NOT met"
        lines.append(f"| {label} | {rates[key]:.0f} | {seconds[key]:.2f} | {ratios[key]:.2f} ({verdict}) |")
    lines += ["", f"Target: epoch time / in-memory <= {target:.2f}. Each figure is the fastest of "
              f"{figures['repeats']} timed passes measured in this one run."]
    if "measured" in figures:
        lines.append(f"Measured {figures['measured']}; 1-minute load average {figures['load_average']:.2f} at the end.")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="avmnist")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    figures = run(args.spec, batch_size=args.batch_size, repeats=args.repeats, quick=args.quick)
    print(json.dumps({k: figures[k] for k in ("pipeline_examples_per_second", "epoch_seconds",
                                              "epoch_ratio_to_in_memory")}, indent=2))


if __name__ == "__main__":
    main()
