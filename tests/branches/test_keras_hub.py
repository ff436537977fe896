"""KerasHub encoders: `KerasHubEncoder` and the branches' `encoder="keras_hub:..."`, on tiny presets made here.

Each preset (a 2-layer BERT, ViT, CLIP and Whisper with random weights) is saved with
`save_to_preset` into a folder and loaded back with `from_preset`, the path a
downloaded preset takes. No test touches the network.
"""
from __future__ import annotations

import shutil
import socket
import sys
import time

import keras
import keras_hub  # the extra mmkeras[keras-hub], which .ci/run installs
import keras_hub_presets  # tests/ helper: tiny presets
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.branches import build_audio_branch, build_image_branch, build_text_branch
from mmkeras.branches.kerashub import KerasHubEncoder, resolve_preset
from mmkeras.branches.kerashub import presets as presets_module
from mmkeras.spec import FeatureSpec


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    """Folder of each tiny preset, saved once for the module."""
    root = tmp_path_factory.mktemp("keras_hub_presets")
    return {
        "bert": keras_hub_presets.save_bert(root / "bert"),
        "vit": keras_hub_presets.save_vit(root / "vit"),
        "clip": keras_hub_presets.save_clip(root / "clip"),
        "whisper": keras_hub_presets.save_whisper(root / "whisper"),
    }


def _feature(modality, **options):
    shapes = {"text": {"sequence_length": 8, "vocab_size": 16}, "image": {"image_size": [20, 20], "channels": 1},
              "audio": {"sample_rate": 8000, "clip_seconds": 0.25, "num_mel_bins": 16}}
    return FeatureSpec(name=modality, modality=modality, options={**shapes[modality], **options})


def test_text_encoder_packs_raw_strings_as_keras_hub_does(presets):
    encoder = KerasHubEncoder(presets["bert"], modality="text", sequence_length=8)
    texts = tf.constant(["a red ball", "the big dog is blue"])
    outputs = encoder(texts)
    assert outputs["embedding"].shape == (2, keras_hub_presets.HIDDEN)
    assert outputs["sequence"].shape == (2, 8, keras_hub_presets.HIDDEN)
    # KerasHub's own preprocessor and backbone, loaded from the same folder, give the same features.
    preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(presets["bert"], sequence_length=8)
    expected = keras_hub.models.Backbone.from_preset(presets["bert"])(preprocessor(texts))
    np.testing.assert_allclose(outputs["embedding"], expected["pooled_output"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs["sequence"], expected["sequence_output"], rtol=1e-5, atol=1e-6)


def test_image_encoder_converts_pixels_and_pools_the_patches(presets):
    encoder = KerasHubEncoder(presets["vit"], modality="image")
    gray = np.random.default_rng(0).integers(0, 256, (2, 20, 20, 1)).astype("uint8")
    outputs = encoder(gray)
    assert outputs["sequence"].shape == (2, 17, keras_hub_presets.HIDDEN)  # class token + 4x4 patches
    np.testing.assert_allclose(outputs["embedding"], outputs["sequence"].numpy().mean(1), rtol=1e-5, atol=1e-6)
    rgb = np.repeat(gray, 3, axis=-1).astype("float32")
    converter = keras_hub.layers.ImageConverter.from_preset(presets["vit"])
    expected = keras_hub.models.Backbone.from_preset(presets["vit"])(converter(rgb))
    np.testing.assert_allclose(outputs["sequence"], expected, rtol=1e-5, atol=1e-5)


def test_dual_tower_preset_gives_each_modality_its_projected_tower(presets):
    backbone = keras_hub.models.Backbone.from_preset(presets["clip"])
    text = KerasHubEncoder(presets["clip"], modality="text")
    assert text.sequence_length == 12  # the text tower's maximum
    outputs = text(tf.constant(["a photo of a cat", "a photo of a dog"]))
    assert outputs["embedding"].shape == (2, 8) and outputs["sequence"].shape == (2, 1, 8)
    token_ids, _ = text.packer(text.tokenizer(tf.constant(["a photo of a cat", "a photo of a dog"])))
    np.testing.assert_allclose(outputs["embedding"], backbone.get_text_embeddings(token_ids), rtol=1e-5, atol=1e-6)
    assert not np.allclose(outputs["embedding"][0], outputs["embedding"][1])
    images = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3)).astype("float32")
    vision = KerasHubEncoder(presets["clip"], modality="image")(images)
    np.testing.assert_allclose(
        vision["embedding"], backbone.get_vision_embeddings(images / 255.0), rtol=1e-5, atol=1e-5
    )


