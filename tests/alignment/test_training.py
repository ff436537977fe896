"""An encoder aligned on `tiny` retrieves, classifies zero-shot, seeds a classifier and exports its towers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from mmkeras.alignment import (
    build_classifier_from_encoder,
    class_embeddings,
    embed,
    evaluate_retrieval,
    export_tower,
    export_towers,
    pretrain_encoder,
    retrieve,
    zero_shot_classify,
)
from mmkeras.alignment.export import check_tower_export
from mmkeras.alignment.pretrain import (
    exclude_class_ids,
    label_fraction_indices,
    vocabularies_without_classes,
)
from mmkeras.data.pipeline import make_dataset, read_split
from mmkeras.export.check import ExportSkewError

SMALL = {
    "embed_dim": 16,
    "branch_dim": 16,
    "branch_options": {
        "text": {"token_dim": 8, "lstm_units": 8, "bidirectional": False},
        "image": {"stages": (8,), "convs_per_stage": 1},
        "audio": {"encoder": "conv1d", "conv_stages": (8,)},
    },
}
PAIRS = ("picture_to_sound", "sound_to_picture", "picture_to_caption", "caption_to_picture")


@pytest.fixture(scope="module")
def trained(tiny_spec):
    encoder, history = pretrain_encoder(
        tiny_spec, ("image", "audio", "text"), epochs=30, batch_size=20, learning_rate=3e-3, seed=0, **SMALL
    )
    return encoder, history.history["loss"]


@pytest.fixture(scope="module")
def raw_test(tiny_spec):
    """The test split's raw values: text, PNG bytes and WAV bytes, with labels and presence."""
    rows = list(read_split(tiny_spec, "test").as_numpy_iterator())
    raw = {key: np.array([row[0][key] for row in rows], dtype=object) for key in rows[0][0]}
    return raw, np.array([row[1] for row in rows])


@pytest.mark.slow
def test_an_encoder_trained_a_few_steps_retrieves_far_better_than_chance(trained):
    encoder, losses = trained
    assert losses[-1] < losses[0]
    assert encoder.temperature != pytest.approx(0.07, abs=1e-4)  # the temperature trained too
    # `tiny` pairs its modalities by class (a colour), so a match is any item of the query's class.
    results = evaluate_retrieval(encoder, "test", by_class=True, ks=(1, 5))
    assert results["num_examples"] >= 15
    chance = results["chance"]["recall@1"]
    for direction in PAIRS:
        assert results[direction]["recall@1"] >= chance + 0.25, (direction, results[direction], chance)
        assert results[direction]["mean_rank"] < results["chance"]["mean_rank"]


@pytest.mark.slow
def test_retrieve_gives_the_same_answer_for_raw_and_decoded_inputs(trained, tiny_spec, raw_test):
    encoder, _ = trained
    raw, _ = raw_test
    present = raw["sound_present"].astype(bool) & raw["picture_present"].astype(bool)
    from_raw = retrieve(encoder, {"picture": raw["picture"][present]}, {"sound": raw["sound"][present]}, k=3)
    features, _ = next(iter(make_dataset(tiny_spec.with_features(["picture", "sound"]), "test", batch_size=64)))
    decoded = {name: features[name].numpy()[present] for name in ("picture", "sound")}
    from_decoded = retrieve(encoder, {"picture": decoded["picture"]}, {"sound": decoded["sound"]}, k=3)
    assert from_raw.indices.shape == (present.sum(), 3)
    np.testing.assert_array_equal(from_raw.indices, from_decoded.indices)
    np.testing.assert_allclose(from_raw.scores, from_decoded.scores, atol=1e-5)
    assert np.all(np.diff(from_raw.scores, axis=1) <= 1e-6)  # best first
    with pytest.raises(ValueError, match="exactly one feature"):
        retrieve(encoder, {"picture": decoded["picture"], "sound": decoded["sound"]}, {"sound": decoded["sound"]})
    with pytest.raises(ValueError, match="space"):
        retrieve(encoder, {"picture": decoded["picture"]}, {"sound": decoded["sound"]}, space="labels")
    with pytest.raises(ValueError, match="scoring='cosine'"):
        retrieve(encoder, {"picture": decoded["picture"]}, {"sound": decoded["sound"]}, space="classes",
                 scoring="csls")


