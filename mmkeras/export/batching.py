"""TF Serving's server-side batching for an export: a measured throughput curve, and the parameters chosen from it.

Small models reach their throughput on TF Serving only with server-side
batching (`--enable_batching --batching_parameters_file=...`): the server
merges concurrent requests into one call of the signature. How large a batch
pays depends on the model and the machine, so every export measures it:
`measure_batching` loads the written SavedModel, times `serving_default` on
raw inputs (decoding included) at growing batch sizes within a time budget
(`TIME_BUDGET_SECONDS`: 1.5 s on CPU, so that an export costs at most about
that plus loading the SavedModel, ~1 s), and
`choose_batching_parameters` turns that curve into the five knobs of TF
Serving's batching guide
(https://github.com/tensorflow/serving/blob/master/tensorflow_serving/batching/README.md):

- `max_batch_size`: the smallest measured batch that reaches
  `KNEE_FRACTION` (90%) of the best measured throughput. Larger batches add
  latency for at most 10% more throughput.
- `batch_timeout_micros`: on CPU 0, the guide's starting point for CPU-only
  systems (a batch is whatever is queued when a thread is free; requests
  never wait for company). On GPU the time of one full batch, within 1-10 ms:
  the guide tunes it "to rein in tail latency" and finds a few milliseconds
  typical, and waiting longer than one batch's work at most doubles latency.
- `num_batch_threads`: the number of CPU cores (the guide, CPU and GPU alike).
- `max_enqueued_batches`: `num_batch_threads`, the guide's choice for online
  serving: a full queue turns requests away (UNAVAILABLE, retried on another
  replica) instead of building a backlog that every later request waits out.
- `allowed_batch_sizes`: the measured sizes up to `max_batch_size` (powers
  of two). Batches are padded up to the next one; on GPU that bounds the
  shapes the kernels are tuned for, on CPU the padding costs at most the
  measured ratio between neighbouring sizes (written in the file).

The file is a `BatchingParameters` text proto; its comments record the curve,
the machine and why each value was chosen.
"""
from __future__ import annotations

import dataclasses
import datetime
import itertools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import tensorflow as tf

from mmkeras.export import signatures
from mmkeras.export.requests import example_value
from mmkeras.spec import DatasetSpec
from mmkeras.training.strategy import visible_device_type

BATCHING_FILE = "batching_parameters.txt"
# Batch sizes the curve is measured at, by device (allowed_batch_sizes are drawn from them).
CURVE_BATCH_SIZES = {"CPU": (1, 2, 4, 8, 16, 32, 64), "GPU": (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)}
# The curve's time budget, by device: every export measures it (ten exports in the test suite), so it must
# cost about a second, not the 3-10 s that 0.2 s per size up to batch 128 took on a shared 2-core machine.
# The first MIN_SIZES sizes are always measured; a later size only if its expected cost fits.
TIME_BUDGET_SECONDS = {"CPU": 1.5, "GPU": 3.0}
MIN_SIZES = 3
# max_batch_size: the smallest batch reaching this fraction of the best measured throughput.
KNEE_FRACTION = 0.9
# The curve stops early after this many sizes in a row that beat the best throughput by less than SATURATION_GAIN.
SATURATION_GAIN = 1.05
FLAT_SIZES_TO_STOP = 2
# Timing per batch size: at least MIN_CALLS calls, more while under SECONDS_PER_SIZE (at most MAX_CALLS)
# and within the budget.
MIN_CALLS = 2
MAX_CALLS = 20
SECONDS_PER_SIZE = 0.05
# The GPU batch timeout's range (the guide: "typically a few milliseconds").
GPU_TIMEOUT_MICROS = (1000, 10000)
# Distinct synthetic examples a measured batch cycles through.
EXAMPLE_POOL = 8


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """TF Serving batching parameters chosen from a measured throughput curve.

    Attributes:
      max_batch_size: the largest batch the server forms.
      batch_timeout_micros: how long a request may wait for a batch to fill.
      num_batch_threads: threads that run batches in parallel.
      max_enqueued_batches: batches the queue holds before requests are refused.
      allowed_batch_sizes: batch sizes the server pads batches up to (ends with `max_batch_size`).
      device_type: "CPU" or "GPU": where the curve was measured.
      num_cores: CPU cores of the measuring machine.
      batch_seconds: batch size -> seconds of one `serving_default` call (the fastest timed; the curve).
    """

    max_batch_size: int
    batch_timeout_micros: int
    num_batch_threads: int
    max_enqueued_batches: int
    allowed_batch_sizes: tuple[int, ...]
    device_type: str
    num_cores: int
    batch_seconds: Mapping[int, float]

    def throughput(self) -> dict[int, float]:
        """Batch size -> examples per second, from the curve."""
        return {size: size / seconds for size, seconds in self.batch_seconds.items()}

    def to_dict(self) -> dict:
        """JSON-ready: the parameters, the device and the curve (examples/s and ms per batch)."""
        record = dataclasses.asdict(self)
        record["allowed_batch_sizes"] = list(self.allowed_batch_sizes)
        record["batch_seconds"] = {str(size): seconds for size, seconds in self.batch_seconds.items()}
        record["examples_per_second"] = {str(size): value for size, value in self.throughput().items()}
        return record


