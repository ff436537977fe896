"""The serving benchmark: what in-graph decoding costs a loaded SavedModel.

`benchmark_serving` times one exported model two ways on the same examples:
`serving_default` on raw inputs (text, PNG bytes, WAV bytes: decoding in the
graph) and `serving_decoded` on the tensors the training pipeline decoded from
them (the same model, no decoding). It reports latency at batch 1 (p50, p99)
and throughput at batch 64, and the raw/decoded ratios, so the price of
taking raw inputs is a number. `run_serving_benchmark` builds, exports and
measures a classifier for a spec and saves the figures in
`benchmarks/results/serving_<dataset>.{json,md}` (`benchmarks/serving.py` and
`mmkeras bench serving` call it).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from mmkeras.data.decoders import make_example_decoder
from mmkeras.data.pipeline import read_split
from mmkeras.datasets import prepare
from mmkeras.export import signatures
from mmkeras.export.archive import resolve_version_dir
from mmkeras.export.requests import example_columns
from mmkeras.export.saved_model import export_for_serving
from mmkeras.models.classifier import build_classifier
from mmkeras.spec import DatasetSpec, load_spec

# Targets of the project for the avmnist model on a 2-core CPU machine.
TARGET_P50_MS = 5.0
TARGET_RAW_OVER_DECODED = 1.5
RAW_KINDS = {"text": "text", "image": "encoded image bytes", "audio": "WAV bytes"}
# Relative to the working folder: the package never writes into its own source checkout.
DEFAULT_RESULTS_DIR = Path("benchmarks") / "results"


def benchmark_serving(
    path: str | os.PathLike,
    spec: DatasetSpec | str,
    *,
    split: str = "test",
    latency_calls: int = 300,
    throughput_batch_size: int = 64,
    throughput_calls: int = 30,
    warmup_calls: int = 20,
) -> dict:
    """Time a loaded SavedModel on raw inputs and on pre-decoded tensors.

    Examples are the split's first raw records (`read_split`) and their
    decoding by the pipeline's `make_example_decoder`; if the spec's data
    cannot be read, synthetic examples (`mmkeras.export.requests`) stand in
    and `"examples"` says so.

    Args:
      path: a version folder (or model folder) from `export_for_serving`.
      spec: the model's dataset spec, or its name or path.
      split: where the examples come from.
      latency_calls: timed batch-1 calls per signature.
      throughput_batch_size: the batch size of the throughput runs.
      throughput_calls: timed calls at that batch size per signature.
      warmup_calls: untimed calls before each timing.

    Returns:
      A dict: `"raw"` and `"decoded"` each with `p10_ms`, `p50_ms`, `p99_ms`,
      `mean_ms` (batch 1; on a busy machine p10 is closest to the idle
      latency) and `examples_per_second` (batch `throughput_batch_size`);
      `"raw_over_decoded_p50"` and `"raw_over_decoded_throughput"` (the
      decoded throughput over the raw one: both > 1 when raw is slower);
      and what was measured (`"examples"`, `"batch_size"`, ...).
    """
    if not isinstance(spec, DatasetSpec):
        spec = load_spec(spec)
    loaded = tf.saved_model.load(str(resolve_version_dir(path)))
    raw, decoded, source = _examples(spec, split, throughput_batch_size)
    functions = {"raw": loaded.signatures[signatures.DEFAULT], "decoded": loaded.signatures[signatures.DECODED]}
    inputs = {"raw": raw, "decoded": decoded}
    count = min(len(next(iter(raw.values()))), throughput_batch_size)
    singles = {kind: [_rows(inputs[kind], i, i + 1) for i in range(count)] for kind in functions}
    batches = {kind: [_rows(inputs[kind], 0, throughput_batch_size)] for kind in functions}
    latencies = _time_calls(functions, singles, latency_calls, warmup_calls)
    per_batch = _time_calls(functions, batches, throughput_calls, max(2, warmup_calls // 4))
    results = {
        kind: {
            "p10_ms": float(np.percentile(latencies[kind], 10) * 1e3),
            "p50_ms": float(np.percentile(latencies[kind], 50) * 1e3),
            "p99_ms": float(np.percentile(latencies[kind], 99) * 1e3),
            "mean_ms": float(np.mean(latencies[kind]) * 1e3),
            "examples_per_second": float(throughput_batch_size / np.median(per_batch[kind])),
            "batch_p50_ms": float(np.median(per_batch[kind]) * 1e3),
        }
        for kind in functions
    }
    return {
        **results,
        "raw_over_decoded_p50": results["raw"]["p50_ms"] / results["decoded"]["p50_ms"],
        "raw_over_decoded_throughput": (
            results["decoded"]["examples_per_second"] / results["raw"]["examples_per_second"]
        ),
        "examples": source,
        "raw_inputs": ", ".join(f"{f.name} ({RAW_KINDS[f.modality]})" for f in spec.features),
        "batch_size": throughput_batch_size,
        "latency_calls": latency_calls,
        "throughput_calls": throughput_calls,
    }


def _examples(spec: DatasetSpec, split: str, count: int) -> tuple[dict, dict, str]:
    """`count` raw examples as (batch,) string tensors, their decoded tensors, and where they came from."""
    try:
        records = list(read_split(spec, split).take(count).as_numpy_iterator())
        source = f"the first {len(records)} raw records of split {split!r}"
    except (OSError, ValueError) as error:
        records, source = [], f"synthetic examples (the {split!r} split could not be read: {error})"
    if not records:
        columns = example_columns(spec, signatures.WITH_PRESENCE, batch_size=count)
        records = [({key: _as_bytes(value[i]) for key, value in columns.items()}, 0) for i in range(count)]
        source = source if "synthetic" in source else "synthetic examples (the split is empty)"
    while len(records) < count:  # a small split: repeat it
        records = records + records[: count - len(records)]
    decode = make_example_decoder(spec)
    decoded_rows = [decode({k: tf.constant(v) for k, v in raw.items()}, label)[0] for raw, label in records]
    decoded = {key: tf.stack([row[key] for row in decoded_rows]) for key in decoded_rows[0]}
    # serving_default reads an empty string as a missing modality, as the flags say.
    raw = {
        f.name: tf.constant([r[f.name] if r[f.presence_key] else b"" for r, _ in records], tf.string)
        for f in spec.features
    }
    return raw, decoded, source


def _as_bytes(value) -> bytes | bool:
    if isinstance(value, str):
        return value.encode("utf-8")
    return value if isinstance(value, bytes) else bool(value)


def _rows(inputs: dict, start: int, stop: int) -> dict:
    return {key: value[start:stop] for key, value in inputs.items()}


def _time_calls(functions: dict, inputs: dict, calls: int, warmup_calls: int) -> dict:
    """Seconds per call of each `functions[kind](**inputs[kind][i % n])`, after untimed warm-up calls.

    The functions take turns call by call (in alternating order), so that a
    busy machine slows them alike and the ratio between them stays fair.
    """
    kinds = list(functions)
    for i in range(warmup_calls):
        for kind in kinds:
            functions[kind](**inputs[kind][i % len(inputs[kind])])
    seconds = {kind: np.empty(calls) for kind in kinds}
    for i in range(calls):
        for kind in kinds if i % 2 == 0 else reversed(kinds):
            start = time.perf_counter()
            outputs = functions[kind](**inputs[kind][i % len(inputs[kind])])
            outputs["probabilities"].numpy()  # wait for the answer
            seconds[kind][i] = time.perf_counter() - start
    return seconds


def run_serving_benchmark(
    spec_name: str = "avmnist",
    *,
    fusion: str = "concat",
    output_dir: str | os.PathLike | None = None,
    fallback_spec: str | None = "tiny",
    latency_calls: int = 300,
    throughput_calls: int = 30,
) -> dict:
    """Build an untrained classifier for a spec, export it, time it, and save the figures.

    Latency does not depend on the weights, so the model is untrained (the
    default `build_classifier` sizes: the model `mmkeras train` would export).
    If the spec's data cannot be prepared (e.g. avmnist without FSDD) and a
    `fallback_spec` is given, that spec is measured instead and the results say so.

    Args:
      spec_name: the bundled spec name or YAML path to measure.
      fusion: the classifier's fusion.
      output_dir: where `serving_<dataset>.json` and `.md` go (default:
        `benchmarks/results` under the working folder; `benchmarks/serving.py`
        passes its own `results/`).
      fallback_spec: the spec to measure when `spec_name`'s data is not available.
      latency_calls: timed batch-1 calls per signature.
      throughput_calls: timed batch-64 calls per signature.

    Returns:
      The figures of `benchmark_serving`, plus the spec, fusion, targets,
      whether they were met, the machine and the files written.

    Example:
      >>> run_serving_benchmark("avmnist")["raw"]["p50_ms"]
      2.1
    """
    import keras

    spec, note = load_spec(spec_name), ""
    try:
        prepare(spec)
    except (OSError, ValueError) as error:
        if fallback_spec is None:
            raise
        note = f"{spec.name} data not available ({error}); measured {fallback_spec} instead."
        spec = load_spec(fallback_spec)
        prepare(spec)
    keras.utils.set_random_seed(0)
    model = build_classifier(spec, fusion=fusion, seed=0)
    with tempfile.TemporaryDirectory(prefix="mmkeras-bench-serving-") as folder:
        path = export_for_serving(model, spec, folder)
        figures = benchmark_serving(path, spec, latency_calls=latency_calls, throughput_calls=throughput_calls)
    figures.update(
        dataset=spec.name,
        fusion=fusion,
        model="untrained build_classifier(spec, fusion) with default sizes (latency does not depend on training)",
        parameters=int(model.count_params()),
        note=note,
        targets={"raw_p50_ms": TARGET_P50_MS, "raw_over_decoded": TARGET_RAW_OVER_DECODED},
        met={
            "raw_p50_ms": figures["raw"]["p50_ms"] <= TARGET_P50_MS,
            "raw_over_decoded": figures["raw_over_decoded_p50"] <= TARGET_RAW_OVER_DECODED,
        },
        machine={"cpus": os.cpu_count(), "platform": platform.platform(), "tensorflow": tf.__version__,
                 "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    output_dir = Path(output_dir) if output_dir is not None else DEFAULT_RESULTS_DIR
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / f"serving_{spec.name}.json"
    markdown_path = output_dir / f"serving_{spec.name}.md"
    figures["files"] = {"json": str(json_path), "markdown": str(markdown_path)}
    json_path.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    markdown_path.write_text(format_markdown(figures), encoding="utf-8")
    return figures


def format_markdown(figures: dict) -> str:
    """The benchmark's figures as a small Markdown report."""
    raw, decoded, batch = figures["raw"], figures["decoded"], figures["batch_size"]
    machine, met = figures.get("machine", {}), figures.get("met", {})

    def row(name, values):
        return (f"| {name} | {values['p50_ms']:.2f} | {values['p99_ms']:.2f} | {values.get('p10_ms', 0):.2f} | "
                f"{values['examples_per_second']:.0f} |")

    def verdict(key):
        return "met" if met.get(key) else "not met"

    setup = (f"Loaded SavedModel (`tf.saved_model.load`), called in process on {machine.get('cpus', '?')} CPUs; "
             f"{figures.get('model', '')}; {figures.get('parameters', '?')} parameters. "
             f"Examples: {figures['examples']}.")
    ratios = (f"Raw / pre-decoded: {figures['raw_over_decoded_p50']:.2f}x at batch 1 (p50), "
              f"{figures['raw_over_decoded_throughput']:.2f}x at batch {batch} (time per example).")
    targets = (f"Targets: raw p50 <= {TARGET_P50_MS:g} ms ({verdict('raw_p50_ms')}), "
               f"raw <= {TARGET_RAW_OVER_DECODED:g}x pre-decoded ({verdict('raw_over_decoded')}).")
    load, cpus = machine.get("load_average_1m"), machine.get("cpus")
    when = f"Measured {figures.get('date', '')}."
    if load is not None and cpus:
        when += f" 1-minute load average {load:.2f} on {cpus} CPUs (this benchmark included)"
        when += "; the machine was shared, so p50/p99 are inflated and p10 is closer to idle latency." if (
            load > cpus) else "."
    lines = [
        f"# Serving benchmark: {figures.get('dataset', '?')} ({figures.get('fusion', '?')} fusion)",
        "",
        setup,
        "",
        f"| signature | p50 ms (batch 1) | p99 ms (batch 1) | p10 ms (batch 1) | examples/s (batch {batch}) |",
        "|---|---|---|---|---|",
        row(f"`serving_default` (raw: {figures.get('raw_inputs', 'bytes')})", raw),
        row("`serving_decoded` (pre-decoded tensors)", decoded),
        "",
        ratios,
        "",
        targets,
    ]
    if figures.get("note"):
        lines += ["", f"Note: {figures['note']}"]
    return "\n".join([*lines, "", when]) + "\n"
