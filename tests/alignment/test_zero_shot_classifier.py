"""Zero-shot classifiers from text prompts, on a tiny CLIP preset saved here (random weights, no network)."""
from __future__ import annotations

import keras
import keras_hub  # the extra mmkeras[keras-hub], which .ci/run installs
import keras_hub_presets  # tests/ helper: tiny presets
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.alignment.zero_shot_classifier import build_zero_shot_classifier
from mmkeras.branches.kerashub import KerasHubEncoder
from mmkeras.models.zero_shot_head import ZeroShotHead

CLASSES = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return keras_hub_presets.save_clip(tmp_path_factory.mktemp("clip") / "clip")


def test_probabilities_are_a_softmax_over_scaled_cosine_similarities(clip):
    model = build_zero_shot_classifier(f"keras_hub:{clip}", f"keras_hub:{clip}", CLASSES)
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3)).astype("uint8")
    present = np.array([True, True, True, False])
    probabilities = model.predict({"image": images, "image_present": present}, verbose=0)["probabilities"]
    assert probabilities.shape == (4, 3)
    np.testing.assert_allclose(probabilities[3], [1 / 3] * 3, rtol=1e-6)  # an absent image: no evidence
    probabilities = model.predict({"image": images, "image_present": present | True}, verbose=0)["probabilities"]

    # By hand, from KerasHub's own backbone: the projected embeddings, their cosines, the learned scale.
    backbone = keras_hub.models.Backbone.from_preset(clip)
    text = KerasHubEncoder(clip, modality="text")
    token_ids, _ = text.packer(text.tokenizer(tf.constant([f"a photo of a {name}." for name in CLASSES])))
    prompts = np.asarray(backbone.get_text_embeddings(token_ids))
    pictures = np.asarray(backbone.get_vision_embeddings(images.astype("float32") / 255.0))
    cosines = (pictures / np.linalg.norm(pictures, axis=1, keepdims=True)) @ (
        prompts / np.linalg.norm(prompts, axis=1, keepdims=True)
    ).T
    scale = float(np.exp(backbone.get_layer("clip_head").logit_scale.numpy()))
    logits = scale * cosines
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probabilities, expected / expected.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)
    # KerasHub's CLIP head computes the same logits.
    vision_logits = backbone({"images": tf.constant(images / 255.0, tf.float32), "token_ids": token_ids})["vision_logits"]
    np.testing.assert_allclose(logits, vision_logits, rtol=1e-4, atol=1e-4)


def test_towers_as_models_need_a_logit_scale_and_take_the_given_one():
    image_tower = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    text_tower = keras.layers.StringLookup(vocabulary=["a photo of a cat.", "a photo of a dog."], output_mode="one_hot")
    with pytest.raises(ValueError, match="pass `logit_scale`"):
        build_zero_shot_classifier(image_tower, text_tower, ["cat", "dog"])
    model = build_zero_shot_classifier(image_tower, text_tower, ["cat", "dog"], logit_scale=5.0)
    assert model.input["image"].dtype == "float32"  # the tower's own input dtype
    images = np.random.default_rng(1).random((2, 4, 4, 3)).astype("float32")
    embeddings = image_tower.predict(images, verbose=0)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    logits = 5.0 * unit[:, 1:3]  # the prompts' one-hot embeddings are axes 1 and 2 (0 is out of vocabulary)
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = model.predict({"image": images, "image_present": np.ones(2, bool)}, verbose=0)["probabilities"]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_arguments_are_checked(clip):
    with pytest.raises(ValueError, match="two or more distinct class names"):
        build_zero_shot_classifier(f"keras_hub:{clip}", f"keras_hub:{clip}", ["cat", "cat"])
    with pytest.raises(ValueError, match="`template` must be a string with"):
        build_zero_shot_classifier(f"keras_hub:{clip}", f"keras_hub:{clip}", CLASSES, template="a photo")
    with pytest.raises(ValueError, match="`logit_scale` must be a positive number"):
        ZeroShotHead(np.eye(2), logit_scale=0.0)
    with pytest.raises(ValueError, match="all zeros"):
        ZeroShotHead(np.zeros((2, 3)), logit_scale=1.0)