def measure_throughput_curve(
    function: Callable[..., Mapping[str, tf.Tensor]],
    make_inputs: Callable[[int], Mapping[str, tf.Tensor]],
    batch_sizes: Sequence[int],
    *,
    seconds_per_size: float = SECONDS_PER_SIZE,
    seconds_total: float | None = None,
) -> dict[int, float]:
    """Time `function(**make_inputs(size))` at growing batch sizes: the fastest call's seconds.

    Each size gets one untimed call (the first call at a new shape is slower),
    then at least `MIN_CALLS` timed calls and more while under
    `seconds_per_size`; the fastest is kept, as the least disturbed by other
    work on a shared machine (the median moved by 2-3x between runs on a
    busy 2-core machine, the minimum by much less). Measuring stops once `FLAT_SIZES_TO_STOP` sizes in a
    row gain less than 5% over the best throughput so far: past the knee,
    larger batches only add latency. With `seconds_total`, the first
    `MIN_SIZES` sizes are always measured and a later one only if its
    expected cost (`1 + MIN_CALLS` calls, the last size's time scaled by the
    size) fits in what is left; extra calls stop once the budget is spent.

    Args:
      function: a signature of a loaded SavedModel (or any function of named tensors).
      make_inputs: batch size -> the function's keyword inputs for that many examples.
      batch_sizes: the sizes to measure, ascending.
      seconds_per_size: the time budget per size, beyond the minimum calls.
      seconds_total: the time budget of the whole curve (None: no budget).

    Returns:
      Batch size -> seconds of the fastest call, for the sizes measured.

    Example:
      >>> measure_throughput_curve(loaded.signatures["serving_default"], make_inputs, (1, 2, 4))
      {1: 0.0031, 2: 0.0036, 4: 0.0049}
    """
    curve, best, flat = {}, 0.0, 0
    began = time.perf_counter()
    budget = float("inf") if seconds_total is None else seconds_total
    for index, size in enumerate(batch_sizes):
        if index >= MIN_SIZES:
            last = max(curve)
            expected = (1 + MIN_CALLS) * curve[last] * size / last
            if time.perf_counter() - began + expected > budget:
                break
        inputs = make_inputs(size)
        _wait(function(**inputs))
        calls = []
        start = time.perf_counter()
        while len(calls) < MIN_CALLS or (
            time.perf_counter() - start < seconds_per_size
            and time.perf_counter() - began < budget
            and len(calls) < MAX_CALLS
        ):
            begin = time.perf_counter()
            _wait(function(**inputs))
            calls.append(time.perf_counter() - begin)
        curve[size] = min(calls)
        throughput = size / curve[size]
        flat = flat + 1 if throughput < best * SATURATION_GAIN else 0
        best = max(best, throughput)
        if flat >= FLAT_SIZES_TO_STOP:
            break
    return curve