def test_audio_encoder_runs_whisper_on_the_clip_s_frames(presets):
    encoder = KerasHubEncoder(presets["whisper"], modality="audio")
    waveforms = np.random.default_rng(2).uniform(-0.5, 0.5, (2, 2000)).astype("float32")  # 0.25 s at 8 kHz
    outputs = encoder(waveforms)
    # The converter pads to 1 s (125 encoder frames); a quarter second is the first 32 (ceil(62.5 / 2)).
    assert outputs["sequence"].shape == (2, 32, keras_hub_presets.HIDDEN)
    np.testing.assert_allclose(outputs["embedding"], outputs["sequence"].numpy().mean(1), rtol=1e-5, atol=1e-6)
    converter = keras_hub.layers.AudioConverter.from_preset(presets["whisper"])
    expected = keras_hub.models.Backbone.from_preset(presets["whisper"])({
        "encoder_features": converter(waveforms), "decoder_token_ids": tf.zeros((2, 1), tf.int32),
        "decoder_padding_mask": tf.ones((2, 1), tf.int32),
    })["encoder_sequence_output"]
    assert expected.shape[1] == 125
    np.testing.assert_allclose(outputs["sequence"], expected[:, :32], rtol=1e-5, atol=1e-5)
    assert not np.allclose(outputs["embedding"][0], outputs["embedding"][1])


def test_audio_branch_takes_a_whisper_preset_at_its_sample_rate(presets):
    whisper = "keras_hub:" + presets["whisper"]
    branch = build_audio_branch(_feature("audio"), encoder=whisper, embed_dim=4)
    outputs = branch(np.zeros((2, 2000), "float32"))
    assert outputs["embedding"].shape == (2, 4) and outputs["sequence"].shape == (2, 32, 4)
    assert branch.get_layer("keras_hub_encoder").trainable_weights == []
    with pytest.raises(ValueError, match=r"decoded at 16000 Hz.*expects 8000 Hz.*sample_rate: 8000"):
        build_audio_branch(_feature("audio", sample_rate=16000), encoder=whisper)
    with pytest.raises(ValueError, match="no audio converter.*audio encoder needs one"):
        build_audio_branch(_feature("audio"), encoder="keras_hub:" + presets["bert"])


def test_encoder_is_frozen_by_default_and_trainable_on_request(presets):
    frozen = KerasHubEncoder(presets["bert"], modality="text", sequence_length=6)
    assert frozen.trainable_weights == [] and frozen.non_trainable_weights
    inputs = keras.Input((), dtype="string")
    model = keras.Model(inputs, keras.layers.Dense(2)(frozen(inputs)["embedding"]))
    assert len(model.trainable_weights) == 2  # the dense layer's only
    trainable = KerasHubEncoder(presets["bert"], modality="text", sequence_length=6, trainable=True)
    assert len(trainable.trainable_weights) == len(trainable.weights) > 0
    frozen.trainable = True  # as mmkeras.fine_tune unfreezes a pretrained part
    assert len(frozen.trainable_weights) == len(trainable.trainable_weights)


def test_branches_take_keras_hub_presets(presets):
    text = build_text_branch(
        _feature("text"), encoder="keras_hub:" + presets["bert"], encoder_options={"sequence_length": 6}, embed_dim=4
    )
    assert text.output["embedding"].shape == (None, 4)
    assert text(tf.constant(["a red ball"]))["sequence"].shape == (1, 6, 4)
    image = build_image_branch(_feature("image"), encoder="keras_hub:" + presets["vit"], augment=False, embed_dim=4)
    assert image(np.zeros((2, 20, 20, 1), "uint8"))["sequence"].shape == (2, 17, 4)
    assert image.get_layer("keras_hub_encoder").trainable_weights == []


