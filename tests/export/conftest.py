"""One shared export for the export tests (helpers live in export_helpers.py)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from export_helpers import build_small


@pytest.fixture(scope="session")
def exported(tiny_spec, tmp_path_factory):
    """An attention classifier (it has `modality_weights`) exported once: model, spec, path, base_dir, loaded."""
    import tensorflow as tf

    from mmkeras.export import export_for_serving

    model = build_small(tiny_spec, "attention")
    base_dir = tmp_path_factory.mktemp("saved_models")
    path = export_for_serving(model, tiny_spec, base_dir)
    return SimpleNamespace(
        model=model, spec=tiny_spec, path=path, base_dir=base_dir, loaded=tf.saved_model.load(str(path))
    )
