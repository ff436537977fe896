"""check_export: the SavedModel on raw examples agrees with make_dataset + Keras, and catches a skewed decoder."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from export_helpers import build_small

from mmkeras.data import decoders
from mmkeras.export import ExportSkewError, check_export, export_for_serving
from mmkeras.export import signatures as sig
from mmkeras.export.saved_model import versions

REPO_ROOT = Path(__file__).resolve().parents[2]


def _inverted_image_decoder(feature, encoded_bytes, **options):
    """A decoder with a bug: it inverts the pixels (as a pipeline that drifted from serving would)."""
    return 255 - decoders.decode_image(feature, encoded_bytes, **options)


def test_check_export_passes_on_tiny(exported):
    report = check_export(exported.path, exported.spec)  # compares with the model.keras saved in the export
    assert report.passed and report.max_abs_diff <= 1e-5
    assert report.num_examples == 24 and report.split == "test"  # the whole tiny test split (n=64 asked)
    assert set(report.diffs) == set(sig.signature_names(exported.spec))
    assert "max |diff|" in str(report)


def test_check_export_fails_on_a_skewed_image_decoder(exported, monkeypatch):
    # The export is already written: only the training pipeline's side sees the skewed decoder.
    monkeypatch.setitem(decoders.DECODERS, "image", _inverted_image_decoder)
    with pytest.raises(ExportSkewError, match="decod") as caught:
        check_export(exported.path, exported.spec, n=8, model=exported.model)
    report = caught.value.report
    assert not report.passed and report.diffs[sig.DEFAULT] > 1e-5
    assert report.diffs[sig.DECODED] <= 1e-5  # same tensors in, same answers: the decoders are to blame


def test_check_export_refuses_a_spec_with_other_features(exported):
    with pytest.raises(ValueError, match="takes inputs"):
        check_export(exported.path, exported.spec.with_features(["caption", "picture"]), n=4)
    with pytest.raises(ValueError, match="Unknown signature"):
        check_export(exported.path, exported.spec, n=4, signature_names=("serving_nothing",))


@pytest.mark.slow
def test_an_export_that_fails_its_check_is_never_published(exported, tmp_path, monkeypatch):
    skewed = decoders.make_example_decoder

    def make_skewed_decoder(spec, **options):
        decode = skewed(spec, **options)

        def decode_with_skew(raw, label):
            features, label = decode(raw, label)
            return dict(features, picture=255 - features["picture"]), label

        return decode_with_skew

    # Only make_dataset builds its decoder with make_example_decoder; the export decodes with decode_batch.
    monkeypatch.setattr(decoders, "make_example_decoder", make_skewed_decoder)
    with pytest.raises(ExportSkewError):
        export_for_serving(exported.model, exported.spec, tmp_path, check_split="test", check_examples=8)
    model_dir = tmp_path / "tiny_attention"
    assert versions(model_dir) == [] and not list(model_dir.iterdir())


def _fsdd_dir() -> Path | None:
    candidates = [REPO_ROOT.parent / "shared" / "data" / "fsdd"]
    if os.environ.get("MMKERAS_DATA_DIR"):
        candidates.insert(0, Path(os.environ["MMKERAS_DATA_DIR"]) / "fsdd")
    return next((c for c in candidates if (c / "recordings").is_dir()), None)


@pytest.mark.slow
@pytest.mark.skipif(_fsdd_dir() is None, reason="avmnist needs FSDD: expected $MMKERAS_DATA_DIR/fsdd/recordings "
                    "or ../shared/data/fsdd/recordings")
def test_avmnist_export_passes_the_skew_check(tmp_path):
    from mmkeras.datasets import avmnist
    from mmkeras.spec import load_spec

    # A small build of the real dataset (same noise as the spec), so the check reads real digits and voices.
    data_dir = tmp_path / "avmnist"
    spec = load_spec("avmnist")
    avmnist.build(data_dir, **{**spec.source_options, "num_examples": 240}, fsdd_dir=_fsdd_dir())
    spec = spec.replace(data_dir=data_dir, source=None)
    model = build_small(spec, "concat")
    path = export_for_serving(model, spec, tmp_path / "saved_models", check_split="test", check_examples=64)
    report = check_export(path, spec, "test", n=64)
    assert report.passed and report.num_examples == 64
    assert set(report.diffs) == {sig.DEFAULT, sig.WITH_PRESENCE, sig.WAVEFORM, sig.EXPLAIN, sig.DECODED}
    assert np.isfinite(report.max_abs_diff)
