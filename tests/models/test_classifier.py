"""build_classifier: every fusion builds from `tiny`, trains, reloads identically, and honours presence."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras import FUSIONS, build_classifier
from mmkeras.spec import load_spec

VOCABULARIES = {"caption": ["red", "green", "blue", "ball", "box"]}
SMALL = {
    "units": 16,
    "embed_dim": 8,
    "branch_options": {
        "text": {"token_dim": 8, "lstm_units": 4},
        "image": {"stages": (4, 8), "convs_per_stage": 1},
        "audio": {"conv_stages": (8,), "lstm_units": 4},
    },
}


@pytest.fixture(scope="module")
def spec():
    return load_spec("tiny")


def _batch(spec, size=4, seed=0):
    rng = np.random.default_rng(seed)
    words = np.array(["red ball", "a blue box", "green", ""], dtype=object)
    return {
        "caption": words[rng.integers(0, len(words), size)],
        "picture": rng.integers(0, 255, (size, 16, 16, 3)).astype("uint8"),
        "sound": rng.uniform(-1, 1, (size, 2000)).astype("float32"),
        "caption_present": np.ones(size, bool),
        "picture_present": np.ones(size, bool),
        "sound_present": np.ones(size, bool),
    }


def _build(spec, fusion, **kwargs):
    return build_classifier(spec, fusion=fusion, vocabularies=VOCABULARIES, seed=0, **{**SMALL, **kwargs})


@pytest.mark.slow
@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_every_fusion_builds_trains_a_step_and_reloads_identically(spec, fusion, tmp_path):
    model = _build(spec, fusion)
    assert [i.name for i in model.inputs] == sorted(
        ["caption", "picture", "sound", "caption_present", "picture_present", "sound_present"]
    )
    assert "probabilities" in model.output
    model.compile("adam", loss={"probabilities": "sparse_categorical_crossentropy"})
    batch = _batch(spec)
    history = model.fit(batch, {"probabilities": np.array([0, 1, 2, 0])}, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    probabilities = model.predict(batch, verbose=0)["probabilities"]
    assert probabilities.shape == (4, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(restored.predict(batch, verbose=0)["probabilities"], probabilities, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_gradients_reach_every_branch(spec, fusion):
    model = _build(spec, fusion, modality_dropout=0.0)
    batch = {k: tf.constant(v) for k, v in _batch(spec).items()}
    with tf.GradientTape() as tape:
        probabilities = model(batch, training=True)["probabilities"]
        loss = keras.losses.sparse_categorical_crossentropy(tf.constant([0, 1, 2, 0]), probabilities)
    gradients = tape.gradient(loss, model.trainable_variables)
    for name in ("caption_branch", "picture_branch", "sound_branch"):
        branch = model.get_layer(name)
        norms = [
            float(tf.norm(g))
            for g, v in zip(gradients, model.trainable_variables)
            if g is not None and any(v is w for w in branch.trainable_variables)
        ]
        assert norms and max(norms) > 0, f"no gradient reaches {name} with {fusion} fusion"


def test_presence_masks_change_output_and_full_presence_equals_default(spec):
    model = _build(spec, "attention")
    batch = _batch(spec)
    default = {k: (None if k.endswith("_present") else tf.constant(v)) for k, v in batch.items()}
    full = model({k: tf.constant(v) for k, v in batch.items()}, training=False)
    none = model(default, training=False)
    np.testing.assert_allclose(full["probabilities"].numpy(), none["probabilities"].numpy(), rtol=1e-6)
    absent = dict(batch, sound_present=np.array([False, True, False, True]))
    masked = model({k: tf.constant(v) for k, v in absent.items()}, training=False)
    changed = np.abs(masked["probabilities"].numpy() - full["probabilities"].numpy()).max(axis=1)
    assert changed[0] > 0 and changed[2] > 0
    np.testing.assert_allclose(changed[[1, 3]], 0.0, atol=1e-7)
    # The attention weights give the absent recording nothing.
    np.testing.assert_allclose(masked["modality_weights"].numpy()[[0, 2], 2], 0.0, atol=1e-6)


def test_attention_exposes_modality_weights_and_others_do_not(spec):
    assert set(_build(spec, "attention").output) == {"probabilities", "modality_weights"}
    assert set(_build(spec, "concat").output) == {"probabilities"}


def test_inference_is_deterministic_despite_augmentation_and_dropout(spec):
    model = _build(spec, "concat", modality_dropout=0.5)
    batch = _batch(spec)
    first = model.predict(batch, verbose=0)["probabilities"]
    np.testing.assert_array_equal(model.predict(batch, verbose=0)["probabilities"], first)
    np.testing.assert_allclose(model(batch, training=False)["probabilities"].numpy(), first, rtol=1e-6)


def test_modality_dropout_mapping_gives_each_feature_its_rate_and_reloads(spec, tmp_path):
    # Keyed by modality ("text", "image") or by feature name ("sound"); the layer's columns are the features.
    model = _build(spec, "concat", modality_dropout={"text": 0.5, "image": 0.3, "sound": 0.1})
    layer = model.get_layer("modality_dropout")
    assert layer.names == ["caption", "picture", "sound"] and layer.rates == [0.5, 0.3, 0.1]
    batch = _batch(spec)
    probabilities = model.predict(batch, verbose=0)["probabilities"]
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert restored.get_layer("modality_dropout").get_config()["rate"] == {"caption": 0.5, "picture": 0.3, "sound": 0.1}
    np.testing.assert_allclose(restored.predict(batch, verbose=0)["probabilities"], probabilities, rtol=1e-6, atol=1e-7)


def test_a_feature_name_wins_over_its_modality_and_one_rate_stays_one_rate(spec):
    rates = {"text": 0.5, "caption": 0.2, "image": 0.3, "audio": 0.0}
    assert _build(spec, "concat", modality_dropout=rates).get_layer("modality_dropout").rates == [0.2, 0.3, 0.0]
    layer = _build(spec, "concat", modality_dropout=0.4).get_layer("modality_dropout")
    assert (layer.rate, layer.rates, layer.names) == (0.4, None, None)


@pytest.mark.parametrize(
    ("modality_dropout", "message"),
    [
        ({"txt": 0.5, "image": 0.3, "audio": 0.3},
         (r"names 'txt', which is neither a modality nor a feature of spec 'tiny'; expected keys from "
          r"\['audio', 'caption', 'image', 'picture', 'sound', 'text'\]")),
        ({"text": 0.5, "image": 0.3}, r"no rate for feature\(s\) \['sound'\]"),
        ({"text": 1.5, "image": 0.3, "audio": 0.3}, r"`rate\['caption'\]` must be a number in \[0, 1\)"),
    ],
)
def test_a_bad_modality_dropout_mapping_names_the_key_and_the_valid_ones(spec, modality_dropout, message):
    with pytest.raises(ValueError, match=message):
        _build(spec, "concat", modality_dropout=modality_dropout)


def test_unimodal_spec_and_unknown_fusion(spec):
    model = _build(spec.with_features(["sound"]), "concat")
    assert [i.name for i in model.inputs] == ["sound", "sound_present"]
    with pytest.raises(ValueError, match="Unknown fusion 'average'"):
        build_classifier(spec, fusion="average", vocabularies=VOCABULARIES)


def test_vocabulary_is_learned_from_the_train_split_by_default(tiny_spec):
    model = build_classifier(tiny_spec, **SMALL)
    vocabulary = model.get_layer("caption_branch").get_layer("caption_vectorizer").get_vocabulary()
    assert {"red", "green", "blue"} <= set(vocabulary)


def test_a_branch_option_its_builder_does_not_take_names_the_feature_and_the_options(tiny_spec):
    with pytest.raises(ValueError, match=r"Feature 'caption'.*takes no \['backbone'\].*options are \[") as error:
        build_classifier(tiny_spec, branch_options={"caption": {"backbone": "resnet50"}})
    assert "vocabulary" in str(error.value)
    with pytest.raises(ValueError, match=r"Feature 'picture'.*takes no \['stage'\]"):
        build_classifier(tiny_spec, branch_options={"image": {"stage": [8]}})


def test_cross_attention_leaves_text_padding_out_in_a_traced_step(spec):
    # The text branch's padding mask reaches the fusion in a traced step (as in `fit` and the export): with the
    # same weights, masking changes the output of a short caption, and not of one that fills every step.
    masked = _build(spec, "cross_attention")
    unmasked = _build(spec, "cross_attention", fusion_options={"mask_padding": False})
    unmasked.set_weights(masked.get_weights())
    batch = _batch(spec)
    batch["caption"] = np.array(["red ball", " ".join(["red green blue ball"] * 2), "", "box"], dtype=object)

    def predict(model):
        return tf.function(lambda inputs: model(inputs, training=False))(batch)["probabilities"].numpy()

    with_mask, without_mask = predict(masked), predict(unmasked)
    np.testing.assert_allclose(with_mask[1], without_mask[1], rtol=1e-5, atol=1e-6)  # 8 tokens of 8: no padding
    assert not np.allclose(with_mask[[0, 3]], without_mask[[0, 3]], atol=1e-5)
