"""Pretrained encoders: `HubEncoder` and the branches' `encoder="hub:..."`, on small SavedModels made here.

No test touches the network: each builds tiny tf.Module encoders that behave
like TF Hub's text (string -> vector [+ sequence]), BERT-style (preprocessor +
encoder), image (pixels in [0, 1] -> vector) and audio (waveform -> vector)
models, saves them to `tmp_path` and loads them by local folder through the
same code path as a downloaded handle.
"""
from __future__ import annotations

import hashlib
import shutil
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.branches import build_audio_branch, build_image_branch, build_text_branch
from mmkeras.branches.hub import HubEncoder, resolve_handle

VOCAB = ("[PAD]", "[UNK]", "red", "green", "blue", "a", "the", "ball", "box", "toy", "small", "big")
STEPS = 5
DIM = 6


class TextEncoder(tf.Module):
    """Like a sentence encoder: (batch,) strings -> {"default": (batch, DIM), "sequence_output": (batch, STEPS, DIM)}.

    The vocabulary is an asset file, so an export must copy it to stand alone.
    """

    def __init__(self, vocab_file, with_sequence=True):
        super().__init__()
        self.vocab_file = tf.saved_model.Asset(vocab_file)
        initializer = tf.lookup.TextFileInitializer(
            self.vocab_file, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
            tf.lookup.TextFileIndex.LINE_NUMBER,
        )
        self.table = tf.lookup.StaticHashTable(initializer, default_value=1)
        self.embeddings = tf.Variable(tf.random.stateless_normal((len(VOCAB), DIM), seed=(1, 2)), name="embeddings")
        self.with_sequence = with_sequence

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, texts):
        ids = self.table.lookup(tf.strings.split(tf.strings.lower(texts))).to_tensor(shape=[None, STEPS])
        sequence = tf.gather(self.embeddings, ids)
        mask = tf.cast(ids > 0, tf.float32)[..., None]
        pooled = tf.reduce_sum(sequence * mask, 1) / tf.maximum(tf.reduce_sum(mask, 1), 1.0)
        return {"default": pooled, "sequence_output": sequence} if self.with_sequence else pooled


class BertPreprocessor(tf.Module):
    """Like a BERT preprocessing model: strings -> {"input_word_ids", "input_mask", "input_type_ids"}."""

    def __init__(self, vocab_file):
        super().__init__()
        self.vocab_file = tf.saved_model.Asset(vocab_file)
        initializer = tf.lookup.TextFileInitializer(
            self.vocab_file, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
            tf.lookup.TextFileIndex.LINE_NUMBER,
        )
        self.table = tf.lookup.StaticHashTable(initializer, default_value=1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, texts):
        ids = tf.cast(self.table.lookup(tf.strings.split(tf.strings.lower(texts))).to_tensor(shape=[None, STEPS]), tf.int32)
        return {"input_word_ids": ids, "input_mask": tf.cast(ids > 0, tf.int32), "input_type_ids": tf.zeros_like(ids)}


class BertEncoder(tf.Module):
    """Like a TF Hub BERT encoder: the preprocessor's dict -> {"pooled_output", "sequence_output"}, with `training`."""

    def __init__(self):
        super().__init__()
        self.embeddings = tf.Variable(tf.random.stateless_normal((len(VOCAB), DIM), seed=(3, 4)), name="word_embeddings")
        self.pooler = tf.Variable(tf.eye(DIM), name="pooler")

    @tf.function
    def __call__(self, inputs, training=False):
        sequence = tf.gather(self.embeddings, inputs["input_word_ids"])
        if training:  # stands for dropout: shows that the flag reaches the encoder
            sequence = sequence * 0.0
        pooled = tf.tanh(sequence[:, 0] @ self.pooler)
        return {"pooled_output": pooled, "sequence_output": sequence}

    def trace(self):
        """Trace both modes before saving, as TF Hub's reusable SavedModels are."""
        spec = {key: tf.TensorSpec([None, STEPS], tf.int32) for key in ("input_word_ids", "input_mask", "input_type_ids")}
        for training in (False, True):
            self.__call__.get_concrete_function(spec, training=training)
        return self


