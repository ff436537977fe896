"""Strategy selection, runtime defaults and TF_CONFIG checks on a CPU-only machine."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.training.config import RuntimeConfig
from mmkeras.training.strategy import (
    cpu_supports_bfloat16,
    make_strategy,
    policy_name,
    precision_policy,
    read_tf_config,
    resolve_runtime,
)

pytestmark = pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="checks the CPU defaults")


def test_auto_and_default_use_the_default_strategy_on_cpu():
    for name in ("auto", "default"):
        strategy = make_strategy(name)
        assert not isinstance(strategy, tf.distribute.MirroredStrategy)
        assert strategy.num_replicas_in_sync == 1


def test_mirrored_on_one_cpu_has_one_replica():
    strategy = make_strategy("mirrored")
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 1
    assert "CPU" in strategy.extended.worker_devices[0]


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown strategy 'gpu'.*'multi_worker'"):
        make_strategy("gpu")


def test_runtime_defaults_on_cpu_are_float32_without_xla():
    runtime = resolve_runtime(RuntimeConfig())
    assert (runtime.strategy_name, runtime.device_type, runtime.num_replicas) == ("default", "CPU", 1)
    assert runtime.mixed_precision is False and runtime.jit_compile is False
    assert runtime.is_chief and runtime.task_name == ""
    assert "strategy" not in runtime.describe() and json.dumps(runtime.describe())


def test_explicit_precision_and_xla_choices_win():
    runtime = resolve_runtime(RuntimeConfig(mixed_precision=True, jit_compile=True, steps_per_execution=4))
    assert runtime.mixed_precision and runtime.jit_compile and runtime.steps_per_execution == 4


def test_precision_policy_applies_inside_and_restores_after():
    before = keras.mixed_precision.global_policy().name
    with precision_policy(True) as policy:
        assert policy == "mixed_float16"
        assert keras.layers.Dense(2).dtype_policy.name == "mixed_float16"
    assert keras.mixed_precision.global_policy().name == before


def test_multi_worker_without_tf_config_says_how_to_set_it(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match=r"needs the TF_CONFIG environment variable.*\"cluster\""):
        make_strategy("multi_worker")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), "needs a 'cluster'"),
        (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}), "'type' is one of"),
        (json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}), "index must be 0..1"),
    ],
)
def test_malformed_tf_config_is_rejected(value, message):
    with pytest.raises(ValueError, match=message):
        read_tf_config({"TF_CONFIG": value})


def test_valid_tf_config_is_returned():
    value = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}}
    assert read_tf_config({"TF_CONFIG": json.dumps(value)}) == value


def test_cpu_bfloat16_support_is_read_from_the_cpu_flags():
    assert cpu_supports_bfloat16("processor : 0\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n")
    assert cpu_supports_bfloat16("flags : fpu avx512f avx512_bf16\n")
    assert not cpu_supports_bfloat16("flags : fpu avx2 fma avx512f\n")
    assert not cpu_supports_bfloat16("")


def test_half_precision_is_bfloat16_on_cpu_and_float16_on_gpu():
    assert policy_name(True, "CPU") == "mixed_bfloat16"
    assert policy_name(True, "GPU") == "mixed_float16"
    assert policy_name(False, "CPU") == policy_name(False, "GPU") == "float32"
    with precision_policy(True, "CPU"):
        layer = keras.layers.Conv2D(2, 3)
    assert layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32"


def _fresh_process(code: str) -> dict:
    """Run `code` in a new Python process (TensorFlow not yet started there); return the JSON it prints last."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_threads_are_one_per_op_on_a_small_cpu_and_tensorflows_default_elsewhere():
    result = _fresh_process(
        "import json, warnings\n"
        "from mmkeras.training.strategy import configure_threads\n"
        "choices = {'small_cpu': configure_threads(cores=2), 'large_cpu': configure_threads(cores=16),\n"
        "           'small_gpu_host': configure_threads(cores=2, on_gpu=True), 'explicit': configure_threads(3, 2)}\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import tensorflow as tf; tf.constant(1.0) + 1.0   # TensorFlow's pools are fixed from here on\n"
        "    choices['automatic_after_start'] = configure_threads(cores=2)\n"
        "    choices['explicit_after_start'] = configure_threads(5)\n"
        "choices['warnings'] = [str(w.message) for w in caught]\n"
        "print(json.dumps(choices))\n"
    )
    assert result["small_cpu"] == [1, 0] and result["large_cpu"] == [0, 0] and result["small_gpu_host"] == [0, 0]
    assert result["explicit"] == [3, 2]
    # Once TensorFlow has run an op the pools stay as they were: quietly for the automatic choice, with a warning
    # naming the fix for an explicit one.
    assert result["automatic_after_start"] == [3, 2] and result["explicit_after_start"] == [3, 2]
    assert len(result["warnings"]) == 1 and "intra_op_threads=5 cannot be applied" in result["warnings"][0]
    assert "fresh process" in result["warnings"][0]


def test_one_thread_per_op_predicts_what_the_default_threads_predict(tiny_spec):
    code = (
        "import json, keras, numpy as np, mmkeras\n"
        "from mmkeras.training.strategy import configure_threads\n"
        "configure_threads(THREADS)\n"
        "from mmkeras.data.pipeline import make_dataset\n"
        "spec = mmkeras.load_spec('tiny')\n"
        "keras.utils.set_random_seed(0)\n"
        "model = mmkeras.build_classifier(spec, units=8, embed_dim=8)\n"
        "probabilities = model.predict(make_dataset(spec, 'test', batch_size=8), verbose=0)\n"
        "outputs = probabilities if isinstance(probabilities, dict) else {'output': probabilities}\n"
        "print(json.dumps({name: np.asarray(value, float).tolist() for name, value in outputs.items()}))\n"
    )
    one, default = (_fresh_process(code.replace("THREADS", str(threads))) for threads in (1, 0))
    assert sorted(one) == sorted(default)
    for name in one:
        np.testing.assert_allclose(np.array(one[name]), np.array(default[name]), rtol=1e-4, atol=1e-6, err_msg=name)


def test_thread_counts_are_checked():
    with pytest.raises(ValueError, match="RuntimeConfig.intra_op_threads"):
        RuntimeConfig(intra_op_threads=-1)
    with pytest.raises(ValueError, match="RuntimeConfig.inter_op_threads"):
        RuntimeConfig(inter_op_threads=1.5)
    assert RuntimeConfig(intra_op_threads=0).intra_op_threads == 0
