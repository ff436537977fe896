"""Evaluation: metrics, modality reliance and plots. `mmkeras.evaluate(model, spec)` calls `report.evaluate`."""
from __future__ import annotations

from mmkeras._callable import make_module_callable
from mmkeras.evaluate.report import evaluate

make_module_callable(__name__, evaluate)

__all__ = ["evaluate"]