class ImageEncoder(tf.Module):
    """Like a TF Hub image feature vector: (batch, 8, 8, 3) floats in [0, 1] -> (batch, DIM)."""

    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(tf.random.stateless_normal((3, DIM), seed=(5, 6)), name="kernel")

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)])
    def __call__(self, images):
        return tf.tanh(tf.reduce_mean(images, axis=[1, 2]) @ self.kernel * 4.0 - 1.0)


class AudioEncoder(tf.Module):
    """Like a TF Hub waveform encoder: (batch, samples) float32 -> (batch, DIM)."""

    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(tf.random.stateless_normal((33, DIM), seed=(7, 8)) * 0.1, name="kernel")

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
    def __call__(self, waveforms):
        frames = tf.signal.frame(waveforms, 64, 32)
        return tf.reduce_mean(tf.abs(tf.signal.rfft(frames)) @ self.kernel, axis=1)


class UnbatchedAudioEncoder(tf.Module):
    """Like YAMNet: one 1-D waveform -> (scores (frames, 2), embeddings (frames, DIM))."""

    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(tf.random.stateless_normal((32, DIM), seed=(9, 10)), name="kernel")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def __call__(self, waveform):
        embeddings = tf.signal.frame(waveform, 32, 32) @ self.kernel
        return tf.nn.softmax(embeddings[:, :2]), embeddings


def save_module(module, folder):
    tf.saved_model.save(module, str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """Folder of each test encoder, saved once for the module."""
    root = tmp_path_factory.mktemp("encoders")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    return {
        "text": save_module(TextEncoder(str(vocab)), root / "text"),
        "pooled_text": save_module(TextEncoder(str(vocab), with_sequence=False), root / "pooled_text"),
        "bert_preprocess": save_module(BertPreprocessor(str(vocab)), root / "bert_preprocess"),
        "bert": save_module(BertEncoder().trace(), root / "bert"),
        "image": save_module(ImageEncoder(), root / "image"),
        "audio": save_module(AudioEncoder(), root / "audio"),
        "unbatched_audio": save_module(UnbatchedAudioEncoder(), root / "unbatched_audio"),
    }


def test_hub_encoder_gives_pooled_and_sequence_outputs(encoders):
    encoder = HubEncoder(encoders["text"])
    outputs = encoder(tf.constant(["a red ball", ""]))
    assert outputs["embedding"].shape == (2, DIM)
    assert outputs["sequence"].shape == (2, STEPS, DIM)
    # "red" is token 2, "a" 5, "ball" 7: the pooled output is their mean embedding.
    table = encoder.encoder_variables[0].numpy()
    np.testing.assert_allclose(outputs["embedding"][0], table[[5, 2, 7]].mean(0), rtol=1e-5)
    np.testing.assert_allclose(outputs["embedding"][1], np.zeros(DIM))


def test_pooled_only_encoder_gives_a_one_step_sequence(encoders):
    outputs = HubEncoder(encoders["pooled_text"])(tf.constant(["red box"]))
    assert outputs["sequence"].shape == (1, 1, DIM)
    np.testing.assert_allclose(outputs["sequence"][:, 0], outputs["embedding"])


def test_hub_encoder_is_frozen_by_default_and_shares_the_savedmodel_variables(encoders):
    frozen = HubEncoder(encoders["image"])
    assert frozen.trainable_weights == [] and len(frozen.non_trainable_weights) == 1
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(frozen(inputs)["embedding"]))
    assert len(model.trainable_weights) == 2  # the dense layer's only: the optimizer never sees the encoder
    trainable = HubEncoder(encoders["image"], trainable=True)
    assert len(trainable.trainable_weights) == 1
    images = tf.random.stateless_uniform((2, 8, 8, 3), seed=(1, 1))
    before = trainable(images)["embedding"].numpy()
    trainable.trainable_weights[0].assign(trainable.trainable_weights[0] * 0.0)
    # The function reads the very variables the layer exposes: a zero kernel gives tanh(-1).
    np.testing.assert_allclose(trainable(images)["embedding"], np.tanh(-1.0), rtol=1e-6)
    assert not np.allclose(before, np.tanh(-1.0))


