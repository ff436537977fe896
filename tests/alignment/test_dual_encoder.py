"""build_dual_encoder: features by modality or name, unit-vector towers, the temperature, save and reload."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from mmkeras.alignment import (
    ContrastiveLoss,
    DualEncoder,
    TripletLoss,
    build_classifier_from_encoder,
    build_dual_encoder,
    class_embeddings,
    encoder_vocabularies,
    tower,
)
from mmkeras.alignment.dual_encoder import resolve_features
from mmkeras.spec import load_spec

VOCABULARIES = {"caption": ["red", "green", "blue", "ball", "box"]}
SMALL = {
    "embed_dim": 8,
    "branch_dim": 8,
    "vocabularies": VOCABULARIES,
    "branch_options": {
        "text": {"token_dim": 4, "lstm_units": 4},
        "image": {"stages": (4,), "convs_per_stage": 1},
        "audio": {"encoder": "conv1d", "conv_stages": (4,)},
    },
}


@pytest.fixture(scope="module")
def spec():
    return load_spec("tiny")


def _batch(size=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "caption": np.array(["red ball", "a blue box", "green", "box"][:size], dtype=object),
        "picture": rng.integers(0, 255, (size, 16, 16, 3)).astype("uint8"),
        "sound": rng.uniform(-1, 1, (size, 2000)).astype("float32"),
        "picture_present": np.ones(size, bool),
    }


def test_modalities_and_feature_names_resolve_to_the_spec_features_in_order(spec):
    assert [f.name for f in resolve_features(spec, ("image", "text"))] == ["picture", "caption"]
    assert [f.name for f in resolve_features(spec, ("audio", "caption", "picture"))] == ["sound", "caption", "picture"]


@pytest.mark.parametrize(
    "modalities, message",
    [(("image",), "two or more"), ("image", "two or more"), (("video", "text"), "no feature or modality"),
     (("picture", "image"), "once")],
)
def test_bad_modalities_say_what_the_spec_has(spec, modalities, message):
    with pytest.raises(ValueError, match=message):
        resolve_features(spec, modalities)


def test_encoder_maps_each_feature_to_a_unit_embedding_and_exposes_its_towers(spec):
    # Seeded: with 8-unit ReLU embeddings an unlucky initialisation can leave an input's features all
    # zero (a zero vector has no unit direction), depending on what earlier tests drew.
    keras.utils.set_random_seed(0)
    encoder = build_dual_encoder(spec, ("image", "audio", "text"), **SMALL)
    assert isinstance(encoder, DualEncoder)
    assert encoder.feature_names == ("picture", "sound", "caption") and encoder.embed_dim == 8
    batch = _batch()
    outputs = encoder(batch, training=False)
    assert sorted(outputs) == ["caption", "picture", "sound"]
    for name, values in outputs.items():
        assert values.shape == (4, 8)
        np.testing.assert_allclose(np.linalg.norm(values, axis=1), 1.0, rtol=1e-5)
        alone = encoder.get_tower(name)(batch[name], training=False)
        np.testing.assert_allclose(alone, values, rtol=1e-5, atol=1e-6)
    assert tower(encoder, "sound") is encoder.get_tower("sound")
    # The tower's branch is the classifier's branch, under the classifier's name.
    assert encoder.get_tower("picture").get_layer("picture_branch").output["embedding"].shape == (None, 8)
    assert encoder.spec.feature_names == ("picture", "sound", "caption")
    with pytest.raises(ValueError, match="no tower"):
        encoder.get_tower("audio")
    with pytest.raises(ValueError, match="missing"):
        encoder({"picture": batch["picture"]})


def test_temperature_is_a_log_scale_weight_that_trains_or_not(spec):
    learned = build_dual_encoder(spec, ("image", "text"), initial_temperature=0.1, **SMALL)
    assert learned.temperature == pytest.approx(0.1, rel=1e-6)
    assert "log_temperature" in [w.name for w in learned.trainable_weights]
    fixed = build_dual_encoder(spec, ("image", "text"), learn_temperature=False, **SMALL)
    assert "log_temperature" not in [w.name for w in fixed.trainable_weights]
    assert "log_temperature" in [w.name for w in fixed.non_trainable_weights]
    with pytest.raises(ValueError, match="initial_temperature"):
        build_dual_encoder(spec, ("image", "text"), initial_temperature=-1.0, **SMALL)


@pytest.mark.slow
def test_compiled_encoder_trains_a_step_and_reloads_identically(spec, tmp_path):
    keras.utils.set_random_seed(0)
    encoder = build_dual_encoder(spec, ("image", "audio"), **SMALL)
    encoder.compile(keras.optimizers.Adam(0.01), loss=TripletLoss(margin=0.3))
    # A triplet loss has no temperature to learn.
    assert "log_temperature" not in [w.name for w in encoder.trainable_weights]
    batch = _batch()
    before = [np.array(w) for w in encoder.trainable_weights]
    loss = encoder.train_on_batch(batch, np.zeros(4, "int32"))
    assert np.isfinite(loss) and loss > 0
    assert any(not np.allclose(b, np.array(w)) for b, w in zip(before, encoder.trainable_weights))
    encoder.save(tmp_path / "encoder.keras")
    restored = keras.saving.load_model(tmp_path / "encoder.keras")
    assert isinstance(restored, DualEncoder) and restored.feature_names == encoder.feature_names
    assert isinstance(restored.loss, TripletLoss) and restored.loss.margin == 0.3
    assert restored.temperature == pytest.approx(encoder.temperature)
    expected, actual = encoder.predict(batch, verbose=0), restored.predict(batch, verbose=0)
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-6, atol=1e-6)


def test_compile_defaults_to_the_contrastive_loss_and_rejects_strings(spec):
    encoder = build_dual_encoder(spec, ("image", "text"), **SMALL)
    encoder.compile("adam")
    assert isinstance(encoder.loss, ContrastiveLoss)
    with pytest.raises(TypeError, match="alignment loss"):
        encoder.compile("adam", loss="mse")


@pytest.mark.slow
def test_joint_objective_trains_the_heads_with_the_towers_and_reloads(spec, tmp_path):
    keras.utils.set_random_seed(0)
    encoder = build_dual_encoder(spec, ("image", "audio"), classification_weight=1.0, **SMALL)
    encoder.compile(keras.optimizers.Adam(0.01), loss=ContrastiveLoss(positives="labels"))
    batch, labels = _batch(), np.array([0, 1, 0, 2], "int32")
    logits = encoder.class_logits(encoder(batch))
    assert sorted(logits) == ["picture", "sound"] and logits["sound"].shape == (4, spec.num_classes)
    head = encoder.heads["picture"].kernel
    before = np.array(head)
    # The loss is the alignment loss plus the heads' crossentropy (about log(num_classes) at the start).
    alignment_only = build_dual_encoder(spec, ("image", "audio"), **SMALL)
    assert not alignment_only.heads
    loss = encoder.train_on_batch(batch, labels)
    assert np.isfinite(loss) and loss > np.log(spec.num_classes) * 0.5
    assert not np.allclose(before, np.array(head))  # the heads train
    encoder.save(tmp_path / "joint.keras")
    restored = keras.saving.load_model(tmp_path / "joint.keras")
    assert restored.classification_weight == 1.0 and restored.num_classes == spec.num_classes
    expected = encoder.class_logits(encoder(batch, training=False))
    actual = restored.class_logits(restored(batch, training=False))
    for name in expected:
        np.testing.assert_allclose(np.array(actual[name]), np.array(expected[name]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="classification_weight"):
        alignment_only.class_logits(alignment_only(batch))
    with pytest.raises(ValueError, match="num_classes"):
        DualEncoder(dict(encoder.towers), encoder.spec_config, classification_weight=1.0)


def test_a_keras_hub_text_tower_embeds_prompts_beyond_the_training_vocabulary(tiny_spec, tmp_path):
    import keras_hub_presets  # tests/ helper: tiny presets (needs the keras-hub extra, which .ci/run installs)

    bert = keras_hub_presets.save_bert(tmp_path / "bert")
    caption = {"encoder": f"keras_hub:{bert}", "encoder_options": {"sequence_length": 8}}
    learned = build_dual_encoder(tiny_spec, ("image", "text"), **SMALL)
    hub = build_dual_encoder(tiny_spec, ("image", "text"), **{**SMALL, "branch_options": {
        **SMALL["branch_options"], "caption": caption}})
    prompts = ["a photo of a cat", "a photo of a dog"]  # words no tiny caption uses
    # A learned vocabulary reads both as the same out-of-vocabulary tokens; the preset's tokenizer tells them apart.
    same = class_embeddings(learned, "caption", prompts)
    np.testing.assert_allclose(same[0], same[1], atol=1e-6)
    different = class_embeddings(hub, "caption", prompts)
    assert different.shape == (2, 8) and np.abs(different[0] - different[1]).max() > 1e-5
    branch = hub.get_tower("caption").get_layer("caption_branch")
    assert branch.get_layer("keras_hub_encoder").trainable_weights == []  # frozen: only the projections train
    assert encoder_vocabularies(hub) == {}  # the preset tokenises; there is no vocabulary to hand on
    classifier = build_classifier_from_encoder(hub, units=8)  # checks the presets match and the branches agree
    np.testing.assert_allclose(classifier.get_layer("caption_branch")(np.array(prompts))["embedding"],
                               branch(np.array(prompts))["embedding"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_shared_head_is_one_classifier_for_every_tower_and_reloads(spec, tmp_path):
    keras.utils.set_random_seed(0)
    encoder = build_dual_encoder(spec, ("image", "audio"), classification_weight=1.0,
                                 classification_head="shared", **SMALL)
    encoder.compile(keras.optimizers.Adam(0.01), loss=ContrastiveLoss(positives="labels"))
    assert encoder.has_heads and not encoder.heads
    # One kernel and one bias in all: the same class regions for every modality.
    head_weights = [w for w in encoder.weights if "shared_class_head" in w.path]
    assert len(head_weights) == 2
    embeddings = encoder(_batch())
    logits = encoder.class_logits(embeddings)
    same = encoder.shared_head(embeddings["sound"])
    np.testing.assert_allclose(np.array(logits["sound"]), np.array(same), rtol=1e-6)
    before = np.array(encoder.shared_head.kernel)
    loss = encoder.train_on_batch(_batch(), np.array([0, 1, 0, 2], "int32"))
    assert np.isfinite(loss) and not np.allclose(before, np.array(encoder.shared_head.kernel))
    encoder.save(tmp_path / "shared.keras")
    restored = keras.saving.load_model(tmp_path / "shared.keras")
    assert restored.classification_head == "shared"
    expected = encoder.class_logits(encoder(_batch(), training=False))
    actual = restored.class_logits(restored(_batch(), training=False))
    for name in expected:
        np.testing.assert_allclose(np.array(actual[name]), np.array(expected[name]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="classification_head"):
        build_dual_encoder(spec, ("image", "audio"), classification_weight=1.0, classification_head="both", **SMALL)


def test_the_class_space_ranks_by_agreement_of_the_heads_class_probabilities(spec):
    from mmkeras.alignment import class_space, retrieve_embeddings

    encoder = build_dual_encoder(spec, ("image", "audio"), classification_weight=1.0,
                                 classification_head="shared", **SMALL)
    classes = spec.num_classes
    kernel = np.zeros((SMALL["embed_dim"], classes), "float32")
    kernel[np.arange(classes), np.arange(classes)] = 10.0  # axis i of the space votes for class i
    encoder.shared_head.kernel.assign(kernel)
    axes = np.eye(SMALL["embed_dim"], dtype="float32")[:classes]
    gallery_order = np.roll(np.arange(classes), 1)
    spaces = class_space(encoder, {"picture": axes, "sound": axes[gallery_order]})
    assert spaces["picture"].shape == (classes, classes)
    np.testing.assert_allclose(spaces["sound"].sum(axis=1), 1.0, rtol=1e-5)  # class probabilities
    best = retrieve_embeddings(spaces["picture"], spaces["sound"], k=1).indices[:, 0]
    np.testing.assert_array_equal(gallery_order[best], np.arange(classes))  # each query finds its class
    without_heads = build_dual_encoder(spec, ("image", "audio"), **SMALL)
    with pytest.raises(ValueError, match="classification_weight"):
        class_space(without_heads, {"picture": axes})
