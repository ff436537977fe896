"""Run-folder adapters: everything that starts from a training run folder, above the layers it calls.

A run folder is what `mmkeras.train` writes (`mmkeras.training.run_dir`).
Modules: `load` (`load_run`, `load_run_spec`), `evaluate` (`evaluate_run`),
`export` (`export_run`) and `predict` (`predict_run`); each loads the run and
makes one call into `mmkeras.evaluation`, `mmkeras.export` or
`mmkeras.models`. The CLI sits beside them. Names are imported on first use.
"""
from __future__ import annotations

from mmkeras._lazy import lazy_attributes

# Public name -> module that defines it. Written out once; read-only.
_EXPORTS = {
    "load_run": "mmkeras.runs.load",
    "load_run_spec": "mmkeras.runs.load",
    "evaluate_run": "mmkeras.runs.evaluate",
    "export_run": "mmkeras.runs.export",
    "predict_run": "mmkeras.runs.predict",
}

# The same names as `_EXPORTS`, sorted.
__all__ = [
    "evaluate_run",
    "export_run",
    "load_run",
    "load_run_spec",
    "predict_run",
]


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
