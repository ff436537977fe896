"""Text branch: raw strings -> TextVectorization -> Embedding -> (Bi)LSTM."""
from __future__ import annotations

from typing import Iterable, Sequence

import keras
from keras import layers, ops

from mmkeras.branches.common import check_positive, finish_branch, make_input
from mmkeras.spec import FeatureSpec


def make_vectorizer(
    feature: FeatureSpec, *, vocabulary: Sequence[str] | None = None, corpus: Iterable[str] | None = None
) -> layers.TextVectorization:
    """Return the feature's TextVectorization layer with its vocabulary set.

    The vocabulary is learned from the training split (`corpus`) or given
    outright; it is saved inside the model, so serving sees the same tokens.

    Args:
      feature: a text feature (uses `vocab_size` and `sequence_length`).
      vocabulary: a token list to use as is (no padding or OOV tokens).
      corpus: training texts to adapt the vocabulary on, when no vocabulary is given.

    Returns:
      A `TextVectorization` layer named `<feature>_vectorizer`.

    Raises:
      ValueError: if neither `vocabulary` nor `corpus` is given.
    """
    vectorizer = layers.TextVectorization(
        max_tokens=int(feature.options["vocab_size"]),
        output_sequence_length=int(feature.options["sequence_length"]),
        vocabulary=list(vocabulary) if vocabulary is not None else None,
        name=f"{feature.name}_vectorizer",
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
) -> keras.Model:
    """Build the text branch: strings in, an embedding and a token sequence out.

    Padding tokens are masked all the way through the LSTM and the pooling, so
    a short caption is not diluted by its padding, and an empty one pools to zeros.

    Args:
      feature: a text feature of the spec.
      vocabulary: the token list (see `make_vectorizer`).
      corpus: training texts to learn the vocabulary from.
      embed_dim: width of the branch outputs.
      token_dim: width of the token embeddings.
      lstm_units: LSTM units (per direction).
      bidirectional: read the text both ways.
      dropout_rate: dropout on token embeddings and on the pooled features.

    Returns:
      A `keras.Model` taking `(batch,)` strings named `feature.name` and returning
      `{"embedding": (batch, embed_dim), "sequence": (batch, sequence_length, embed_dim)}`.

    Raises:
      ValueError: for a non-text feature, bad sizes or no vocabulary source.

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
    token_ids = make_vectorizer(feature, vocabulary=vocabulary, corpus=corpus)(inputs)
    mask = ops.not_equal(token_ids, 0)
    tokens = layers.Embedding(int(feature.options["vocab_size"]), token_dim, mask_zero=True, name="token_embedding")(token_ids)
    tokens = layers.SpatialDropout1D(dropout_rate)(tokens)
    recurrent = layers.LSTM(lstm_units, return_sequences=True)
    if bidirectional:
        recurrent = layers.Bidirectional(recurrent)
    sequence = recurrent(tokens)
    return finish_branch(feature, inputs, sequence, embed_dim=embed_dim, dropout_rate=dropout_rate, mask=mask)