@pytest.mark.slow
def test_zero_shot_classifies_pictures_by_spoken_and_written_class_prototypes(trained, tiny_spec, raw_test):
    encoder, _ = trained
    raw, labels = raw_test
    train_rows = list(read_split(tiny_spec, "train").as_numpy_iterator())
    classes = range(tiny_spec.num_classes)
    # Each class named by five of its training recordings, or by its colour word.
    recordings = [
        [raw["sound"] for raw, label in train_rows if label == c and raw["sound_present"]][:5] for c in classes
    ]
    for prototypes in (class_embeddings(encoder, "sound", recordings),
                       class_embeddings(encoder, "caption", list(tiny_spec.label.class_names))):
        assert prototypes.shape == (3, 16)
        np.testing.assert_allclose(np.linalg.norm(prototypes, axis=1), 1.0, rtol=1e-5)
        result = zero_shot_classify(encoder, {"picture": raw["picture"]}, prototypes)
        assert result.scores.shape == (len(labels), 3)
        assert np.mean(result.predictions == labels) >= 0.6
    # A subset of the prototypes indexes that subset.
    two_classes = class_embeddings(encoder, "sound", recordings[1:])
    subset = zero_shot_classify(encoder, {"picture": raw["picture"]}, two_classes)
    assert set(np.unique(subset.predictions)) <= {0, 1}


@pytest.mark.slow
def test_classifier_branches_start_from_the_towers(trained, tiny_spec):
    encoder, _ = trained
    classifier = build_classifier_from_encoder(encoder, fusion="concat", units=8, seed=0)
    feature_inputs = sorted(i.name for i in classifier.inputs if not i.name.endswith("_present"))
    assert feature_inputs == ["caption", "picture", "sound"]
    features, _ = next(iter(make_dataset(tiny_spec, "test", batch_size=8)))
    for name in encoder.feature_names:
        source = encoder.get_tower(name).get_layer(f"{name}_branch")
        target = classifier.get_layer(f"{name}_branch")
        for expected, actual in zip(source.get_weights(), target.get_weights()):
            np.testing.assert_array_equal(actual, expected)
        np.testing.assert_allclose(
            target(features[name], training=False)["embedding"], source(features[name], training=False)["embedding"],
            atol=1e-6,
        )
    with pytest.raises(ValueError, match="differ"):
        build_classifier_from_encoder(encoder, branch_options={"image": {"stages": (4,), "convs_per_stage": 1}})


@pytest.mark.slow
def test_each_tower_exports_as_a_raw_input_saved_model_that_matches_keras(trained, raw_test, tmp_path):
    encoder, _ = trained
    raw, _ = raw_test
    paths = export_towers(encoder, tmp_path)
    assert sorted(paths) == ["caption", "picture", "sound"]
    for name, path in paths.items():
        assert path.name == "1" and (path / "saved_model.pb").is_file()
        metadata = json.loads((path / "assets.extra" / "mmkeras_export.json").read_text())
        assert metadata["feature"]["name"] == name and metadata["embed_dim"] == 16
        present = raw[f"{name}_present"].astype(bool)
        values = list(raw[name][present])
        loaded = tf.saved_model.load(str(path))
        served = loaded.signatures["serving_default"](**{name: tf.constant(values)})["embedding"].numpy()
        expected = embed(encoder, name, values)  # the Keras tower on the pipeline's decoding
        np.testing.assert_allclose(served, expected, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, rtol=1e-5)
    picture = list(raw["picture"][:2])
    decoded = tf.io.decode_png(picture[0])[None]
    loaded = tf.saved_model.load(str(paths["picture"]))
    served = loaded.signatures["serving_decoded"](picture=decoded)["embedding"].numpy()
    np.testing.assert_allclose(served, embed(encoder, "picture", picture[:1]), atol=1e-5)
    extra = paths["caption"] / "assets.extra"
    assert (extra / "tf_serving_warmup_requests").stat().st_size > 0
    assert list(json.loads((extra / "request_instances.json").read_text())["instances"][0]) == ["caption"]
    assert check_tower_export(encoder, "caption", paths["caption"]).max_abs_diff <= 1e-5
    moved = encoder.get_tower("caption").trainable_variables
    for variable in moved:  # a tower that is no longer the exported one
        variable.assign(variable + 0.5)
    try:
        with pytest.raises(ExportSkewError, match="'caption' tower export"):
            check_tower_export(encoder, "caption", paths["caption"])
    finally:
        for variable in moved:
            variable.assign(variable - 0.5)
    assert export_tower(encoder, "picture", tmp_path).name == "2"
    with pytest.raises(FileExistsError, match="never overwritten"):
        export_tower(encoder, "picture", tmp_path, version=1)


def test_excluded_classes_never_reach_training_and_label_subsets_are_stratified(tiny_spec):
    dataset = exclude_class_ids(make_dataset(tiny_spec, "train", batch_size=8, training=True, seed=0), [2], 8)
    labels = np.concatenate([label.numpy() for _, label in dataset])
    assert len(labels) > 0 and 2 not in labels and {0, 1} <= set(labels)
    # Nor do their words: "blue" names class 2 and occurs in no other caption.
    vocabulary = vocabularies_without_classes(tiny_spec, ["caption", "picture"], [2])
    assert list(vocabulary) == ["caption"] and "red" in vocabulary["caption"] and "blue" not in vocabulary["caption"]
    all_labels = np.array([0] * 20 + [1] * 10 + [2] * 3)
    chosen = label_fraction_indices(all_labels, 0.1, seed=0)
    assert np.bincount(all_labels[chosen]).tolist() == [2, 1, 1]
    with pytest.raises(ValueError, match="Unknown classes"):
        pretrain_encoder(tiny_spec, ("image", "audio"), exclude_classes=("purple",))
    with pytest.raises(ValueError, match="`positives` must be one of"):
        pretrain_encoder(tiny_spec, ("image", "audio"), positives="classes")