def _wait(outputs: Mapping[str, tf.Tensor]) -> None:
    for value in outputs.values():
        value.numpy()


def choose_batching_parameters(
    batch_seconds: Mapping[int, float], *, device_type: str, num_cores: int
) -> BatchingParameters:
    """Choose TF Serving batching parameters from a throughput curve (see the module docstring).

    Args:
      batch_seconds: batch size -> seconds per call (`measure_throughput_curve`).
      device_type: "CPU" or "GPU", where the curve was measured.
      num_cores: the machine's CPU cores.

    Returns:
      The `BatchingParameters`.

    Raises:
      ValueError: for an empty curve, a non-positive time, or an unknown device type.

    Example:
      >>> choose_batching_parameters({1: 0.004, 2: 0.005, 4: 0.007, 8: 0.013}, device_type="CPU", num_cores=2)
      BatchingParameters(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=2, ...)
    """
    if device_type not in CURVE_BATCH_SIZES:
        raise ValueError(f"Unknown device_type {device_type!r}; expected one of {sorted(CURVE_BATCH_SIZES)}.")
    if not batch_seconds or min(batch_seconds.values()) <= 0:
        raise ValueError(f"A throughput curve needs positive seconds per batch size, got {dict(batch_seconds)}.")
    sizes = sorted(batch_seconds)
    throughput = {size: size / batch_seconds[size] for size in sizes}
    best = max(throughput.values())
    max_batch_size = next(size for size in sizes if throughput[size] >= KNEE_FRACTION * best)
    if device_type == "GPU":
        low, high = GPU_TIMEOUT_MICROS
        timeout = int(min(max(batch_seconds[max_batch_size] * 1e6, low), high))
    else:
        timeout = 0
    num_cores = max(int(num_cores), 1)
    return BatchingParameters(
        max_batch_size=max_batch_size,
        batch_timeout_micros=timeout,
        num_batch_threads=num_cores,
        max_enqueued_batches=num_cores,
        allowed_batch_sizes=tuple(size for size in sizes if size <= max_batch_size),
        device_type=device_type,
        num_cores=num_cores,
        batch_seconds={size: float(batch_seconds[size]) for size in sizes},
    )


def batching_parameters_text(parameters: BatchingParameters, *, title: str = "") -> str:
    """The `BatchingParameters` text proto TF Serving reads, with comments: the curve and the reasons.

    Args:
      parameters: the chosen parameters.
      title: what was measured (e.g. "tiny_concat version 3"), for the header comment.

    Returns:
      The file's text.
    """
    p = parameters
    throughput = p.throughput()
    sizes = sorted(p.batch_seconds)
    padding = max((p.batch_seconds[b] / p.batch_seconds[a] for a, b in itertools.pairwise(sizes) if b <= p.max_batch_size),
                  default=1.0)
    best = max(throughput.values())
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    lines = [
        f"# TF Serving batching parameters{f' for {title}' if title else ''}, chosen by mmkeras from the throughput",
        f"# of serving_default on raw inputs (decoding included), measured on the exporting machine ({p.device_type},",
        f"# {p.num_cores} CPU cores) on {date}. Serve with:",
        "#   --enable_batching --batching_parameters_file=<this file>",
        "#",
        "#   batch size   examples/s   ms per batch",
        *(f"#   {size:10d}   {throughput[size]:10.1f}   {p.batch_seconds[size] * 1e3:12.2f}" for size in sizes),
        "#",
        f"# max_batch_size: the smallest batch reaching {KNEE_FRACTION:.0%} of the best throughput ({best:.0f} examples/s);",
        "#   larger batches add latency for little throughput.",
    ]
    if p.device_type == "GPU":
        lines += [
            "# batch_timeout_micros: the time of one full batch, within 1-10 ms (TF Serving batching guide, GPU: tune",
            "#   it to rein in tail latency; a few milliseconds is typical).",
        ]
    else:
        lines += [
            "# batch_timeout_micros: 0, the guide's start for CPU-only serving: a batch is whatever is queued when a",
            "#   thread is free. Try 1000-10000 under real traffic; 0 may stay the best.",
        ]
    lines += [
        "# num_batch_threads: the number of CPU cores (guide).",
        "# max_enqueued_batches: num_batch_threads, for online serving (guide): a full queue refuses requests",
        "#   (UNAVAILABLE, for a retry on another replica) instead of growing a backlog.",
        "# allowed_batch_sizes: the measured sizes up to max_batch_size; a batch is padded up to the next one,",
        f"#   which costs at most {padding:.2f}x the time of the smaller size on this curve.",
        f"max_batch_size {{ value: {p.max_batch_size} }}",
        f"batch_timeout_micros {{ value: {p.batch_timeout_micros} }}",
        f"num_batch_threads {{ value: {p.num_batch_threads} }}",
        f"max_enqueued_batches {{ value: {p.max_enqueued_batches} }}",
        *(f"allowed_batch_sizes: {size}" for size in p.allowed_batch_sizes),
    ]
    return "\n".join(lines) + "\n"