def test_zero_shot_head_survives_save_and_load(tmp_path, monkeypatch):
    from mmkeras.models.saving import load_classifier

    inputs = keras.Input((3,))
    model = keras.Model(inputs, ZeroShotHead(np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0]]), logit_scale=7.0)(inputs))
    batch = np.random.default_rng(0).random((2, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(restored.predict(batch, verbose=0), model.predict(batch, verbose=0), rtol=1e-6)
    # load_classifier (run folders, `mmkeras predict`) names it itself, whatever was imported before.
    monkeypatch.delitem(keras.saving.get_custom_objects(), keras.saving.get_registered_name(ZeroShotHead))
    restored = load_classifier(tmp_path / "m.keras")
    np.testing.assert_allclose(restored.predict(batch, verbose=0), model.predict(batch, verbose=0), rtol=1e-6)


@pytest.mark.slow
def test_zero_shot_model_evaluates_exports_serves_and_predicts_as_a_classifier(clip, tiny_spec, tmp_path, capsys):
    import csv
    import json

    from mmkeras.cli import main
    from mmkeras.data.pipeline import make_dataset
    from mmkeras.evaluation.report import evaluate
    from mmkeras.export.saved_model import export_for_serving
    from mmkeras.serving import Client
    from mmkeras.serving._loopback import LoopbackServer
    from mmkeras.training.save_run import save_run

    # A one-feature spec whose class names are the prompts' (tiny's red/green/blue).
    spec = tiny_spec.with_features(["picture"])
    model = build_zero_shot_classifier(f"keras_hub:{clip}", f"keras_hub:{clip}", spec.label.class_names,
                                       input_name="picture", input_shape=spec.feature("picture").shape)
    features, _ = next(iter(make_dataset(spec, "test", batch_size=6)))
    expected = model.predict(features, verbose=0)["probabilities"]

    report = evaluate(model, spec, "test", output_dir=tmp_path / "evaluation")
    assert report["num_examples"] == 24 and 0.0 <= report["accuracy"] <= 1.0
    assert set(report["reliance"]) == {"picture"} and report["calibration"]["fitted_on"] == "validation"

    version_dir = export_for_serving(model, spec, tmp_path / "saved", check_split="test", check_examples=8,
                                     measure_batching=False)
    assert version_dir.parent.name == "tiny_zero_shot"
    skew = json.loads((version_dir / "assets.extra" / "skew_check.json").read_text())
    assert skew["max_abs_diff"] <= skew["tolerance"]

    with open(spec.data_dir / "manifest.csv", newline="", encoding="utf-8") as stream:
        rows = [row for row in csv.DictReader(stream) if row["split"] == "test"][:6]
    rows[5]["picture"] = ""  # missing: uniform probabilities, served as in Keras
    expected[5] = 1 / 3
    with LoopbackServer(version_dir) as server:  # raw PNG bytes (or "" for a missing picture) over the wire
        for protocol in ("grpc", "rest"):
            client = Client(server.host, rest_port=server.rest_port, grpc_port=server.grpc_port,
                            model_name=server.model_name, spec=spec, root=spec.data_dir)
            outputs = client.predict(rows, protocol=protocol)
            np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
            assert list(outputs["class_name"]) == [spec.label.class_names[i] for i in expected.argmax(1)]

    run = save_run(model, spec, tmp_path / "run")
    row = tmp_path / "row.json"
    row.write_text(json.dumps([{"picture": str(spec.data_dir / rows[0]["picture"])}, {"picture": ""}]))
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(row)]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()[-2:]]
    np.testing.assert_allclose([list(a["probabilities"].values()) for a in answers], expected[[0, 5]], atol=1e-5)
