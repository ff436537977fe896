"""`predict_run`: classify raw rows with a training run folder's best model, what `mmkeras predict` runs."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from mmkeras.models.predict import predict
from mmkeras.runs.load import load_run


def predict_run(run_dir: str | os.PathLike, rows: Sequence[Mapping[str, Any]], *,
                base_dir: str | os.PathLike | None = None) -> list[dict]:
    """`predict` with the best model and spec of a training run folder."""
    model, spec = load_run(run_dir)
    return predict(model, spec, rows, base_dir=base_dir)
