"""Evaluation: metrics, modality reliance and plots. `mmkeras.evaluate(model, spec)` is `report.evaluate`.

Names are imported on first use.
"""
from __future__ import annotations

from mmkeras._lazy import lazy_attributes

# Public name -> module that defines it. Written out once; read-only.
_EXPORTS = {
    "evaluate": "mmkeras.evaluation.report",
    "absence_warnings": "mmkeras.evaluation.reliance",
    "generalisation_gaps": "mmkeras.evaluation.reliance",
}

__all__ = ["absence_warnings", "evaluate", "generalisation_gaps"]


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