def test_branch_arguments_are_checked(presets):
    bert = "keras_hub:" + presets["bert"]
    with pytest.raises(ValueError, match="preprocessor only goes with a hub encoder"):
        build_text_branch(_feature("text"), encoder=bert, preprocessor="hub:/x")
    with pytest.raises(ValueError, match=r"Unknown encoder_options \['output_key'\].*\['sequence_length'\]"):
        build_text_branch(_feature("text"), encoder=bert, encoder_options={"output_key": 0})
    with pytest.raises(ValueError, match="sequence_length.*integer >= 2"):
        build_text_branch(_feature("text"), encoder=bert, encoder_options={"sequence_length": 1})
    with pytest.raises(ValueError, match="no tokenizer.*text encoder needs one"):
        build_text_branch(_feature("text"), encoder="keras_hub:" + presets["vit"])
    with pytest.raises(ValueError, match="no image converter.*image encoder needs one"):
        build_image_branch(_feature("image"), encoder=bert)


def test_missing_folder_and_unknown_name_fail_at_once(tmp_path):
    with pytest.raises(FileNotFoundError, match="No KerasHub preset folder"):
        KerasHubEncoder(str(tmp_path / "absent"), modality="text")
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        KerasHubEncoder(str(tmp_path), modality="text")
    with pytest.raises(ValueError, match="'made_up_preset_xyz' is neither a KerasHub preset name nor a local"):
        resolve_preset("made_up_preset_xyz")


def test_uncached_preset_offline_fails_fast_naming_the_preset_and_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    attempts = []

    def offline(address, timeout=None, **kwargs):
        attempts.append((address, timeout))
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    start = time.monotonic()
    with pytest.raises(ConnectionError) as error:
        KerasHubEncoder("bert_tiny_en_uncased", modality="text")
    assert time.monotonic() - start < 5
    message = str(error.value)
    assert "'bert_tiny_en_uncased'" in message and "KAGGLEHUB_CACHE=" in message and str(tmp_path / "cache") in message
    assert "keras_hub:/path/to/folder" in message
    assert attempts == [(("api.kaggle.com", 443), presets_module.CONNECT_TIMEOUT_SECONDS)]


def test_cached_preset_name_loads_offline_from_the_cache(presets, monkeypatch, tmp_path):
    handle = presets_module._builtin_presets()["bert_tiny_en_uncased"]["kaggle_handle"]
    cached = tmp_path.joinpath("cache", "models", *handle.removeprefix("kaggle://").split("/"))
    shutil.copytree(presets["bert"], cached)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise AssertionError("a cached preset must not touch the network")

    monkeypatch.setattr(socket, "create_connection", offline)
    assert resolve_preset("bert_tiny_en_uncased") == str(cached)
    encoder = KerasHubEncoder("bert_tiny_en_uncased", modality="text", sequence_length=6)
    assert encoder.get_config()["preset"] == "bert_tiny_en_uncased"
    assert encoder(tf.constant(["a red ball"]))["embedding"].shape == (1, keras_hub_presets.HIDDEN)


def test_without_keras_hub_the_error_says_how_to_install(monkeypatch, presets):
    monkeypatch.setitem(sys.modules, "keras_hub", None)
    with pytest.raises(ImportError, match=r'pip install "mmkeras\[keras-hub\]"'):
        build_text_branch(_feature("text"), encoder="keras_hub:" + presets["bert"])


