"""evaluate(): report keys, modality reliance and non-empty PNG plots on `tiny`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mmkeras
from mmkeras.evaluation.reliance import absence_warnings, conditions, perturb

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def attention_model(tiny_spec, tiny_model):
    return mmkeras.build_classifier(tiny_spec, fusion="attention", seed=0, **tiny_model())


def test_report_has_every_key_and_writes_non_empty_pngs(attention_model, tiny_spec, tmp_path):
    report = mmkeras.evaluate(attention_model, tiny_spec, "test", output_dir=tmp_path,
                              history={"loss": [1.0, 0.5], "val_loss": [1.2, 0.8]})
    for key in ("accuracy", "macro_f1", "per_class", "confusion_matrix", "reliance", "modality_weights", "num_examples"):
        assert key in report
    assert report["num_examples"] == 24
    assert np.array(report["confusion_matrix"]).sum() == 24
    assert set(report["reliance"]) == {"caption", "picture", "sound"}
    assert set(report["reliance"]["sound"]) == {"full", "absent", "shuffled", "absent_drop", "shuffled_drop"}
    assert report["reliance"]["sound"]["full"] == report["accuracy"]
    assert report["warnings"] == absence_warnings(report["reliance"], report["accuracy"])
    np.testing.assert_allclose(sum(report["modality_weights"].values()), 1.0, rtol=1e-5)
    for name in ("confusion_matrix", "reliance", "modality_weights", "training_curves"):
        data = Path(report["files"][name]).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000, name
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["accuracy"] == report["accuracy"]

    # Calibration before and after (fitted on the validation split), per presence pattern.
    calibration = report["calibration"]
    assert calibration["fitted_on"] == "validation" and len(calibration["temperatures"]) == 1
    assert set(calibration["patterns"]) == {"all_inputs", "caption_absent", "picture_absent", "sound_absent"}
    for pattern in calibration["patterns"].values():
        for stage in ("before", "after"):
            assert set(pattern[stage]) >= {"ece", "nll", "brier", "accuracy", "bins"}
            assert pattern[stage]["num_examples"] == 24 and len(pattern[stage]["bins"]["count"]) == 15
        assert pattern["after"]["accuracy"] == pattern["before"]["accuracy"]  # calibration keeps the argmax
    assert calibration["patterns"]["all_inputs"]["before"]["accuracy"] == pytest.approx(report["accuracy"])
    # Occlusion attribution shares: per class and overall, summing to 1.
    attribution = report["attribution"]
    assert attribution["method"] == "occlusion"
    np.testing.assert_allclose(sum(attribution["overall"].values()), 1.0, rtol=1e-6)
    assert set(attribution["per_class"]) == set(tiny_spec.label.class_names)
    for name in ("reliability", "attribution"):
        data = Path(report["files"][name]).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000, name


def test_report_without_output_dir_writes_nothing_and_concat_has_no_weights(tiny_spec, tmp_path, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    model = mmkeras.build_classifier(tiny_spec, fusion="concat", seed=0, **tiny_model())
    report = mmkeras.evaluate(model, tiny_spec, "validation")
    assert report["modality_weights"] is None and report["files"] == {}
    # Evaluated on the only held-out split: nothing to fit a temperature on, so no "after".
    assert report["calibration"]["temperatures"] is None
    assert report["calibration"]["patterns"]["all_inputs"]["after"] is None
    assert list(tmp_path.iterdir()) == []


def test_perturb_marks_absent_or_shuffles_one_modality_only():
    batch = {"a": np.arange(6), "a_present": np.ones(6, bool), "b": np.arange(6) * 10, "b_present": np.ones(6, bool)}
    rng = np.random.default_rng(0)
    absent = perturb(batch, "a", "absent", rng)
    assert not absent["a_present"].any() and absent["b_present"].all()
    np.testing.assert_array_equal(absent["a"], batch["a"])
    shuffled = perturb(batch, "b", "shuffled", rng)
    assert sorted(shuffled["b"]) == sorted(batch["b"]) and not np.array_equal(shuffled["b"], batch["b"])
    np.testing.assert_array_equal(shuffled["a"], batch["a"])
    assert batch["a_present"].all()  # the input batch is untouched


def test_conditions_cover_each_modality_twice(tiny_spec):
    names = [name for name, _, _ in conditions(tiny_spec)]
    assert names[0] == "full" and len(names) == 1 + 2 * len(tiny_spec.features)


def test_absence_warnings_name_each_modality_the_model_scores_better_without():
    reliance = {"text": {"absent": 0.35}, "image": {"absent": 0.2}, "audio": {"absent": 0.30}}
    warnings = absence_warnings(reliance, 0.285)
    assert len(warnings) == 2
    assert warnings[0].startswith("Accuracy is higher with text marked absent (0.3500) than with every input (0.2850)")
    assert "with audio marked absent (0.3000)" in warnings[1]
    assert absence_warnings(reliance, 0.35) == []  # equal is no warning
