"""export_for_serving: raw-input signatures for every fusion, versions, layout, warm-up file and saved_model_cli."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from export_helpers import build_small

from mmkeras import FUSIONS
from mmkeras.export import (
    archive,
    check_export,
    export_for_serving,
    read_metadata,
    resolve_version_dir,
)
from mmkeras.export import saved_model as saved_model_module
from mmkeras.export import signatures as sig
from mmkeras.export.requests import example_columns
from mmkeras.export.warmup import WARMUP_FILE, read_warmup_file

EXTRA = saved_model_module.EXTRA_DIR


def _call(loaded, name, columns):
    outputs = loaded.signatures[name](**{key: tf.constant(value) for key, value in columns.items()})
    return {key: value.numpy() for key, value in outputs.items()}


@pytest.mark.slow
@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_every_fusion_exports_raw_signatures_that_match_the_keras_model(tiny_spec, fusion, tmp_path):
    model = build_small(tiny_spec, fusion)
    path = export_for_serving(model, tiny_spec, tmp_path, measure_batching=False)  # measured in test_batching.py
    assert path == tmp_path / f"tiny_{fusion}" / "1"
    loaded = tf.saved_model.load(str(path))
    assert sorted(loaded.signatures) == sorted(sig.signature_names(tiny_spec))
    outputs = set(loaded.signatures[sig.DEFAULT].structured_outputs)
    expected = {"probabilities", "class_id", "class_name"} | ({"modality_weights"} if fusion == "attention" else set())
    assert outputs == expected
    # Real test-split examples: raw bytes through every signature vs make_dataset + the Keras model.
    report = check_export(path, tiny_spec, "test", n=8, model=model, signature_names=(sig.DEFAULT,))
    assert report.num_examples == 8
    assert report.max_abs_diff <= 1e-5, str(report)


def test_export_writes_the_serving_layout(exported):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    model_dir = exported.base_dir / "tiny_attention"
    assert exported.path == model_dir / "1"
    extra = exported.path / EXTRA
    for name in (WARMUP_FILE, "request_instances.json", "request_inputs.json", "saved_model_cli_inputs.npz",
                 "model.keras", "mmkeras_export.json"):
        assert (extra / name).is_file(), name
    config = text_format.Parse((model_dir / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == ("tiny_attention", "/models/tiny_attention",
                                                                    "tensorflow")
    readme = (model_dir / "README.md").read_text()
    assert "docker run" in readme and "tiny_attention" in readme and "serving_with_presence" in readme
    metadata = read_metadata(model_dir)
    assert metadata["class_names"] == ["red", "green", "blue"]
    assert metadata["spec"]["name"] == "tiny" and metadata["version"] == 1
    assert metadata["signatures"][sig.DEFAULT] == ["caption", "picture", "sound"]
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")], "a staging folder was left behind"


def test_signatures_take_raw_inputs_named_after_the_features(exported):
    signatures = exported.loaded.signatures
    default = signatures[sig.DEFAULT].structured_input_signature[1]
    assert {name: (spec.dtype, spec.shape.as_list()) for name, spec in default.items()} == {
        name: (tf.string, [None]) for name in ("caption", "picture", "sound")
    }
    flags = signatures[sig.WITH_PRESENCE].structured_input_signature[1]
    assert flags["sound_present"].dtype == tf.bool and set(flags) == set(default) | {
        "caption_present", "picture_present", "sound_present"}
    waveform = signatures[sig.WAVEFORM].structured_input_signature[1]
    assert (waveform["sound"].dtype, waveform["sound"].shape.as_list()) == (tf.float32, [None, None])
    decoded = signatures[sig.DECODED].structured_input_signature[1]
    assert (decoded["picture"].dtype, decoded["picture"].shape.as_list()) == (tf.uint8, [None, 16, 16, 3])
    outputs = signatures[sig.DEFAULT].structured_outputs
    assert outputs["class_name"].dtype == tf.string and outputs["class_id"].dtype == tf.int32


def test_outputs_name_the_class_and_weight_present_modalities_only(exported):
    columns = example_columns(exported.spec, sig.DEFAULT, batch_size=3)  # row 1: no caption, row 2: no picture
    outputs = _call(exported.loaded, sig.DEFAULT, columns)
    probabilities = outputs["probabilities"]
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(outputs["class_id"], probabilities.argmax(axis=1))
    names = np.array(exported.spec.label.class_names)[outputs["class_id"]]
    assert [name.decode() for name in outputs["class_name"]] == list(names)
    weights = outputs["modality_weights"]
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    assert weights[1, 0] == 0.0 and weights[2, 1] == 0.0 and weights[0].min() > 0.0
    expected = exported.model.predict(example_columns(exported.spec, sig.DECODED, batch_size=3), verbose=0)
    np.testing.assert_allclose(probabilities, expected["probabilities"], atol=1e-5)


def test_presence_flags_and_empty_strings_mean_the_same(exported):
    columns = example_columns(exported.spec, sig.DEFAULT, batch_size=3)
    with_flags = example_columns(exported.spec, sig.WITH_PRESENCE, batch_size=3)
    # Where a flag is False the value is ignored: garbage there changes nothing.
    with_flags["picture"] = np.array([v if v else b"not an image" for v in with_flags["picture"]], object)
    default = _call(exported.loaded, sig.DEFAULT, columns)["probabilities"]
    flagged = _call(exported.loaded, sig.WITH_PRESENCE, with_flags)["probabilities"]
    np.testing.assert_allclose(flagged, default, atol=1e-6)
    # And a missing modality really changes the answer (it is not silently decoded).
    everything = dict(columns, caption=np.array(["example text number 0"] * 3, object))
    assert not np.allclose(_call(exported.loaded, sig.DEFAULT, everything)["probabilities"][1], default[1])


def test_waveform_signature_matches_wav_bytes(exported):
    waveform = example_columns(exported.spec, sig.WAVEFORM, batch_size=3)
    flagged = example_columns(exported.spec, sig.WITH_PRESENCE, batch_size=3)
    got = _call(exported.loaded, sig.WAVEFORM, waveform)["probabilities"]
    np.testing.assert_allclose(got, _call(exported.loaded, sig.WITH_PRESENCE, flagged)["probabilities"], atol=1e-6)
    # A longer clip is cropped to the spec's length, as a longer WAV file is.
    longer = dict(waveform, sound=np.pad(waveform["sound"], [(0, 0), (0, 500)]))
    np.testing.assert_allclose(_call(exported.loaded, sig.WAVEFORM, longer)["probabilities"], got, atol=1e-6)


def test_warmup_file_holds_prediction_logs_that_the_model_answers(exported):
    logs = read_warmup_file(exported.path / EXTRA / WARMUP_FILE)
    assert {log.predict_log.request.model_spec.signature_name for log in logs} == set(
        sig.signature_names(exported.spec))
    for log in logs:
        request = log.predict_log.request
        assert log.WhichOneof("log_type") == "predict_log"
        assert request.model_spec.name == "tiny_attention"
        function = exported.loaded.signatures[request.model_spec.signature_name]
        assert set(request.inputs) == set(function.structured_input_signature[1])
        outputs = function(**{name: tf.make_ndarray(proto) for name, proto in request.inputs.items()})
        assert outputs["probabilities"].shape[0] == request.inputs["caption"].tensor_shape.dim[0].size


def test_example_rest_bodies_are_answered_by_the_signature(exported):
    from mmkeras.serving._loopback import SavedModelBackend, rest_predict

    backend = SavedModelBackend(exported.path)
    expected = _call(exported.loaded, sig.DEFAULT, example_columns(exported.spec, sig.DEFAULT))["probabilities"]
    instances = json.loads((exported.path / EXTRA / "request_instances.json").read_text())
    assert instances["signature_name"] == sig.DEFAULT and set(instances["instances"][0]["picture"]) == {"b64"}
    answer = rest_predict(backend, instances)
    np.testing.assert_allclose([row["probabilities"] for row in answer["predictions"]], expected, atol=1e-6)
    inputs = json.loads((exported.path / EXTRA / "request_inputs.json").read_text())
    answer = rest_predict(backend, inputs)
    np.testing.assert_allclose(answer["outputs"]["probabilities"], expected, atol=1e-6)


@pytest.mark.slow
def test_versions_count_up_and_are_never_overwritten(exported, tmp_path):
    model_dir = tmp_path / "tiny_attention"
    shutil.copytree(exported.base_dir / "tiny_attention", model_dir)
    second = export_for_serving(exported.model, exported.spec, tmp_path)
    assert second == model_dir / "2"
    assert archive.versions(model_dir) == [1, 2]
    assert resolve_version_dir(model_dir) == second
    assert read_metadata(model_dir)["version"] == 2
    before = (model_dir / "1" / "saved_model.pb").read_bytes()
    with pytest.raises(FileExistsError, match=r"never overwritten.*\(3\)"):
        export_for_serving(exported.model, exported.spec, tmp_path, version=1)
    assert (model_dir / "1" / "saved_model.pb").read_bytes() == before
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "1", "2", "README.md", "batching_parameters.txt", "models.config"
    ]


@pytest.mark.parametrize("kwargs, message", [
    ({"version": 0}, "positive integer"),
    ({"version": True}, "positive integer"),
    ({"version": "2"}, "positive integer"),
    ({"name": "no spaces/allowed"}, "not a valid"),
])
def test_bad_names_and_versions_fail_before_writing(exported, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export_for_serving(exported.model, exported.spec, tmp_path, **kwargs)
    assert not any(p.is_dir() and p.name.isdigit() for p in tmp_path.rglob("*"))


def test_a_model_that_does_not_fit_the_spec_is_refused(exported, tmp_path):
    from mmkeras.spec import LabelSpec

    other = exported.spec.replace(label=LabelSpec("label", ("a", "b", "c", "d")))
    with pytest.raises(ValueError, match="predicts 3 classes"):
        export_for_serving(exported.model, other, tmp_path)
    assert archive.versions(tmp_path / "tiny_attention") == []
    assert not list((tmp_path / "tiny_attention").iterdir())


def test_default_model_name(exported):
    assert saved_model_module.default_model_name(exported.model, exported.spec) == "tiny_attention"
    renamed = type("Named", (), {"name": "my model"})()
    assert saved_model_module.default_model_name(renamed, exported.spec) == "tiny_my_model"


@pytest.mark.slow
def test_saved_model_cli_shows_and_runs_the_export(exported, tmp_path):
    """`saved_model_cli show --all` lists the signatures; `run` works on the example inputs written next to it."""
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    show = subprocess.Popen([*cli, "show", "--dir", str(exported.path), "--all"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    command = saved_model_module.cli_run_command(exported.spec, ".").split(" ", 1)[1]
    run_args = command.replace("'", "").split(" ")
    run = subprocess.Popen([*cli, *run_args, "--outdir", str(tmp_path / "out")], cwd=exported.path,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    shown, ran = show.communicate(timeout=300)[0], run.communicate(timeout=300)[0]
    assert show.returncode == 0, shown[-2000:]
    for name in (*sig.signature_names(exported.spec), "caption_present", "class_name", "modality_weights"):
        assert name in shown
    assert run.returncode == 0, ran[-2000:]
    expected = _call(exported.loaded, sig.DEFAULT, example_columns(exported.spec, sig.DEFAULT))
    np.testing.assert_allclose(np.load(tmp_path / "out" / "probabilities.npy"), expected["probabilities"], atol=1e-6)