def test_hub_encoder_keras_file_keeps_fine_tuned_weights_and_needs_unsafe_mode(encoders, tmp_path):
    inputs = keras.Input((8, 8, 3))
    encoder = HubEncoder(encoders["image"], trainable=True, name="encoder")
    model = keras.Model(inputs, encoder(inputs)["embedding"])
    encoder.trainable_weights[0].assign(tf.fill((3, DIM), 0.25))
    images = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    with pytest.raises(ValueError, match=r"safe_mode=False.*export_for_serving"):
        keras.saving.load_model(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras", safe_mode=False)
    layer = restored.get_layer("encoder")
    assert layer.get_config()["handle"] == encoders["image"] and layer.trainable
    np.testing.assert_allclose(layer.trainable_weights[0].numpy(), 0.25)
    np.testing.assert_allclose(restored.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-6)


def test_text_branch_with_bert_style_preprocessor(encoders):
    feature = _feature("text")
    branch = build_text_branch(
        feature, encoder="hub:" + encoders["bert"], preprocessor="hub:" + encoders["bert_preprocess"], embed_dim=4
    )
    assert branch.output["embedding"].shape == (None, 4)
    assert branch.output["sequence"].shape == (None, STEPS, 4)
    encoder = branch.get_layer("hub_encoder")
    assert encoder.trainable_weights == []
    texts = tf.constant(["the red ball", "a big box"])
    inference = encoder(texts, training=False)["sequence"]
    # Frozen encoders run in inference mode even while training; trainable ones get the flag.
    np.testing.assert_allclose(encoder(texts, training=True)["sequence"], inference)
    encoder.trainable = True
    np.testing.assert_allclose(encoder(texts, training=True)["sequence"], 0.0)


def test_image_branch_resizes_and_rescales_for_the_encoder(encoders):
    feature = _feature("image")
    branch = build_image_branch(feature, encoder="hub:" + encoders["image"], augment=False, embed_dim=4)
    assert branch.get_layer("encoder_resizing").get_config()["height"] == 8
    assert branch.output["sequence"].shape == (None, 1, 4)
    images = np.full((2, 16, 16, 3), 255, np.uint8)
    pixels = keras.Model(branch.input, branch.get_layer("encoder_rescaling").output)(images)
    assert pixels.shape == (2, 8, 8, 3) and np.allclose(pixels, 1.0)
    encoder = branch.get_layer("hub_encoder")
    encoded = encoder(pixels)
    kernel = encoder.encoder_variables[0].numpy()
    np.testing.assert_allclose(encoded["embedding"], np.tanh(np.ones((2, 3)) @ kernel * 4.0 - 1.0), rtol=1e-5)


def test_audio_branch_with_batched_and_unbatched_encoders(encoders):
    feature = _feature("audio")
    waveforms = np.random.default_rng(0).uniform(-1, 1, (3, feature.num_samples)).astype("float32")
    branch = build_audio_branch(feature, encoder="hub:" + encoders["audio"], embed_dim=4)
    assert branch(waveforms)["embedding"].shape == (3, 4)
    unbatched = build_audio_branch(
        feature, encoder="hub:" + encoders["unbatched_audio"], encoder_options={"batched": False, "output_key": 1},
        embed_dim=4,
    )
    frames = feature.num_samples // 32
    assert unbatched(waveforms)["sequence"].shape == (3, frames, 4)
    encoded = unbatched.get_layer("hub_encoder")(waveforms)
    kernel = unbatched.get_layer("hub_encoder").encoder_variables[0].numpy()
    expected = (waveforms[:, : frames * 32].reshape(3, frames, 32) @ kernel).mean(1)
    np.testing.assert_allclose(encoded["embedding"], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_classifier_with_hub_encoders_trains_reloads_and_exports_self_contained(encoders, tiny_spec, tmp_path):
    from mmkeras.data.pipeline import make_dataset
    from mmkeras.export.saved_model import export_for_serving
    from mmkeras.models.classifier import build_classifier

    # Copies that this test deletes, to prove the export no longer needs them.
    folders = {name: shutil.copytree(encoders[name], tmp_path / "encoders" / name) for name in ("text", "image", "audio")}
    model = build_classifier(tiny_spec, units=8, embed_dim=8, seed=0, branch_options={
        "caption": {"encoder": f"hub:{folders['text']}"},
        "picture": {"encoder": f"hub:{folders['image']}"},
        "sound": {"encoder": f"hub:{folders['audio']}"},
    })
    frozen = [layer.encoder_variables[0].numpy() for layer in _hub_layers(model)]
    assert len(frozen) == 3
    trainer = keras.Model(model.input, model.output["probabilities"])
    trainer.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    train = make_dataset(tiny_spec, "train", batch_size=8, training=True, seed=0).take(2)
    before = model.get_layer("logits").kernel.numpy()
    trainer.fit(train, epochs=1, verbose=0)
    assert not np.allclose(model.get_layer("logits").kernel.numpy(), before)
    for layer, values in zip(_hub_layers(model), frozen):  # frozen encoders stay as published
        np.testing.assert_array_equal(layer.encoder_variables[0].numpy(), values)

    batch, _ = next(iter(make_dataset(tiny_spec, "test", batch_size=6)))
    expected = model.predict(batch, verbose=0)["probabilities"]
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras", safe_mode=False)
    np.testing.assert_allclose(restored.predict(batch, verbose=0)["probabilities"], expected, rtol=1e-5, atol=1e-6)

    version_dir = export_for_serving(model, tiny_spec, tmp_path / "exported")
    shutil.rmtree(tmp_path / "encoders")
    served = tf.saved_model.load(str(version_dir)).signatures["serving_decoded"]
    outputs = served(**{key: tf.convert_to_tensor(value) for key, value in batch.items()})
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert (version_dir / "assets" / "vocab.txt").is_file()  # the text encoder's vocabulary came along


def test_spec_branch_mapping_names_the_encoder(encoders, tiny_spec):
    import dataclasses

    from mmkeras.models.classifier import build_classifier

    picture = dataclasses.replace(
        tiny_spec.feature("picture"), branch={"encoder": "hub:" + encoders["image"], "trainable": True}
    )
    model = build_classifier(tiny_spec.replace(features=(picture,)), units=4, embed_dim=4)
    (encoder,) = _hub_layers(model)
    assert encoder.handle == encoders["image"] and encoder.trainable


def _hub_layers(model):
    return [layer for branch in model.layers if isinstance(branch, keras.Model) for layer in branch.layers
            if isinstance(layer, HubEncoder)]


def test_branch_arguments_are_checked(encoders):
    with pytest.raises(ValueError, match="hub:<handle-or-path>"):
        build_text_branch(_feature("text"), vocabulary=["red"], trainable=True)
    with pytest.raises(ValueError, match="without `backbone`"):
        build_image_branch(_feature("image"), encoder="hub:" + encoders["image"], backbone="resnet50")
    with pytest.raises(ValueError, match="hub:<handle-or-path>"):
        build_audio_branch(_feature("audio"), encoder="yamnet")
    with pytest.raises(ValueError, match="Unknown encoder_options"):
        build_audio_branch(_feature("audio"), encoder="hub:" + encoders["audio"], encoder_options={"batch": False})
    with pytest.raises(ValueError, match="no output 'pooled'"):
        HubEncoder(encoders["text"], output_key="pooled")(tf.constant(["red"]))


def test_local_handles_need_a_savedmodel_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="No SavedModel folder"):
        resolve_handle(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no saved_model.pb"):
        resolve_handle(str(tmp_path))


def test_url_handle_without_tensorflow_hub_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_hub", None)  # makes `import tensorflow_hub` fail
    with pytest.raises(ImportError, match=r'pip install "mmkeras\[hub\]"'):
        build_text_branch(_feature("text"), encoder="hub:https://tfhub.dev/google/nnlm-en-dim50/2")


def test_offline_handle_fails_fast_naming_the_handle_and_cache(monkeypatch, tmp_path):
    handle = "https://tfhub.dev/google/nnlm-en-dim50/2"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))

    def unreachable(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setitem(sys.modules, "tensorflow_hub", _fake_hub(lambda h: pytest.fail("probe skipped")))
    monkeypatch.setattr("socket.create_connection", unreachable)
    with pytest.raises(ConnectionError, match="TFHUB_CACHE_DIR") as error:
        resolve_handle(handle)
    assert handle in str(error.value) and str(tmp_path) in str(error.value)

    # A host that answers but a download that fails (the resolver raises) gets the same message.
    def downloads_fail(h):
        raise OSError("Connection reset by peer")

    monkeypatch.setitem(sys.modules, "tensorflow_hub", _fake_hub(downloads_fail))
    monkeypatch.setattr("socket.create_connection", lambda *args, **kwargs: _Connection())
    with pytest.raises(ConnectionError, match=r"TFHUB_CACHE_DIR.*hub:/path/to/folder") as error:
        HubEncoder(handle)
    assert handle in str(error.value)


def test_cached_url_handle_loads_without_the_network(encoders, monkeypatch, tmp_path):
    handle = "https://tfhub.dev/test/text-encoder/1"
    cached = tmp_path / hashlib.sha1(handle.encode("utf8")).hexdigest()
    shutil.copytree(encoders["text"], cached)
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "tensorflow_hub", _fake_hub(lambda h: str(tmp_path / hashlib.sha1(h.encode()).hexdigest())))
    monkeypatch.setattr("socket.create_connection", lambda *args, **kwargs: pytest.fail("a cached handle was probed"))
    encoder = HubEncoder(handle)
    assert encoder.get_config()["handle"] == handle
    assert encoder(tf.constant(["red"]))["embedding"].shape == (1, DIM)