def _reloads_and_exports_without_the_preset(model, spec, batch, tmp_path):
    """Save and reload `model` (mmkeras' loader), export it, delete the preset copies under
    `tmp_path/presets` and run the skew check; return the export folder and the Keras predictions."""
    from mmkeras.export.check import check_export
    from mmkeras.export.saved_model import export_for_serving
    from mmkeras.models.saving import load_classifier

    expected = model.predict(batch, verbose=0)["probabilities"]
    model.save(tmp_path / "model.keras")
    restored = load_classifier(tmp_path / "model.keras")  # mmkeras' own files: unsafe mode for preset encoders
    np.testing.assert_allclose(restored.predict(batch, verbose=0)["probabilities"], expected, rtol=1e-5, atol=1e-6)
    version_dir = export_for_serving(model, spec, tmp_path / "exported", measure_batching=False)
    shutil.rmtree(tmp_path / "presets")
    report = check_export(version_dir, spec, n=8, model=model)  # raw inputs through the export vs the pipeline
    assert report.max_abs_diff <= report.tolerance
    return version_dir, expected


@pytest.mark.slow
def test_classifier_with_keras_hub_encoders_trains_saves_and_exports_raw_input(presets, tiny_spec, tmp_path):
    from mmkeras.data.pipeline import make_dataset
    from mmkeras.models.classifier import build_classifier

    # Copies that this test deletes, to prove the export no longer needs them.
    # Text only, to keep the test short: the image encoder's path through a branch is tested above.
    folder = shutil.copytree(presets["bert"], tmp_path / "presets" / "bert")
    spec = tiny_spec.with_features(["caption"])
    model = build_classifier(spec, units=8, embed_dim=8, seed=0, branch_options={
        "caption": {"encoder": f"keras_hub:{folder}", "encoder_options": {"sequence_length": 8}},
    })
    encoders = [layer for branch in model.layers if isinstance(branch, keras.Model) for layer in branch.layers
                if isinstance(layer, KerasHubEncoder)]
    assert len(encoders) == 1
    frozen = [[w.numpy() for w in encoder.weights] for encoder in encoders]
    trainer = keras.Model(model.input, model.output["probabilities"])
    trainer.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    before = model.get_layer("logits").kernel.numpy()
    trainer.fit(make_dataset(spec, "train", batch_size=8, training=True, seed=0).take(2), epochs=1, verbose=0)
    assert not np.allclose(model.get_layer("logits").kernel.numpy(), before)
    for encoder, values in zip(encoders, frozen):  # frozen encoders stay as published
        for weight, value in zip(encoder.weights, values):
            np.testing.assert_array_equal(weight.numpy(), value)

    batch, _ = next(iter(make_dataset(spec, "test", batch_size=6)))
    version_dir, expected = _reloads_and_exports_without_the_preset(model, spec, batch, tmp_path)
    with pytest.raises(ValueError, match=r"KerasHubEncoder.*safe_mode=False.*export_for_serving"):
        keras.saving.load_model(tmp_path / "model.keras")
    served = tf.saved_model.load(str(version_dir)).signatures["serving_decoded"]
    outputs = served(**{key: tf.convert_to_tensor(value) for key, value in batch.items()})
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, rtol=1e-5, atol=1e-6)
    raw = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    assert raw.structured_input_signature[1]["caption"].dtype == tf.string  # the tokenizer is in the graph


@pytest.mark.slow
def test_classifier_with_a_whisper_encoder_exports_raw_wav_input(presets, tiny_spec, tmp_path):
    from mmkeras.models.classifier import build_classifier

    folder = shutil.copytree(presets["whisper"], tmp_path / "presets" / "whisper")
    spec = tiny_spec.with_features(["sound"])  # 8 kHz quarter-second clips, the tiny converter's rate
    model = build_classifier(spec, units=8, embed_dim=8, seed=0,
                             branch_options={"sound": {"encoder": f"keras_hub:{folder}"}})
    batch = {"sound": np.random.default_rng(3).uniform(-0.5, 0.5, (3, 2000)).astype("float32"),
             "sound_present": np.array([True, True, False])}
    version_dir, _ = _reloads_and_exports_without_the_preset(model, spec, batch, tmp_path)
    raw = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    assert raw.structured_input_signature[1]["sound"].dtype == tf.string  # the log-mel converter is in the graph
