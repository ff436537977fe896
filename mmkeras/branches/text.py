"""Text branch: raw strings -> TextVectorization -> Embedding -> (Bi)LSTM, or a pretrained encoder."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import keras
from keras import layers, ops

from mmkeras.branches.common import check_positive, finish_branch, make_input
from mmkeras.branches.hub import finish_hub_branch, is_hub_encoder, make_hub_encoder
from mmkeras.branches.kerashub import is_keras_hub_encoder, make_keras_hub_encoder
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
    encoder: str | None = None,
    preprocessor: str | None = None,
    trainable: bool | None = None,
    encoder_options: Mapping[str, Any] | None = None,
) -> keras.Model:
    """Build the text branch: strings in, an embedding and a token sequence out.

    Padding tokens are masked all the way through the LSTM and the pooling, so
    a short caption is not diluted by its padding, and an empty one pools to zeros.
    With `encoder="hub:<handle-or-path>"` a pretrained sentence or BERT-style
    encoder (see `mmkeras.branches.hub.HubEncoder`) replaces the vectorizer and
    LSTM; it takes the raw strings itself, so no vocabulary is needed.

    Args:
      feature: a text feature of the spec.
      vocabulary: the token list (see `make_vectorizer`).
      corpus: training texts to learn the vocabulary from.
      embed_dim: width of the branch outputs.
      token_dim: width of the token embeddings.
      lstm_units: LSTM units (per direction).
      bidirectional: read the text both ways.
      dropout_rate: dropout on token embeddings and on the pooled features.
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
    token_ids = make_vectorizer(feature, vocabulary=vocabulary, corpus=corpus)(inputs)
    mask = ops.not_equal(token_ids, 0)
    tokens = layers.Embedding(int(feature.options["vocab_size"]), token_dim, mask_zero=True, name="token_embedding")(token_ids)
    tokens = layers.SpatialDropout1D(dropout_rate)(tokens)
    recurrent = layers.LSTM(lstm_units, return_sequences=True)
    if bidirectional:
        recurrent = layers.Bidirectional(recurrent)
    sequence = recurrent(tokens)
    return finish_branch(feature, inputs, sequence, embed_dim=embed_dim, dropout_rate=dropout_rate, mask=mask)