def synthetic_raw_inputs(spec: DatasetSpec) -> Callable[[int], dict[str, tf.Tensor]]:
    """Return `make_inputs(size)`: `serving_default` inputs of `size` examples, every modality present.

    The examples are the export's synthetic ones (`requests.example_value`):
    a caption, a noise PNG and a tone WAV of the spec's shapes, cycled.
    """
    pool = {
        f.name: [example_value(f, index) for index in range(EXAMPLE_POOL)] for f in spec.features
    }

    def make_inputs(size: int) -> dict[str, tf.Tensor]:
        return {name: tf.constant([values[i % EXAMPLE_POOL] for i in range(size)], tf.string)
                for name, values in pool.items()}

    return make_inputs


def measure_batching(
    version_dir: str | os.PathLike,
    spec: DatasetSpec,
    *,
    device_type: str | None = None,
    batch_sizes: Sequence[int] | None = None,
    seconds_per_size: float = SECONDS_PER_SIZE,
    seconds_total: float | None = None,
) -> BatchingParameters:
    """Measure a written SavedModel's throughput curve on this machine and choose its batching parameters.

    Args:
      version_dir: the SavedModel folder (a version, or a staging folder before it is published).
      spec: the model's dataset spec.
      device_type: "CPU" or "GPU"; default: the device TensorFlow runs on here.
      batch_sizes: the sizes to measure; default `CURVE_BATCH_SIZES[device_type]`.
      seconds_per_size: the time budget per size (see `measure_throughput_curve`).
      seconds_total: the curve's time budget; default `TIME_BUDGET_SECONDS[device_type]`
        (loading the SavedModel comes on top).

    Returns:
      The `BatchingParameters`.

    Example:
      >>> measure_batching("saved_models/tiny_concat/1", load_spec("tiny")).max_batch_size
      16
    """
    device_type = device_type or visible_device_type()
    loaded = tf.saved_model.load(str(version_dir))
    curve = measure_throughput_curve(
        loaded.signatures[signatures.DEFAULT],
        synthetic_raw_inputs(spec),
        batch_sizes or CURVE_BATCH_SIZES[device_type],
        seconds_per_size=seconds_per_size,
        seconds_total=TIME_BUDGET_SECONDS[device_type] if seconds_total is None else seconds_total,
    )
    return choose_batching_parameters(curve, device_type=device_type, num_cores=_num_cores())


def _num_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def write_batching_parameters(path: str | os.PathLike, parameters: BatchingParameters, *, title: str = "") -> Path:
    """Write `batching_parameters_text` to `path` atomically and return it."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.writing")
    staging.write_text(batching_parameters_text(parameters, title=title), encoding="utf-8")
    os.replace(staging, path)
    return path

