"""Distributed training in fresh processes: MirroredStrategy over two logical CPUs, and two workers on loopback."""
from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest

from mmkeras.training.run_dir import RunPaths, read_history


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus(workers, tmp_path):
    # Logical devices must be configured before TensorFlow starts: hence a fresh process.
    code, output, result = workers.run(
        [str(tmp_path / "run"), "--strategy", "mirrored", "--logical-cpus", "2", "--no-validation",
         "--scale-learning-rate"]
    )
    assert code == 0, output[-3000:]
    assert result["strategy_name"] == "mirrored" and result["num_replicas"] == 2
    paths = RunPaths(tmp_path / "run")
    history = read_history(paths.history_csv)
    assert history["epoch"] == [0] and np.isfinite(history["loss"][0])
    assert json.loads(paths.summary.read_text())["learning_rate"] == pytest.approx(2e-3)  # 1e-3 x 2 replicas


@pytest.mark.slow
def test_two_workers_on_loopback_train_the_same_weights(workers, tmp_path):
    addresses = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    processes = []
    try:
        for index in range(2):
            tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
            processes.append(workers.start(
                [str(tmp_path / "run"), "--strategy", "multi_worker", "--no-validation",
                 "--weights-out", str(tmp_path / f"weights-{index}.npz")],
                env={"TF_CONFIG": json.dumps(tf_config)},
            ))
        deadline = time.monotonic() + workers.timeout
        finished = [workers.finish(process, timeout=max(1.0, deadline - time.monotonic())) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for code, output, _ in finished:
        assert code == 0, output[-3000:]
    chief, other = (result for _, _, result in finished)
    assert chief["strategy_name"] == other["strategy_name"] == "multi_worker"
    assert chief["num_replicas"] == other["num_replicas"] == 2
    assert (chief["is_chief"], other["is_chief"]) == (True, False)

    paths = RunPaths(tmp_path / "run")
    assert paths.final_model.is_file() and paths.worker("worker-1").final_model.is_file()
    first, second = (np.load(tmp_path / f"weights-{index}.npz") for index in range(2))
    assert len(first.files) == len(second.files) > 10
    for name in first.files:
        np.testing.assert_allclose(first[name], second[name], rtol=1e-5, atol=1e-6, err_msg=name)
