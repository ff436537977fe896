"""serving_explain: the same raw inputs as serving_default, the answers of mmkeras.explain(..., "occlusion")."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mmkeras import explain
from mmkeras.export import signatures as sig
from mmkeras.export.requests import example_columns


def _outputs(loaded, columns):
    outputs = loaded.signatures[sig.EXPLAIN](**{key: tf.constant(value) for key, value in columns.items()})
    return {key: value.numpy() for key, value in outputs.items()}


def test_serving_explain_equals_explain_on_the_same_raw_inputs(exported):
    raw = example_columns(exported.spec, sig.EXPLAIN, batch_size=4)  # rows 1-3 miss one modality each
    decoded = example_columns(exported.spec, sig.DECODED, batch_size=4)
    outputs = _outputs(exported.loaded, raw)
    expected = explain(exported.model, decoded, method="occlusion")
    names = exported.spec.feature_names
    assert set(outputs) == {"probabilities", "class_id", "class_name", *(f"{name}_attribution" for name in names)}
    np.testing.assert_array_equal(outputs["class_id"], expected["class_id"])
    for name in names:
        np.testing.assert_allclose(outputs[f"{name}_attribution"], expected["scores"][name], atol=1e-5)
    np.testing.assert_allclose(outputs["probabilities"].max(axis=1), expected["probability"], atol=1e-5)
    absent = [i for i, name in enumerate(names) if not decoded[f"{name}_present"][i + 1]]
    assert all(outputs[f"{names[i]}_attribution"][i + 1] == 0.0 for i in absent)  # a missing modality scores 0
    assert np.abs(outputs[f"{names[0]}_attribution"]).max() > 0.0


def test_the_skew_check_compares_the_attributions(exported, monkeypatch):
    from mmkeras.export import check as check_module

    report = check_module.check_export(exported.path, exported.spec, n=4, signature_names=(sig.EXPLAIN,))
    assert report.passed and set(report.diffs) == {sig.EXPLAIN}

    def shifted(model, inputs, method):  # an explain whose occlusion scores are off by 0.01
        result = explain(model, inputs, method=method)
        return {**result, "scores": {name: score + 0.01 for name, score in result["scores"].items()}}

    monkeypatch.setattr(check_module, "explain", shifted)
    with pytest.raises(check_module.ExportSkewError, match="serving_explain"):
        check_module.check_export(exported.path, exported.spec, n=4, signature_names=(sig.EXPLAIN,))
