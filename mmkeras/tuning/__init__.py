"""Tuning: KerasTuner searches whose trials are `mmkeras.train` runs.

Needs the optional extra `pip install "mmkeras[tune]"` (KerasTuner). Names are
imported on first use. `mmkeras.tune(spec, ...)` is `mmkeras.tuning.search.tune`.
"""
from __future__ import annotations

from mmkeras._lazy import lazy_attributes

# Public name -> module that defines it. Written out once; read-only.
_EXPORTS = {
    "tune": "mmkeras.tuning.search",
    "TuneResult": "mmkeras.tuning.search",
    "search_spec": "mmkeras.tuning.search",
    "trial_config": "mmkeras.tuning.search",
    "SearchSpace": "mmkeras.tuning.space",
    "DEFAULT_SEARCH_SPACE": "mmkeras.tuning.space",
    "make_search_space": "mmkeras.tuning.space",
    "load_search_space": "mmkeras.tuning.space",
    "influence": "mmkeras.tuning.report",
    "plot_search": "mmkeras.tuning.report",
    "write_trials_csv": "mmkeras.tuning.report",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 - the export table is the one list of names


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
