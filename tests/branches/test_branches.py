"""Branch builders: shapes, names, masking, save/load and argument checks."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from fresh_process import run_fresh  # tests/ helper

from mmkeras.branches import (
    BRANCHES,
    build_audio_branch,
    build_image_branch,
    build_text_branch,
)
from mmkeras.branches.common import SequencePooling
from mmkeras.branches.log_mel import LogMelSpectrogram
from mmkeras.spec import load_spec

VOCABULARY = ["red", "green", "blue", "ball"]


@pytest.fixture(scope="module")
def spec():
    return load_spec("tiny")


def _batch(spec, name):
    feature = spec.feature(name)
    if feature.modality == "text":
        return tf.constant(["a red ball", ""])
    if feature.modality == "image":
        return np.random.default_rng(0).integers(0, 255, (2, *feature.shape)).astype("uint8")
    return np.random.default_rng(0).uniform(-1, 1, (2, *feature.shape)).astype("float32")


def _branch(spec, name, **kwargs):
    feature = spec.feature(name)
    if feature.modality == "text":
        kwargs.setdefault("vocabulary", VOCABULARY)
    return BRANCHES[feature.modality](feature, **kwargs)


@pytest.mark.parametrize("name", ["caption", "picture", "sound"])
def test_branch_outputs_names_and_shapes(spec, name):
    branch = _branch(spec, name, embed_dim=24)
    assert branch.name == f"{name}_branch"
    assert branch.input.name == name
    outputs = branch(_batch(spec, name), training=False)
    assert outputs["embedding"].shape == (2, 24)
    assert outputs["sequence"].shape[0] == 2 and outputs["sequence"].shape[-1] == 24
    assert np.isfinite(outputs["embedding"].numpy()).all()


@pytest.mark.parametrize("name", ["caption", "picture", "sound"])
def test_branch_survives_save_and_load(spec, name, tmp_path):
    branch = _branch(spec, name, embed_dim=16)
    batch = _batch(spec, name)
    branch.save(tmp_path / "branch.keras")
    restored = keras.saving.load_model(tmp_path / "branch.keras")
    np.testing.assert_allclose(
        restored(batch, training=False)["embedding"].numpy(),
        branch(batch, training=False)["embedding"].numpy(),
        rtol=1e-6,
        atol=1e-7,
    )


def test_text_branch_learns_vocabulary_from_corpus_and_masks_padding(spec):
    branch = build_text_branch(spec.feature("caption"), corpus=["red ball", "blue box", ""], embed_dim=8)
    vocabulary = branch.get_layer("caption_vectorizer").get_vocabulary()
    assert {"red", "ball", "blue", "box"} <= set(vocabulary)
    assert np.isfinite(branch(tf.constant([""]))["embedding"].numpy()).all()
    # Padding is masked: what the padding token embeds to cannot change the output, what a word embeds to does.
    before = branch(tf.constant(["red ball"]), training=False)["embedding"].numpy()
    table = branch.get_layer("token_embedding").embeddings
    padding_moved = table.numpy()
    padding_moved[0] += 3.0
    table.assign(padding_moved)
    np.testing.assert_allclose(branch(tf.constant(["red ball"]), training=False)["embedding"].numpy(), before,
                               rtol=1e-5, atol=1e-6)
    word_moved = padding_moved.copy()
    word_moved[vocabulary.index("red")] += 3.0
    table.assign(word_moved)
    assert not np.allclose(branch(tf.constant(["red ball"]), training=False)["embedding"].numpy(), before, atol=1e-4)


def test_text_branch_needs_a_vocabulary_source(spec):
    with pytest.raises(ValueError, match="needs a vocabulary"):
        build_text_branch(spec.feature("caption"))


def test_branch_rejects_wrong_modality_and_bad_sizes(spec):
    with pytest.raises(ValueError, match="needs an image feature"):
        build_image_branch(spec.feature("sound"))
    with pytest.raises(ValueError, match="embed_dim"):
        build_audio_branch(spec.feature("sound"), embed_dim=0)
    with pytest.raises(ValueError, match="Unknown audio encoder"):
        build_audio_branch(spec.feature("sound"), encoder="transformer")
    with pytest.raises(ValueError, match="Unknown backbone"):
        build_image_branch(spec.feature("picture"), backbone="vgg1000")
    with pytest.raises(ValueError, match="`weights` and `trainable` go with a pretrained `backbone`"):
        build_image_branch(spec.feature("picture"), weights="imagenet")


def test_image_stages_pool_between_stages(spec):
    branch = build_image_branch(spec.feature("picture"), stages=(8, 8), stem_stride=1, embed_dim=8)
    pools = [layer for layer in branch.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert len(pools) == 2
    assert branch.output["sequence"].shape == (None, 16, 8)  # 16x16 -> 8x8 -> 4x4 grid


def test_image_stem_stride_halves_the_grid_before_the_stages(spec):
    branch = build_image_branch(spec.feature("picture"), stages=(8, 8), stem_stride=2, embed_dim=8)
    first = next(layer for layer in branch.layers if isinstance(layer, keras.layers.Conv2D))
    assert first.strides == (2, 2)
    assert branch.output["sequence"].shape == (None, 4, 8)  # 16x16 -> 8x8 (stride) -> 4x4 -> 2x2 grid
    assert branch(_batch(spec, "picture"))["embedding"].shape == (2, 8)
    with pytest.raises(ValueError, match="stem_stride"):
        build_image_branch(spec.feature("picture"), stem_stride=0)


def test_separable_image_stages_keep_a_full_convolution_first(spec):
    branch = build_image_branch(spec.feature("picture"), stages=(8, 16), separable=True, embed_dim=8)
    convs = [layer for layer in branch.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.SeparableConv2D))]
    assert [type(layer).__name__ for layer in convs] == ["Conv2D"] + ["SeparableConv2D"] * 3
    assert branch(_batch(spec, "picture"))["embedding"].shape == (2, 8)


def test_image_flip_mirrors_only_while_training_and_is_refused_without_augment(spec, tmp_path):
    branch = build_image_branch(spec.feature("picture"), stages=(8,), flip="horizontal", embed_dim=8)
    branch.save(tmp_path / "branch.keras")
    flip = keras.saving.load_model(tmp_path / "branch.keras").get_layer("augment_flip")
    images = _batch(spec, "picture")
    mirrored = images[:, :, ::-1]
    seen = set()
    for _ in range(20):
        out = np.asarray(flip(images, training=True))
        for row, image in enumerate(out):
            same, flipped = np.array_equal(image, images[row]), np.array_equal(image, mirrored[row])
            assert same or flipped
            seen.add(flipped)
    assert seen == {False, True}
    np.testing.assert_array_equal(np.asarray(flip(images, training=False)), images)
    assert "augment_flip" not in [layer.name for layer in build_image_branch(spec.feature("picture")).layers]
    with pytest.raises(ValueError, match="`flip` must be one of"):
        build_image_branch(spec.feature("picture"), flip="diagonal")
    with pytest.raises(ValueError, match="augment=True"):
        build_image_branch(spec.feature("picture"), flip="horizontal", augment=False)


def test_image_rotation_and_erasing_change_pictures_only_while_training_and_survive_saving(spec, tmp_path):
    branch = build_image_branch(spec.feature("picture"), stages=(8,), rotation=0.1, erasing=1.0, embed_dim=8)
    branch.save(tmp_path / "branch.keras")
    loaded = keras.saving.load_model(tmp_path / "branch.keras")
    images = np.full((8, *spec.feature("picture").shape), 200, "uint8")
    images[:, 4:12, 6:10] = 30  # a bar: a rotation moves it
    for name in ("augment_rotation", "augment_erasing"):
        layer = loaded.get_layer(name)
        np.testing.assert_allclose(np.asarray(layer(images, training=False)), images)
        changed = np.asarray(layer(images, training=True)) != images
        assert changed.reshape(len(images), -1).any(axis=1).all(), name  # every picture, with erasing=1.0
    assert loaded.get_layer("augment_rotation").factor == (-0.1, 0.1)
    names = [layer.name for layer in build_image_branch(spec.feature("picture")).layers]
    assert "augment_rotation" not in names and "augment_erasing" not in names


@pytest.mark.parametrize("options, message", [
    ({"rotation": 0.6}, "`rotation` must be a number from 0 to 0.5"),
    ({"erasing": -0.1}, "`erasing` must be a number from 0 to 1"),
    ({"erasing": True}, "`erasing` must be a number"),
    ({"rotation": 0.05, "augment": False}, "needs augment=True"),
])
def test_image_rotation_and_erasing_refuse_bad_amounts(spec, options, message):
    with pytest.raises(ValueError, match=message):
        build_image_branch(spec.feature("picture"), **options)


def test_audio_conv1d_encoder_has_no_lstm(spec):
    branch = build_audio_branch(spec.feature("sound"), encoder="conv1d", embed_dim=8)
    assert not any("lstm" in layer.name for layer in branch.layers)
    assert branch(_batch(spec, "sound"))["embedding"].shape == (2, 8)


def test_image_backbone_from_keras_applications(spec):
    branch = build_image_branch(spec.feature("picture"), backbone="mobilenet_v3_small", weights=None, embed_dim=8)
    assert branch(_batch(spec, "picture"))["embedding"].shape == (2, 8)


def test_log_mel_is_normalised_per_bin_and_reloads():
    rng = np.random.default_rng(0)
    waves = (rng.normal(0, 0.1, (2, 4000)) * np.array([[1.0], [10.0]])).astype("float32")
    layer = LogMelSpectrogram(sample_rate=8000, num_mel_bins=20)
    features = layer(waves).numpy()
    assert features.shape == (2, layer.num_frames(4000), 20)
    np.testing.assert_allclose(features.mean(axis=1), 0.0, atol=1e-3)
    # Per-utterance normalisation removes gain: the loud copy's features match the quiet one's shape.
    assert np.abs(features.std(axis=1) - 1.0).max() < 0.05
    restored = LogMelSpectrogram.from_config(layer.get_config())
    np.testing.assert_allclose(restored(waves).numpy(), features, rtol=1e-5)
    with pytest.raises(ValueError, match="normalization"):
        LogMelSpectrogram(normalization="global")


def test_sequence_pooling_ignores_padding_and_never_divides_by_zero():
    sequence = np.array([[[1.0], [3.0], [100.0]], [[5.0], [7.0], [9.0]]], "float32")
    mask = np.array([[True, True, False], [False, False, False]])
    pooled = SequencePooling()(sequence, mask=mask).numpy()
    np.testing.assert_allclose(pooled, [[2.0], [0.0]])


def test_char_ngram_text_branch_shares_pieces_with_unseen_words_and_reloads(spec, tmp_path):
    from mmkeras.branches.text import prefers_char_ngrams

    corpus = ["une grenouille", "un canard", "une fleur"]
    branch = build_text_branch(spec.feature("caption"), corpus=corpus, tokens="char_ngrams", ngram_sizes=(2, 3),
                               embed_dim=8)
    assert not any(isinstance(layer, keras.layers.LSTM) for layer in branch.layers)
    vectorizer = branch.get_layer("caption_vectorizer")
    assert {"u n", "u n e", "f l e"} <= set(vectorizer.get_vocabulary())
    ids = vectorizer(tf.constant(["grenouilles"])).numpy()[0]  # an unseen word: its pieces are known
    assert (ids > 1).sum() >= 15 and ids.shape == (8 * 6 * 2,)
    batch = tf.constant(["une grenouille", ""])
    branch.save(tmp_path / "branch.keras")
    restored = keras.saving.load_model(tmp_path / "branch.keras")
    np.testing.assert_allclose(restored(batch, training=False)["embedding"].numpy(),
                               branch(batch, training=False)["embedding"].numpy(), rtol=1e-6, atol=1e-7)
    # "auto" reads char n-grams when words are rarely repeated, words otherwise and with a fixed vocabulary.
    assert prefers_char_ngrams(corpus) and not prefers_char_ngrams(["red ball"] * 5)
    auto = build_text_branch(spec.feature("caption"), corpus=corpus, tokens="auto", embed_dim=8)
    assert auto.get_layer("caption_vectorizer").get_config()["split"] == "character"
    words = _branch(spec, "caption", tokens="auto")
    assert isinstance(words.get_layer("recurrent").layer, keras.layers.Bidirectional)
    with pytest.raises(ValueError, match="`tokens` must be one of"):
        build_text_branch(spec.feature("caption"), corpus=corpus, tokens="letters")


def test_token_dropout_replaces_only_real_tokens_while_training_and_reloads(spec, tmp_path):
    from mmkeras.branches.token_dropout import TokenDropout

    ids = np.tile(np.array([[5, 6, 7, 8, 0, 0]]), (64, 1))
    dropped = TokenDropout(0.5, seed=0)(ids, training=True).numpy()
    assert set(np.unique(dropped[:, :4])) == {1, 5, 6, 7, 8} and (dropped[:, 4:] == 0).all()
    assert 0.3 < (dropped[:, :4] == 1).mean() < 0.7
    np.testing.assert_array_equal(TokenDropout(0.5)(ids, training=False), ids)
    with pytest.raises(ValueError, match="rate"):
        TokenDropout(1.0)
    branch = build_text_branch(spec.feature("caption"), vocabulary=VOCABULARY, token_dropout=0.2, embed_dim=8)
    assert branch.get_layer("token_dropout").rate == 0.2
    branch.save(tmp_path / "branch.keras")
    restored = keras.saving.load_model(tmp_path / "branch.keras")
    batch = tf.constant(["a red ball", ""])
    np.testing.assert_allclose(restored(batch, training=False)["embedding"].numpy(),
                               branch(batch, training=False)["embedding"].numpy(), rtol=1e-6, atol=1e-7)


def test_rare_token_dropout_hides_rare_words_more_often_and_keeps_its_counts_when_saved(spec, tmp_path):
    from mmkeras.branches.text import token_counts
    from mmkeras.branches.token_dropout import TokenDropout

    layer = TokenDropout(rare=1.0, counts=[0, 0, 1, 3, 99])
    np.testing.assert_allclose(layer.rare_probability.numpy(), [0, 0, 1 / 2, 1 / 4, 1 / 100])
    ids = np.tile(np.array([[2, 3, 4, 1, 0]]), (4000, 1))

    def replaced(dropout):
        dropped = dropout(ids, training=True).numpy()
        assert (dropped[:, 3] == 1).all() and (dropped[:, 4] == 0).all()  # the OOV id stays, padding is never touched
        return (dropped[:, :3] == 1).mean(axis=0)

    np.testing.assert_allclose(replaced(layer), [0.5, 0.25, 0.01], atol=0.03)
    layer.strength.assign(0.5)  # a warm-up's half strength
    np.testing.assert_allclose(replaced(layer), [0.25, 0.125, 0.005], atol=0.03)
    layer.strength.assign(1.0)
    np.testing.assert_allclose(replaced(TokenDropout(0.3, rare=1.0, counts=[0, 0, 1, 3, 99])), [0.5, 0.3, 0.3],
                               atol=0.03)  # the uniform rate is a floor
    np.testing.assert_array_equal(layer(ids, training=False), ids)
    with pytest.raises(ValueError, match="needs `counts`"):
        TokenDropout(rare=1.0)
    with pytest.raises(ValueError, match="alpha"):
        TokenDropout(rare=-1.0, counts=[0, 0])

    corpus = ["a red ball", "a ball", "a green box"]
    branch = build_text_branch(spec.feature("caption"), corpus=corpus, rare_token_dropout=1.0, embed_dim=8)
    vocabulary = branch.get_layer("caption_vectorizer").get_vocabulary()
    counts = token_counts(branch.get_layer("caption_vectorizer"), corpus + ["an unknown word"], len(vocabulary))
    assert dict(zip(vocabulary, counts.tolist())) == {"": 0, "[UNK]": 3, "a": 3, "ball": 2, "red": 1, "green": 1,
                                                      "box": 1}
    probability = branch.get_layer("token_dropout").rare_probability.numpy()
    expected = {"a": 1 / 4, "ball": 1 / 3, "red": 1 / 2, "green": 1 / 2, "box": 1 / 2}
    for token, value in expected.items():
        assert probability[vocabulary.index(token)] == pytest.approx(value), token
    branch.save(tmp_path / "branch.keras")
    restored = keras.saving.load_model(tmp_path / "branch.keras")
    np.testing.assert_allclose(restored.get_layer("token_dropout").rare_probability.numpy(), probability)
    # A given vocabulary has no counts: no frequency-aware dropout, and no layer without `token_dropout`.
    assert "token_dropout" not in [layer.name for layer in
                                   build_text_branch(spec.feature("caption"), vocabulary=VOCABULARY,
                                                     rare_token_dropout=1.0, embed_dim=8).layers]


def _prefix_mask(lengths, steps):
    return np.arange(steps)[np.newaxis] < np.asarray(lengths)[:, np.newaxis]


RECURRENT_LAYERS = {
    "bilstm": lambda sequences: keras.layers.Bidirectional(keras.layers.LSTM(6, return_sequences=sequences)),
    "lstm": lambda sequences: keras.layers.LSTM(6, return_sequences=sequences),  # padded outputs: the last valid one
    "bigru_sum": lambda sequences: keras.layers.Bidirectional(keras.layers.GRU(6, return_sequences=sequences),
                                                              merge_mode="sum"),  # run with its mask
}


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("kind", list(RECURRENT_LAYERS))
def test_trim_padding_gives_the_outputs_and_gradients_of_every_padded_step(kind, return_sequences):
    from mmkeras.branches.trim_padding import TrimPadding

    keras.utils.set_random_seed(0)
    recurrent = RECURRENT_LAYERS[kind](return_sequences)
    trimmed = TrimPadding(recurrent)
    inputs = tf.constant(np.random.default_rng(0).normal(size=(4, 12, 5)).astype("float32"))
    mask = tf.constant(_prefix_mask([3, 7, 0, 5], 12))
    with tf.GradientTape(persistent=True) as tape:
        full = recurrent(inputs, mask=mask)
        cut = trimmed(inputs, mask=mask)
        full_loss, cut_loss = tf.reduce_sum(full ** 2), tf.reduce_sum(cut ** 2)
    assert cut.shape == full.shape
    np.testing.assert_allclose(cut.numpy(), full.numpy(), rtol=1e-5, atol=1e-6)
    for full_grad, cut_grad in zip(tape.gradient(full_loss, recurrent.trainable_variables),
                                   tape.gradient(cut_loss, recurrent.trainable_variables), strict=True):
        np.testing.assert_allclose(cut_grad.numpy(), full_grad.numpy(), rtol=1e-4, atol=1e-6)
    # What an example gets does not depend on how long the other texts of its batch are.
    alone = trimmed(inputs[:1], mask=mask[:1])
    np.testing.assert_allclose(alone.numpy(), cut[:1].numpy(), rtol=1e-5, atol=1e-6)
    assert not trimmed.supports_jit


def test_trim_padding_runs_the_layer_over_the_longest_sequence_only():
    from mmkeras.branches.trim_padding import TrimPadding

    class StepCounter(keras.layers.Layer):
        return_sequences = True

        def __init__(self):
            super().__init__()
            self.supports_masking = True

        def call(self, inputs, mask=None):
            self.steps_seen = int(inputs.shape[1])
            return inputs if mask is None else inputs * tf.cast(mask, inputs.dtype)[..., tf.newaxis]

    counter = StepCounter()
    outputs = TrimPadding(counter)(tf.ones((3, 32, 2)), mask=tf.constant(_prefix_mask([2, 5, 1], 32)))
    assert counter.steps_seen == 5 and outputs.shape == (3, 32, 2)
    TrimPadding(counter)(tf.ones((2, 32, 2)), mask=tf.constant(_prefix_mask([0, 0], 32)))
    assert counter.steps_seen == 1  # a batch of empty texts runs one masked step
    TrimPadding(counter)(tf.ones((2, 32, 2)))  # no mask: every step
    assert counter.steps_seen == 32


def test_text_branch_trims_its_lstm_to_the_longest_text_of_the_batch(spec):
    branch = build_text_branch(spec.feature("caption"), vocabulary=VOCABULARY, embed_dim=8)
    assert type(branch.get_layer("recurrent")).__name__ == "TrimPadding"
    # The same caption gives the same embedding next to a short text and next to a long one.
    long_text = " ".join(["red"] * 40)
    with_short = branch(tf.constant(["blue ball", "red"]), training=False)["embedding"].numpy()
    with_long = branch(tf.constant(["blue ball", long_text]), training=False)["embedding"].numpy()
    np.testing.assert_allclose(with_short[0], with_long[0], rtol=1e-5, atol=1e-6)


def test_a_text_branch_training_step_logs_no_error():
    # Keras transposes an LSTM's boolean mask to time-major, which made oneDNN log "E... oneDNN supports DT_BOOL
    # only on platforms with AVX-512" at the top of every run of a text spec (tuxpaint), on CPUs with AVX-512 too.
    # A fresh process, as TensorFlow logs it once per process.
    code = (
        "import tensorflow as tf\n"
        "from mmkeras.branches import build_text_branch\n"
        "from mmkeras.spec import load_spec\n"
        "branch = build_text_branch(load_spec('tiny').feature('caption'), vocabulary=['red', 'ball'], embed_dim=4)\n"
        "@tf.function\n"
        "def step(texts):\n"
        "    with tf.GradientTape() as tape:\n"
        "        loss = tf.reduce_sum(branch(texts, training=True)['embedding'])\n"
        "    return tape.gradient(loss, branch.trainable_variables)\n"
        "print(len(step(tf.constant(['a red ball', 'red', '']))))\n"
    )
    result = run_fresh(code)
    assert int(result.stdout.strip()) > 0
    assert "oneDNN supports" not in result.stderr
