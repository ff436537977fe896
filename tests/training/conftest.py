"""Helpers for the training tests: run `train_worker.py` in fresh processes, never hanging."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

WORKER = Path(__file__).with_name("train_worker.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
# Long enough for a loaded 2-core CI machine, short enough never to hang it.
TIMEOUT_SECONDS = 180


def start_worker(args: list[str], *, env: dict | None = None) -> subprocess.Popen:
    """Start `train_worker.py ARGS` with the test session's environment (and its dataset cache)."""
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish_worker(process: subprocess.Popen, timeout: float = TIMEOUT_SECONDS) -> tuple[int, str, dict | None]:
    """Wait for a worker (killing it on timeout); return its exit code, output and RESULT record."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"train_worker.py did not finish in {timeout} s; its output ends with:\n{output[-3000:]}")
    results = [line[len("RESULT "):] for line in output.splitlines() if line.startswith("RESULT ")]
    return process.returncode, output, json.loads(results[-1]) if results else None


def run_worker(args: list[str], *, env: dict | None = None) -> tuple[int, str, dict | None]:
    """Run `train_worker.py ARGS` to the end; see `finish_worker`."""
    return finish_worker(start_worker(args, env=env))



@pytest.fixture
def workers(tiny_spec):
    """`start`, `finish`, `run` and the `timeout` of `train_worker.py` processes, with the tiny data built first."""
    return SimpleNamespace(start=start_worker, finish=finish_worker, run=run_worker, timeout=TIMEOUT_SECONDS)
