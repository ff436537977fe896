"""Text branch: raw strings -> TextVectorization -> Embedding -> (Bi)LSTM, or a pretrained encoder.

Short texts in small datasets (names, captions, in several languages and
scripts) give most words once or twice: a word-level vocabulary then holds
few words worth an embedding, and an unseen name is all out-of-vocabulary.
`tokens="char_ngrams"` reads character n-grams instead (a fastText-style bag of
subword pieces, which unseen words share with seen ones); `tokens="auto"`
picks them when the training corpus is that sparse (`prefers_char_ngrams`).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from mmkeras.branches.common import check_positive, finish_branch, make_input
from mmkeras.branches.hub import finish_hub_branch, is_hub_encoder, make_hub_encoder
from mmkeras.branches.kerashub import is_keras_hub_encoder, make_keras_hub_encoder
from mmkeras.branches.token_dropout import TokenDropout
from mmkeras.branches.trim_padding import TrimPadding
from mmkeras.spec import FeatureSpec

TOKENS = ("words", "char_ngrams", "auto")
DEFAULT_NGRAM_SIZES = (2, 3, 4)
# Characters read per word of the feature's `sequence_length`, for character n-grams.
CHARS_PER_WORD = 6
# `tokens="auto"` reads character n-grams when the training texts repeat each distinct
# word fewer than this many times on average: most words are then too rare to learn.
MIN_WORD_REPEATS = 4.0
# `rare_token_dropout`'s alpha: a token seen n times in training is hidden with probability alpha / (alpha + n).
# 1.0 measured best for the fused tuxpaint model (0.711 against 0.686 without, 8 seeds; 0.25: 0.708); with
# `mmkeras.train`'s warm-up (`RareTokenDropoutWarmup`) 0.720, and the text branch alone 0.649 against 0.608
# (benchmarks/results/generalising_defaults_notes.md).
RARE_TOKEN_DROPOUT = 1.0


def prefers_char_ngrams(corpus: Iterable[str]) -> bool:
    """Whether a training corpus is too sparse in words for word tokens: mean repeats per word below `MIN_WORD_REPEATS`.

    Args:
      corpus: the training texts.

    Returns:
      True when the texts' word occurrences per distinct word (lower-cased,
      split on whitespace) are fewer than `MIN_WORD_REPEATS`.

    Example:
      >>> prefers_char_ngrams(["Une grenouille.", "Un canard.", "Une fleur."])
      True
    """
    words = [word for text in corpus for word in str(text).lower().split()]
    return bool(words) and len(words) / len(set(words)) < MIN_WORD_REPEATS


def make_vectorizer(
    feature: FeatureSpec,
    *,
    vocabulary: Sequence[str] | None = None,
    corpus: Iterable[str] | None = None,
    tokens: str = "words",
    ngram_sizes: Sequence[int] = DEFAULT_NGRAM_SIZES,
) -> layers.TextVectorization:
    """Return the feature's TextVectorization layer with its vocabulary set.

    The vocabulary is learned from the training split (`corpus`) or given
    outright; it is saved inside the model, so serving sees the same tokens.

    Args:
      feature: a text feature (uses `vocab_size` and `sequence_length`).
      vocabulary: a token list to use as is (no padding or OOV tokens).
      corpus: training texts to adapt the vocabulary on, when no vocabulary is given.
      tokens: "words", or "char_ngrams": the character n-grams of `ngram_sizes`
        (spaces included, so n-grams mark word boundaries), at most
        `CHARS_PER_WORD * sequence_length` characters' worth per size.
      ngram_sizes: the n-gram lengths read with "char_ngrams".

    Returns:
      A `TextVectorization` layer named `<feature>_vectorizer`.

    Raises:
      ValueError: if neither `vocabulary` nor `corpus` is given.
    """
    length = int(feature.options["sequence_length"])
    characters = {}
    if tokens == "char_ngrams":
        ngram_sizes = tuple(int(size) for size in ngram_sizes)
        characters = {"split": "character", "ngrams": ngram_sizes}
        length *= CHARS_PER_WORD * len(ngram_sizes)
    vectorizer = layers.TextVectorization(
        max_tokens=int(feature.options["vocab_size"]),
        output_sequence_length=length,
        vocabulary=list(vocabulary) if vocabulary is not None else None,
        name=f"{feature.name}_vectorizer",
        **characters,
    )
    if vocabulary is None:
        if corpus is None:
            raise ValueError(
                f"Text feature {feature.name!r} needs a vocabulary: pass `vocabulary=[...]` or the training "
                "texts as `corpus=[...]` (build_classifier reads them from the spec's train split)."
            )
        texts = [text for text in corpus if text]
        if not texts:
            raise ValueError(f"Text feature {feature.name!r}: the training corpus has no non-empty text.")
        vectorizer.adapt(texts, batch_size=256)
    return vectorizer


def token_counts(vectorizer: layers.TextVectorization, corpus: Iterable[str], size: int) -> np.ndarray:
    """Count how often each token id occurs in `corpus`, as the vectorizer reads it.

    Args:
      vectorizer: an adapted `TextVectorization` layer.
      corpus: the training texts.
      size: the table's length (the feature's `vocab_size`).

    Returns:
      An int64 array of `size` counts; id 0 (padding) counts nothing.

    Example:
      >>> token_counts(vectorizer, ["a red ball", "a ball"], 8)[:5]  # vocabulary "", [UNK], a, ball, red
      array([0, 0, 2, 2, 1])
    """
    texts = [str(text) for text in corpus if text]
    counts = np.zeros(size, "int64")
    for start in range(0, len(texts), 1024):
        ids = np.asarray(vectorizer(texts[start:start + 1024])).ravel()
        counts += np.bincount(ids[(ids > 0) & (ids < size)], minlength=size)[:size]
    return counts


def build_text_branch(
    feature: FeatureSpec,
    *,
    vocabulary: Sequence[str] | None = None,
    corpus: Iterable[str] | None = None,
    embed_dim: int = 128,
    token_dim: int = 64,
    lstm_units: int = 64,
    bidirectional: bool = True,
    dropout_rate: float = 0.3,
    tokens: str = "words",
    ngram_sizes: Sequence[int] = DEFAULT_NGRAM_SIZES,
    token_dropout: float = 0.0,
    rare_token_dropout: float = RARE_TOKEN_DROPOUT,
    encoder: str | None = None,
    preprocessor: str | None = None,
    trainable: bool | None = None,
    encoder_options: Mapping[str, Any] | None = None,
) -> keras.Model:
    """Build the text branch: strings in, an embedding and a token sequence out.

    Words seen once or twice in the training texts are hidden at random while
    training (`rare_token_dropout`), so that the branch learns what an unknown
    word means instead of memorising names that unseen examples will not have.
    Padding tokens are masked all the way through the LSTM and the pooling, so
    a short caption is not diluted by its padding, and an empty one pools to zeros;
    the LSTM runs only up to the batch's longest text (`TrimPadding`), with the
    same outputs as over every padded step.
    With `tokens="char_ngrams"` the text is a bag of character n-grams: their
    embeddings are pooled without the LSTM (their order carries little).
    With `encoder="hub:<handle-or-path>"` a pretrained sentence or BERT-style
    encoder (see `mmkeras.branches.hub.HubEncoder`) replaces the vectorizer and
    LSTM; it takes the raw strings itself, so no vocabulary is needed.

    Args:
      feature: a text feature of the spec.
      vocabulary: the token list (see `make_vectorizer`).
      corpus: training texts to learn the vocabulary from (without
        `vocabulary`) and to count words in (`rare_token_dropout`).
      embed_dim: width of the branch outputs.
      token_dim: width of the token embeddings.
      lstm_units: LSTM units (per direction).
      bidirectional: read the text both ways.
      dropout_rate: dropout on token embeddings and on the pooled features.
      tokens: "words" (word tokens read by the LSTM), "char_ngrams" (a bag of
        character n-grams) or "auto" (char n-grams when the training
        `corpus` repeats its words too rarely, see `prefers_char_ngrams`;
        words when a vocabulary is given).
      ngram_sizes: the character n-gram lengths (with "char_ngrams").
      token_dropout: the share of training tokens replaced with the
        out-of-vocabulary id (see `TokenDropout`), so that unknown words
        in unseen texts read as "no information".
      rare_token_dropout: alpha of the frequency-aware token dropout (see
        `TokenDropout`): a token seen n times in `corpus` is replaced while
        training with probability alpha / (alpha + n), so that a word only
        one example has (an object's name, an id) cannot simply be memorised
        and the model learns what an unknown word means. 0 turns it off. The
        counts come from `corpus` (with a given `vocabulary` too, whose
        tokens are then counted in it); without a corpus it is off.
      encoder: None (the LSTM branch), "hub:<handle-or-path>" of a pretrained
        text encoder (strings -> embedding, optionally a per-token sequence),
        or "keras_hub:<preset-or-folder>" of a KerasHub preset (its backbone
        and tokenizer; see `mmkeras.branches.kerashub.KerasHubEncoder`).
      preprocessor: "hub:<handle-or-path>" of the encoder's preprocessing model
        (BERT-style encoders that take token ids), or None.
      trainable: whether the pretrained encoder's weights train; default False.
        Only with `encoder`.
      encoder_options: other `HubEncoder` arguments (`signature`, `output_key`,
        `sequence_key`, `batched`), or for a KerasHub preset `sequence_length`.

    Returns:
      A `keras.Model` taking `(batch,)` strings named `feature.name` and returning
      `{"embedding": (batch, embed_dim), "sequence": (batch, sequence_length, embed_dim)}`
      (with an encoder: its number of steps, 1 when it gives only a pooled vector).

    Raises:
      ValueError: for a non-text feature, bad sizes or no vocabulary source.
      FileNotFoundError, ImportError, ConnectionError: for an encoder handle
        that cannot be loaded (see `mmkeras.branches.hub.resolve_handle`).

    Example:
      >>> branch = build_text_branch(spec.feature("caption"), vocabulary=["red", "ball"])
      >>> branch(tf.constant(["a red ball"]))["embedding"].shape
      TensorShape([1, 128])
    """
    if feature.modality != "text":
        raise ValueError(f"build_text_branch needs a text feature, got {feature.name!r} ({feature.modality}).")
    for value, name in ((embed_dim, "embed_dim"), (token_dim, "token_dim"), (lstm_units, "lstm_units")):
        check_positive(value, name)
    inputs = make_input(feature)
    if is_keras_hub_encoder(encoder) and preprocessor is None:
        hub_encoder = make_keras_hub_encoder(
            encoder, modality="text", trainable=trainable, encoder_options=encoder_options
        )
        return finish_hub_branch(feature, inputs, hub_encoder(inputs), embed_dim=embed_dim, dropout_rate=dropout_rate)
    if encoder is not None or preprocessor is not None or trainable is not None or encoder_options is not None:
        if not is_hub_encoder(encoder):
            raise ValueError(
                f"Text feature {feature.name!r}: `encoder` must be None, 'hub:<handle-or-path>' or "
                f"'keras_hub:<preset-or-folder>', got encoder={encoder!r}, preprocessor={preprocessor!r} "
                "(preprocessor only goes with a hub encoder: a KerasHub preset carries its tokenizer; trainable "
                "and encoder_options go with either)."
            )
        hub_encoder = make_hub_encoder(
            encoder, preprocessor=preprocessor, trainable=trainable, encoder_options=encoder_options
        )
        return finish_hub_branch(feature, inputs, hub_encoder(inputs), embed_dim=embed_dim, dropout_rate=dropout_rate)
    if tokens not in TOKENS:
        raise ValueError(f"Text feature {feature.name!r}: `tokens` must be one of {list(TOKENS)}, got {tokens!r}.")
    if not ngram_sizes or not all(isinstance(size, int) and size > 0 for size in ngram_sizes):
        raise ValueError(f"Text feature {feature.name!r}: `ngram_sizes` must be positive integers, got {ngram_sizes!r}.")
    if corpus is not None:
        corpus = list(corpus)
    if tokens == "auto":
        tokens = "char_ngrams" if vocabulary is None and corpus is not None and prefers_char_ngrams(corpus) else "words"
    vectorizer = make_vectorizer(feature, vocabulary=vocabulary, corpus=corpus, tokens=tokens, ngram_sizes=ngram_sizes)
    token_ids = vectorizer(inputs)
    mask = ops.not_equal(token_ids, 0)
    if rare_token_dropout and corpus is not None:
        counts = token_counts(vectorizer, corpus, int(feature.options["vocab_size"]))
        token_ids = TokenDropout(token_dropout, rare=rare_token_dropout, counts=counts, name="token_dropout")(token_ids)
    elif token_dropout:
        token_ids = TokenDropout(token_dropout, name="token_dropout")(token_ids)
    embedded = layers.Embedding(int(feature.options["vocab_size"]), token_dim, mask_zero=True,
                                name="token_embedding")(token_ids)
    sequence = layers.SpatialDropout1D(dropout_rate)(embedded)
    if tokens == "words":
        recurrent = layers.LSTM(lstm_units, return_sequences=True)
        if bidirectional:
            recurrent = layers.Bidirectional(recurrent)
        sequence = TrimPadding(recurrent, name="recurrent")(sequence)
    return finish_branch(feature, inputs, sequence, embed_dim=embed_dim, dropout_rate=dropout_rate, mask=mask)
