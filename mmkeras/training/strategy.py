"""Devices, in one place: the distribution strategy, mixed precision, XLA and CPU threads.

No other module of mmkeras asks which devices exist. `resolve_runtime` turns
a `RuntimeConfig` into a `ResolvedRuntime`: the `tf.distribute.Strategy` to
build and train under, and the precision, compilation and thread choices that
fit the hardware (mixed precision and XLA on GPU, plain float32 on CPU, one
thread per op on a 2-core CPU).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import keras
import tensorflow as tf

from mmkeras.checks import is_integer
from mmkeras.training.config import STRATEGIES, RuntimeConfig

# Up to this many cores (and without GPUs) an op runs on one thread by default: measured on 2 cores, where the
# training step is many small ops and splitting each one costs more than it saves (step_options_*__threads.md).
# Larger machines keep TensorFlow's default until measured there.
SINGLE_THREAD_OPS_MAX_CORES = 2

TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
)


@dataclasses.dataclass(frozen=True)
class ResolvedRuntime:
    """The runtime choices made for this machine.

    Attributes:
      strategy: the `tf.distribute.Strategy` to build, compile and fit under.
      strategy_name: what was picked: "default", "mirrored" or "multi_worker".
      device_type: "GPU" when GPUs are visible, else "CPU".
      num_replicas: `strategy.num_replicas_in_sync`.
      mixed_precision: whether layers compute in half precision: `mixed_float16`
        on GPU, `mixed_bfloat16` on CPU (see `precision_policy`).
      jit_compile: whether to ask Keras for XLA compilation.
      steps_per_execution: training steps per compiled call.
      fused_optimizer: whether Adam and AdamW apply one fused op per variable.
      is_chief: whether this worker writes the run's artefacts (always true
        outside multi-worker training).
      task_name: this worker's task in the cluster, e.g. "worker-1" ("" outside one).
      intra_op_threads, inter_op_threads: TensorFlow's thread pools as they
        are for this process (0: TensorFlow's default, one thread per core).
    """

    strategy: Any
    strategy_name: str
    device_type: str
    num_replicas: int
    mixed_precision: bool
    jit_compile: bool
    steps_per_execution: int
    fused_optimizer: bool = True
    is_chief: bool = True
    task_name: str = ""
    intra_op_threads: int = 0
    inter_op_threads: int = 0

    def describe(self) -> dict[str, Any]:
        """Everything but the strategy object, as JSON-ready data."""
        record = dataclasses.asdict(dataclasses.replace(self, strategy=None))
        record.pop("strategy")
        return record


def resolve_runtime(config: RuntimeConfig | None = None) -> ResolvedRuntime:
    """Make the strategy and pick precision and XLA for the visible devices.

    Call it before any other TensorFlow work in the process: a multi-worker
    strategy must configure the runtime before TensorFlow starts.

    Args:
      config: the `RuntimeConfig` (defaults: everything automatic).

    Returns:
      A `ResolvedRuntime`. `mixed_precision` left at None becomes True on
      GPU and False on CPU; `jit_compile` left at None becomes True on a
      single GPU and False otherwise (on CPU it gained nothing in
      `benchmarks/train_throughput.py`); `intra_op_threads` left at None
      becomes 1 on a CPU-only machine with at most
      `SINGLE_THREAD_OPS_MAX_CORES` cores (see `configure_threads`).

    Example:
      >>> runtime = resolve_runtime(RuntimeConfig(strategy="auto"))
      >>> runtime.strategy_name, runtime.mixed_precision   # on a CPU-only machine
      ('default', False)
    """
    config = config or RuntimeConfig()
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    intra_op_threads, inter_op_threads = configure_threads(config.intra_op_threads, config.inter_op_threads,
                                                           on_gpu=on_gpu)
    strategy, strategy_name = _make_strategy(config.strategy)
    num_replicas = int(strategy.num_replicas_in_sync)
    # Like Keras' own default, XLA stays off when gradients are all-reduced across replicas.
    default_jit = on_gpu and num_replicas == 1
    if config.mixed_precision and not on_gpu and not cpu_supports_bfloat16():
        warnings.warn(
            "mixed_precision=True on a CPU without AMX-BF16 or AVX512-BF16: bfloat16 is emulated there and "
            "trains slower than float32. Leave mixed_precision unset (float32 on CPU) on this machine.",
            stacklevel=2,
        )
    return ResolvedRuntime(
        strategy=strategy,
        strategy_name=strategy_name,
        device_type="GPU" if on_gpu else "CPU",
        num_replicas=num_replicas,
        mixed_precision=on_gpu if config.mixed_precision is None else config.mixed_precision,
        jit_compile=default_jit if config.jit_compile is None else config.jit_compile,
        steps_per_execution=config.steps_per_execution,
        fused_optimizer=config.fused_optimizer,
        is_chief=bool(strategy.extended.should_checkpoint),
        task_name=_task_name(strategy),
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
    )


def configure_threads(intra_op_threads: int | None = None, inter_op_threads: int | None = None, *,
                      on_gpu: bool = False, cores: int | None = None) -> tuple[int, int]:
    """Size TensorFlow's intra-op and inter-op thread pools, if the process has not started TensorFlow yet.

    On a CPU-only machine with at most `SINGLE_THREAD_OPS_MAX_CORES` cores,
    `intra_op_threads=None` means 1: the default models' steps are many
    small ops, which the inter-op threads then run side by side instead of
    splitting each one over both cores (avmnist's step 0.68x, tuxpaint's
    0.72x: `benchmarks/results/step_options_*__threads.md`). Elsewhere None
    keeps TensorFlow's default, as 0 does.

    TensorFlow fixes its pools at its first op. After that a value cannot be
    changed: an explicit request that differs is warned about, the automatic
    one is skipped quietly.

    Args:
      intra_op_threads: threads per op; None (automatic), 0 (TensorFlow's
        default) or a positive count.
      inter_op_threads: ops run at once; None or 0 (TensorFlow's default) or a positive count.
      on_gpu: whether GPUs are visible (the automatic choice is for CPUs only).
      cores: the cores this process may use (default: its CPU affinity).

    Returns:
      `(intra_op_threads, inter_op_threads)` as they are for the process (0: TensorFlow's default).

    Example:
      >>> configure_threads(cores=2)   # before any TensorFlow op, on a 2-core CPU
      (1, 0)
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    automatic = intra_op_threads is None
    if automatic:
        intra_op_threads = 1 if not on_gpu and cores <= SINGLE_THREAD_OPS_MAX_CORES else 0
    threading = tf.config.threading
    for name, wanted, explicit, get, set_ in (
        ("intra_op_threads", intra_op_threads, not automatic, threading.get_intra_op_parallelism_threads,
         threading.set_intra_op_parallelism_threads),
        ("inter_op_threads", inter_op_threads or 0, bool(inter_op_threads), threading.get_inter_op_parallelism_threads,
         threading.set_inter_op_parallelism_threads),
    ):
        if wanted == get():
            continue
        try:
            set_(wanted)
        except RuntimeError:
            if explicit:
                warnings.warn(
                    f"{name}={wanted} cannot be applied: TensorFlow already ran an op in this process, so its "
                    f"thread pools are fixed ({get() or 'its default'}). Set it before any TensorFlow work, e.g. "
                    "train in a fresh process or call `mmkeras.train` first.", stacklevel=3)
    return threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads()


def cpu_supports_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (AMX-BF16 or AVX512-BF16), read from /proc/cpuinfo.

    Machines differ: bfloat16 mixed precision is faster only where the CPU has
    these instructions (on others it is emulated, and slower than float32), so
    it is detected, never assumed.

    Args:
      cpuinfo: the text of /proc/cpuinfo (read from the machine when None).

    Returns:
      True when a "flags" line lists `amx_bf16` or `avx512_bf16`; False
      otherwise, and where /proc/cpuinfo cannot be read.

    Example:
      >>> cpu_supports_bfloat16("flags : fpu avx2 avx512f avx512_bf16")
      True
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as file:
                cpuinfo = file.read()
        except OSError:
            return False
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split()}
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def visible_device_type() -> str:
    """The device type a model (or a loaded SavedModel) runs on here: "GPU" if TensorFlow sees one, else "CPU".

    For code that must choose by hardware without making a strategy (e.g. the
    export's TF Serving batching parameters, which differ on CPU and GPU).

    Example:
      >>> visible_device_type()   # on a CPU-only machine
      'CPU'
    """
    return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Return the `tf.distribute.Strategy` called `name`.

    - "auto": `MirroredStrategy` over the visible GPUs when there is at least
      one, else the default (single-device) strategy.
    - "default": the default strategy on the first device.
    - "mirrored": `MirroredStrategy` over the GPUs, or, on a CPU-only machine,
      over the logical CPU devices (one replica unless several were configured
      with `tf.config.set_logical_device_configuration`).
    - "multi_worker": `MultiWorkerMirroredStrategy` for the cluster described
      by the `TF_CONFIG` environment variable.

    Args:
      name: one of `STRATEGIES`.

    Returns:
      The strategy.

    Raises:
      ValueError: for an unknown name, or a missing or malformed `TF_CONFIG`.

    Example:
      >>> make_strategy("mirrored").num_replicas_in_sync   # one CPU device
      1
    """
    return _make_strategy(name)[0]


def read_tf_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Parse and check the `TF_CONFIG` environment variable of a multi-worker job.

    Args:
      environ: the environment to read (defaults to `os.environ`).

    Returns:
      The parsed mapping with `cluster` and `task`.

    Raises:
      ValueError: if `TF_CONFIG` is unset, not JSON, or lacks a worker list
        or a task that names one of the cluster's jobs; the message shows a
        correct example.

    Example:
      >>> read_tf_config({"TF_CONFIG": TF_CONFIG_EXAMPLE})["task"]
      {'type': 'worker', 'index': 0}
    """
    environ = os.environ if environ is None else environ
    hint = f"Set TF_CONFIG on every worker, e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}' (each with its own task index)."
    text = environ.get("TF_CONFIG", "")
    if not text.strip():
        raise ValueError(f"strategy='multi_worker' needs the TF_CONFIG environment variable, which is unset. {hint}")
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {text!r}. {hint}") from None
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    task = tf_config.get("task") if isinstance(tf_config, dict) else None
    if not isinstance(cluster, dict) or not any(isinstance(cluster.get(job), list) and cluster[job]
                                                for job in ("worker", "chief")):
        raise ValueError(f"TF_CONFIG needs a 'cluster' with a non-empty 'worker' address list, got {text!r}. {hint}")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ValueError(
            f"TF_CONFIG needs a 'task' whose 'type' is one of the cluster's jobs {sorted(cluster)}, got {text!r}. {hint}"
        )
    index = task.get("index", 0)
    if not is_integer(index) or not 0 <= index < len(cluster[task["type"]]):
        raise ValueError(
            f"TF_CONFIG task index must be 0..{len(cluster[task['type']]) - 1} for job {task['type']!r}, "
            f"got {index!r}. {hint}"
        )
    return tf_config


def _make_strategy(name: str) -> tuple[tf.distribute.Strategy, str]:
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}. Expected one of {list(STRATEGIES)}.")
    if name == "multi_worker":
        # Before anything lists devices: listing starts the runtime, which the
        # multi-worker strategy must configure first.
        read_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy(), "multi_worker"
    gpus = tf.config.list_logical_devices("GPU")
    if name == "default" or (name == "auto" and not gpus):
        return tf.distribute.get_strategy(), "default"
    devices = [device.name for device in gpus or tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices), "mirrored"


def _task_name(strategy: tf.distribute.Strategy) -> str:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return ""
    return f"{resolver.task_type}-{int(resolver.task_id or 0)}"


@contextlib.contextmanager
def precision_policy(mixed_precision: bool, device_type: str = "GPU") -> Iterator[str]:
    """Build layers under a mixed policy (or `float32`), restoring the old policy after.

    Keras reads the global dtype policy when a layer is created, so the model
    must be built inside this block; each layer keeps its policy afterwards
    (and in saved files), and the rest of the process is left as it was.
    Variables stay float32 under both mixed policies.

    Args:
      mixed_precision: True for half-precision compute, False for `float32`.
      device_type: "GPU" (`mixed_float16`: tensor cores) or "CPU"
        (`mixed_bfloat16`: no loss scaling, native on CPUs with AMX or
        AVX512-BF16, see `cpu_supports_bfloat16`).

    Yields:
      The policy name in force.

    Example:
      >>> with precision_policy(runtime.mixed_precision, runtime.device_type):
      ...     model = build_classifier(spec)
    """
    previous = keras.mixed_precision.global_policy()
    policy = policy_name(mixed_precision, device_type)
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield policy
    finally:
        keras.mixed_precision.set_global_policy(previous)


def policy_name(mixed_precision: bool, device_type: str) -> str:
    """The Keras dtype policy for a precision choice on a device type.

    Example:
      >>> policy_name(True, "CPU")
      'mixed_bfloat16'
    """
    if not mixed_precision:
        return "float32"
    return "mixed_float16" if device_type == "GPU" else "mixed_bfloat16"