def test_a_seeded_alignment_run_is_reproducible(tiny_spec):
    # The split's parallel decoding keeps its order under a seed, so the shuffles see the same examples.
    runs = [pretrain_encoder(tiny_spec, ("image", "audio"), epochs=2, batch_size=8, seed=3, **SMALL) for _ in range(2)]
    (first, first_history), (second, second_history) = runs
    assert first_history.history["loss"] == second_history.history["loss"]
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_the_text_towers_word_counts_leave_out_held_out_classes_and_carry_into_the_classifier(tiny_spec):
    from mmkeras.alignment.pretrain import texts_without_classes
    from mmkeras.branches.text import token_counts

    small = {**SMALL, "branch_options": {"text": SMALL["branch_options"]["text"]}}
    encoder, _ = pretrain_encoder(tiny_spec, ("image", "text"), epochs=1, batch_size=8, seed=0,
                                  exclude_classes=(tiny_spec.label.class_names[2],), **small)
    tower = encoder.get_tower("caption").get_layer("caption_branch")
    vectorizer, dropout = tower.get_layer("caption_vectorizer"), tower.get_layer("token_dropout")
    kept_texts = texts_without_classes(tiny_spec, ["caption"], [2])["caption"]
    counts = token_counts(vectorizer, kept_texts, int(tiny_spec.feature("caption").options["vocab_size"]))
    expected = 1.0 / (1.0 + counts[2:len(vectorizer.get_vocabulary())])
    np.testing.assert_allclose(dropout.rare_probability.numpy()[2:len(expected) + 2], expected, rtol=1e-6)
    classifier = build_classifier_from_encoder(encoder, fusion="concat", units=8, seed=0)
    np.testing.assert_array_equal(classifier.get_layer("caption_branch").get_layer("token_dropout")
                                  .rare_probability.numpy(), dropout.rare_probability.numpy())
    # A tower without it (as encoders saved before the option are) gives a classifier without it.
    without = {"branch_options": {"text": {**SMALL["branch_options"]["text"], "rare_token_dropout": 0.0}}}
    plain, _ = pretrain_encoder(tiny_spec, ("image", "text"), epochs=1, batch_size=8, seed=0,
                                **{**small, **without})
    del plain.branch_config["branch_options"]["text"]["rare_token_dropout"]  # an old encoder's config
    layers = [layer.name for layer in build_classifier_from_encoder(plain, units=8).get_layer("caption_branch").layers]
    assert "token_dropout" not in layers


def test_the_text_towers_rare_word_dropout_can_ramp_in_as_in_train(tiny_spec):
    small = {**SMALL, "branch_options": {"text": SMALL["branch_options"]["text"]}}
    encoder, history = pretrain_encoder(tiny_spec, ("image", "text"), epochs=4, batch_size=8, seed=0,
                                        rare_token_warmup=0.5, **small)
    assert history.history["rare_token_strength"] == [0.0, 0.5, 1.0, 1.0]
    dropout = encoder.get_tower("caption").get_layer("caption_branch").get_layer("token_dropout")
    assert float(dropout.strength.numpy()) == 1.0  # full strength once trained
    _, history = pretrain_encoder(tiny_spec, ("image", "text"), epochs=2, batch_size=8, seed=0, **small)
    assert history.history["rare_token_strength"] == [1.0, 1.0]  # the default: full strength throughout


def test_export_towers_publishes_every_tower_or_none(trained, tmp_path, monkeypatch):
    import mmkeras.alignment.export as tower_export

    encoder, _ = trained
    checked, last = tower_export.check_tower_export, encoder.feature_names[-1]

    def failing_last(encoder, feature_name, path):  # the last tower's export fails its check
        if feature_name == last:
            raise RuntimeError(f"{feature_name!r} tower export failed")
        return checked(encoder, feature_name, path)

    monkeypatch.setattr(tower_export, "check_tower_export", failing_last)
    with pytest.raises(RuntimeError, match=f"'{last}' tower export failed"):
        export_towers(encoder, tmp_path)
    # The other towers were written and checked first, yet none was published, and no staging folder is left.
    assert not [p for p in tmp_path.rglob("*") if p.name.isdigit() or p.name.startswith(".writing")]
    monkeypatch.setattr(tower_export, "check_tower_export", checked)
    assert {name: path.name for name, path in export_towers(encoder, tmp_path).items()} == {
        "caption": "1", "picture": "1", "sound": "1"}
