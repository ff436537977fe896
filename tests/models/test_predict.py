"""predict(): raw rows (text inline, files by path) give the pipeline's answer."""
from __future__ import annotations

import numpy as np
import pytest

import mmkeras
from mmkeras.data.manifest import read_manifest


def test_predict_on_raw_rows_equals_model_on_pipeline(tiny_spec, tiny_model):
    model = mmkeras.build_classifier(tiny_spec, fusion="attention", seed=0, **tiny_model())
    manifest = read_manifest(tiny_spec, "test")
    rows = [{f.name: r.values[f.name] for f in tiny_spec.features} for r in manifest.rows[:4]]
    results = mmkeras.predict(model, tiny_spec, rows, base_dir=manifest.path.parent)
    features, _ = next(iter(mmkeras.make_dataset(tiny_spec, "test", batch_size=4, deterministic=True)))
    expected = model.predict_on_batch(features)["probabilities"]
    got = np.array([list(r["probabilities"].values()) for r in results])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert results[0]["class_name"] in tiny_spec.label.class_names
    assert set(results[0]["modality_weights"]) == {"caption", "picture", "sound"}


def test_predict_reports_missing_files_and_unknown_features(tiny_spec, tmp_path, tiny_model):
    model = mmkeras.build_classifier(tiny_spec, seed=0, **tiny_model())
    with pytest.raises(FileNotFoundError, match="Row 0, feature 'picture'"):
        mmkeras.predict(model, tiny_spec, [{"picture": "nope.png"}], base_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown features \\['video'\\]"):
        mmkeras.predict(model, tiny_spec, [{"video": "x"}])
    # Absent modalities are fine: only a caption.
    assert mmkeras.predict(model, tiny_spec, [{"caption": "a red ball"}])[0]["class_id"] in (0, 1, 2)
