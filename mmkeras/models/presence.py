"""Per-example modality presence: flags in, dropout in training, learned stand-ins out.

Real multimodal data has holes (a row without a recording), and a model that
always saw every modality breaks when one is missing. These three layers make
presence explicit: `PresenceFlags` stacks the optional `<name>_present` inputs
into a (batch, M) matrix, `ModalityDropout` hides modalities at random while
training, and `MissingModalityEmbedding` swaps an absent modality's embedding
for a learned one.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
from keras import layers, ops

from mmkeras.checks import check_rate


@keras.saving.register_keras_serializable(package="mmkeras")
class PresenceFlags(layers.Layer):
    """Stacks optional per-modality boolean flags into a (batch, M) float matrix.

    A flag that is None (the caller gave no `<name>_present`) means present.

    Call arguments:
      embeddings: list of M (batch, d_i) tensors (for batch size and dtype).
      flags: list of M (batch,) boolean tensors or None.

    Returns:
      A (batch, M) tensor of 1.0 (present) and 0.0 (absent).

    Example:
      >>> PresenceFlags()([np.ones((2, 3))] * 2, [None, np.array([True, False])]).numpy()
      array([[1., 1.], [1., 0.]], dtype=float32)
    """

    def call(self, embeddings, flags):
        ones = ops.ones_like(embeddings[0][:, 0])
        columns = [ones if flag is None else ops.cast(ops.reshape(flag, (-1,)), ones.dtype) for flag in flags]
        return ops.stack(columns, axis=1)

    def compute_output_shape(self, embeddings_shape, flags_shape):
        return (embeddings_shape[0][0], len(embeddings_shape))


@keras.saving.register_keras_serializable(package="mmkeras")
class ModalityDropout(layers.Layer):
    """Marks each present modality absent with probability `rate`, while training.

    Training with modalities hidden at random teaches the model to use every
    modality and to cope when one is missing at test time. At least one
    modality of each example always stays: if every present one would be
    dropped, the example keeps its original flags. A mapping gives each
    modality its own rate, so that a branch that memorises its training
    examples (tuxpaint's text names the objects) can be hidden more often
    than the others.

    Args:
      rate: probability of dropping each modality of each example: one number
        for every modality, or a mapping `{name: rate}` with one rate per
        entry of `names`.
      names: the flags' column names, in order (the classifier uses feature
        names); needed with a mapping `rate`, which must name each exactly once.
      seed: optional seed for the random draws.

    Call arguments:
      presence: (batch, M) float tensor of flags.
      training: dropout happens only when True.

    Returns:
      The (batch, M) flags with some present modalities set to 0.

    Raises:
      ValueError: for a rate outside [0, 1), a mapping without `names`, or a
        mapping that names a column not in `names` or leaves one out (the
        message names it and the valid names).

    Example:
      >>> ModalityDropout(0.5)(np.ones((4, 3)), training=True).shape
      (4, 3)
      >>> ModalityDropout({"image": 0.3, "text": 0.6}, names=["image", "text"])(np.ones((4, 2)), training=True).shape
      (4, 2)
    """

    def __init__(
        self,
        rate: float | Mapping[str, float] = 0.1,
        names: Sequence[str] | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.names = None if names is None else [str(name) for name in names]
        if isinstance(rate, Mapping):
            self.rate = _check_rates(rate, self.names)
            self.rates = [self.rate[name] for name in self.names]
        else:
            self.rate = check_rate(rate, "rate")
            self.rates = None
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, presence_shape):
        if self.rates is not None and presence_shape[-1] is not None and presence_shape[-1] != len(self.rates):
            raise ValueError(
                f"ModalityDropout has rates for {len(self.rates)} modalities {self.names}, "
                f"but its presence flags have {presence_shape[-1]} columns."
            )

    def call(self, presence, training=None):
        if not training or max(self.rates or [self.rate]) == 0.0:
            return presence
        # A (M,) vector of rates broadcasts over the batch: column i is dropped with rates[i].
        threshold = self.rate if self.rates is None else ops.convert_to_tensor(self.rates, dtype="float32")
        keep = keras.random.uniform(ops.shape(presence), seed=self.seed_generator) >= threshold
        dropped = presence * ops.cast(keep, presence.dtype)
        survivors = ops.sum(dropped, axis=1, keepdims=True)
        return ops.where(survivors > 0, dropped, presence)

    def compute_output_shape(self, presence_shape):
        return presence_shape

    def get_config(self):
        rate = dict(self.rate) if self.rates is not None else self.rate
        return {**super().get_config(), "rate": rate, "names": self.names, "seed": self.seed}


def _check_rates(rates: Mapping[str, float], names: Sequence[str] | None) -> dict[str, float]:
    """`rates` as `{name: float}` if it gives a rate in [0, 1) to each of `names` and to nothing else."""
    if names is None:
        raise ValueError(
            f"ModalityDropout got a rate per modality ({dict(rates)!r}) but no `names`: pass the presence "
            "flags' column names in order, e.g. names=['image', 'text']."
        )
    unknown = [key for key in rates if key not in names]
    if unknown:
        raise ValueError(
            f"ModalityDropout's `rate` names {unknown[0]!r}, which is not one of its modalities; "
            f"expected names from {sorted(names)}."
        )
    missing = [name for name in names if name not in rates]
    if missing:
        raise ValueError(
            f"ModalityDropout's `rate` gives no rate for {missing}; give one for each of {sorted(names)}."
        )
    return {name: check_rate(rates[name], f"rate[{name!r}]") for name in names}


@keras.saving.register_keras_serializable(package="mmkeras")
class MissingModalityEmbedding(layers.Layer):
    """Replaces the embedding of each absent modality with a learned vector.

    The zeros a decoder gives for a missing file are not a meaningful input;
    a learned "missing" vector per modality is, and it lets fusion layers that
    do not weight modalities (concatenation, tensor fusion) still know what is absent.

    Call arguments:
      embeddings: list of M (batch, d_i) tensors.
      presence: (batch, M) flags, 1.0 present and 0.0 absent.

    Returns:
      The list of M embeddings, absent ones replaced.

    Example:
      >>> layer = MissingModalityEmbedding()
      >>> [e.shape for e in layer([np.ones((2, 4)), np.ones((2, 3))], np.array([[1., 0.], [1., 1.]]))]
      [(2, 4), (2, 3)]
    """

    def build(self, embeddings_shape, presence_shape=None):
        self.missing = [
            self.add_weight(name=f"missing_{i}", shape=(int(shape[-1]),), initializer="zeros")
            for i, shape in enumerate(embeddings_shape)
        ]

    def call(self, embeddings, presence):
        replaced = []
        for i, embedding in enumerate(embeddings):
            present = ops.expand_dims(presence[:, i], -1) > 0
            stand_in = ops.broadcast_to(ops.cast(self.missing[i], embedding.dtype), ops.shape(embedding))
            replaced.append(ops.where(present, embedding, stand_in))
        return replaced

    def compute_output_shape(self, embeddings_shape, presence_shape=None):
        return list(embeddings_shape)
