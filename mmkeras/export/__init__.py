"""Export for TF Serving: raw-input SavedModels, warm-up requests, batching, the skew check and the serving benchmark.

Modules: `saved_model` (`export_for_serving`), `signatures` (the serving
signatures), `requests` (example inputs), `warmup` (TF Serving warm-up file),
`batching` (`measure_batching`: the throughput curve and
`batching_parameters.txt`), `check` (`check_export`) and `benchmark`
(`benchmark_serving`, `run_serving_benchmark`). Names are imported on first use.
"""
from __future__ import annotations

from mmkeras._lazy import lazy_attributes

# Public name -> module that defines it. Written out once; read-only.
_EXPORTS = {
    "export_for_serving": "mmkeras.export.saved_model",
    "resolve_version_dir": "mmkeras.export.archive",
    "read_metadata": "mmkeras.export.archive",
    "check_export": "mmkeras.export.check",
    "ExportCheck": "mmkeras.export.check",
    "ExportSkewError": "mmkeras.export.check",
    "benchmark_serving": "mmkeras.export.benchmark",
    "measure_batching": "mmkeras.export.batching",
    "BatchingParameters": "mmkeras.export.batching",
    "run_serving_benchmark": "mmkeras.export.benchmark",
}

# The same names as `_EXPORTS`, sorted.
__all__ = [
    "BatchingParameters",
    "ExportCheck",
    "ExportSkewError",
    "benchmark_serving",
    "check_export",
    "export_for_serving",
    "measure_batching",
    "read_metadata",
    "resolve_version_dir",
    "run_serving_benchmark",
]


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
