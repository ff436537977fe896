"""Audio branch: waveforms -> log-mel frames -> Conv1D stages with pooling -> LSTM."""
from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from mmkeras.branches.common import check_positive, finish_branch, make_input
from mmkeras.branches.log_mel import LogMelSpectrogram
from mmkeras.spec import FeatureSpec

ENCODERS = ("lstm", "conv1d")
DEFAULT_CONV_STAGES = (64, 128)


def build_audio_branch(
    feature: FeatureSpec,
    *,
    encoder: str = "lstm",
    conv_stages: Sequence[int] = DEFAULT_CONV_STAGES,
    lstm_units: int = 64,
    bidirectional: bool = True,
    normalization: str = "utterance",
    embed_dim: int = 128,
    dropout_rate: float = 0.3,
) -> keras.Model:
    """Build the audio branch: a waveform in, an embedding and a frame sequence out.

    Log-mel features are computed in the model (`LogMelSpectrogram`), each clip
    normalised per mel bin. Conv1D stages with max pooling between them
    shorten the sequence fourfold before the recurrent layer, which makes the
    LSTM both faster and better on short, noisy clips.

    Args:
      feature: an audio feature of the spec (uses sample_rate, clip_seconds,
        num_mel_bins, frame_ms, hop_ms).
      encoder: "lstm" (conv stages then an LSTM over frames) or "conv1d" (conv stages only).
      conv_stages: filters of each Conv1D stage (kernel 5, batch norm, ReLU, pool 2).
      lstm_units: LSTM units per direction (encoder "lstm").
      bidirectional: read the frames both ways.
      normalization: log-mel normalisation, "utterance" or "none".
      embed_dim: width of the branch outputs.
      dropout_rate: dropout after stages and on the pooled features.

    Returns:
      A `keras.Model` taking `(batch, samples)` float32 waveforms named
      `feature.name` and returning `{"embedding": (batch, embed_dim),
      "sequence": (batch, frames, embed_dim)}`.

    Raises:
      ValueError: for a non-audio feature, an unknown encoder or bad sizes.

    Example:
      >>> build_audio_branch(spec.feature("sound")).output["sequence"].shape
      (None, 7, 128)
    """
    if feature.modality != "audio":
        raise ValueError(f"build_audio_branch needs an audio feature, got {feature.name!r} ({feature.modality}).")
    if encoder not in ENCODERS:
        raise ValueError(f"Unknown audio encoder {encoder!r}. Expected one of {list(ENCODERS)}.")
    check_positive(embed_dim, "embed_dim")
    check_positive(lstm_units, "lstm_units")
    inputs = make_input(feature)
    options = feature.options
    x = LogMelSpectrogram(
        sample_rate=int(options["sample_rate"]),
        frame_ms=float(options["frame_ms"]),
        hop_ms=float(options["hop_ms"]),
        num_mel_bins=int(options["num_mel_bins"]),
        normalization=normalization,
        name="log_mel",
    )(inputs)
    for filters in conv_stages:
        check_positive(filters, "conv_stages[i]")
        x = layers.Conv1D(filters, 5, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        if x.shape[1] is None or x.shape[1] >= 4:
            x = layers.MaxPooling1D(2)(x)
        x = layers.Dropout(dropout_rate / 2)(x)
    if encoder == "lstm":
        recurrent = layers.LSTM(lstm_units, return_sequences=True)
        x = layers.Bidirectional(recurrent)(x) if bidirectional else recurrent(x)
    return finish_branch(feature, inputs, x, embed_dim=embed_dim, dropout_rate=dropout_rate)
