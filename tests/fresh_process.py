"""tests/ helper: run Python code in a fresh process (TensorFlow logs some lines once per process)."""
from __future__ import annotations

import os
import subprocess
import sys


def run_fresh(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `code` in a new interpreter with TensorFlow's errors shown, as the CLI shows them; it must succeed."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}  # errors only
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                            timeout=timeout, env=environment)
    assert result.returncode == 0, result.stderr
    return result