class _Connection:
    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


def _fake_hub(resolve):
    return types.SimpleNamespace(resolve=resolve)


def _feature(modality):
    from mmkeras.spec import spec_from_dict

    raw = {
        "name": "t", "label": {"class_names": ["a", "b"]}, "splits": {"train": "m.csv"},
        "features": [
            {"name": "caption", "modality": "text", "vocab_size": 16, "sequence_length": 5},
            {"name": "picture", "modality": "image", "image_size": [16, 16]},
            {"name": "sound", "modality": "audio", "sample_rate": 8000, "clip_seconds": 0.05},
        ],
    }
    return {f.modality: f for f in spec_from_dict(raw).features}[modality]


@pytest.mark.slow
def test_a_training_run_with_a_hub_encoder_loads_evaluates_and_exports(encoders, tiny_spec, tmp_path):
    import mmkeras
    from mmkeras.models.saving import load_classifier
    from mmkeras.runs import evaluate_run, export_run, load_run

    spec = tiny_spec.with_features(["picture"])
    result = mmkeras.train(spec, epochs=1, batch_size=8, units=8, embed_dim=8, seed=0, verbose=0,
                           output_dir=tmp_path / "run", branch_options={"picture": {"encoder": f"hub:{encoders['image']}"}})
    model, _ = load_run(result.run_dir)  # a run folder of the user's own: no safe_mode argument needed
    assert _hub_layers(model)
    report = evaluate_run(result.run_dir)
    assert 0.0 <= report["accuracy"] <= 1.0
    version_dir = export_run(result.run_dir, base_dir=tmp_path / "exported")
    assert (version_dir / "saved_model.pb").is_file()
    with pytest.raises(ValueError, match="safe mode"):  # plain Keras loading still refuses it
        keras.saving.load_model(result.best_model_path)
    assert load_classifier(result.best_model_path).count_params() == model.count_params()
