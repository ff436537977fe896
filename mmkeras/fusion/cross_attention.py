"""Cross-modal attention fusion over per-step outputs, in the style of MulT."""
from __future__ import annotations

import keras
from keras import layers, ops

from mmkeras.fusion.common import (
    check_activation,
    check_embedding_shapes,
    check_rate,
    check_units,
    embedding_list,
    presence_or_ones,
    present_column,
)


def _check_sequence_shapes(sequences_shape, count: int) -> list:
    """Validate the shapes of `sequences`: M tensors of shape (batch, steps, d)."""
    if sequences_shape is None:
        raise ValueError(
            "CrossAttentionFusion needs the branches' per-step outputs: call it as "
            "`fusion(embeddings, presence=presence, sequences=sequences)` with one (batch, steps, d) "
            "tensor per modality, or pick a fusion that works on embeddings only (e.g. 'attention')."
        )
    if not isinstance(sequences_shape, (list, tuple)) or len(sequences_shape) != count:
        raise ValueError(
            f"CrossAttentionFusion expects `sequences` to be a list of {count} tensors (one per embedding), "
            f"got shapes {sequences_shape!r}."
        )
    shapes = [tuple(shape) if isinstance(shape, (list, tuple)) else shape for shape in sequences_shape]
    for index, shape in enumerate(shapes):
        if not isinstance(shape, tuple) or len(shape) != 3 or shape[-1] is None:
            raise ValueError(
                f"CrossAttentionFusion: sequence {index} must have shape (batch, steps, d) with a known d, "
                f"got {shape}. Reshape image feature maps to (batch, height * width, channels)."
            )
    return shapes


@keras.saving.register_keras_serializable(package="mmkeras")
class CrossAttentionFusion(layers.Layer):
    """Lets each modality's steps attend to the other modalities' steps, then pools and mixes.

    In the style of the Multimodal Transformer (MulT; Tsai et al., 2019):
    every modality's sequence is projected to `units`; for each modality m, a
    multi-head attention takes its queries from m's steps and its keys and
    values from the steps of all the *other* modalities (a single modality
    attends to itself), followed by a residual connection and layer
    normalisation, and a mean over time. The pooled outputs of all
    modalities, next to the embeddings, are concatenated and mixed by a
    dense layer. Steps of absent modalities are masked out of the keys; when
    no other modality is present the attention is skipped (no NaN); and an
    absent modality's own pooled output and embedding are zeroed, so absent
    modalities contribute nothing. With `mask_padding`, a sequence's padded
    steps (its Keras mask: a text branch's padding tokens) are masked out of
    the keys and of its own mean too, so a short text is not read as mostly
    padding. Use it when the branches keep per-step
    outputs (tokens, image regions, audio frames) and alignment between
    modalities matters.

    Args:
      units: width of the projections, the attention and the fused output.
      num_heads: number of attention heads (each of size `units // num_heads`,
        at least 1).
      dropout_rate: dropout on the attention weights and on the concatenated
        features during training.
      activation: activation of the mixing layer.
      mask_padding: leave the steps a sequence's Keras mask marks as padding
        out of the keys and the means (default True). Configurations saved
        before the option existed load with False, as they were trained.

    Call arguments:
      embeddings: list of M (batch, d_i) tensors, one per modality.
      presence: optional (batch, M) tensor, 1.0 where a modality is present
        and 0.0 where it is absent. None means all present.
      sequences: list of M (batch, t_i, s_i) tensors of per-step outputs, in
        the same order as `embeddings`, each optionally with a Keras mask
        (`_keras_mask`, (batch, t_i)) of its valid steps. Required.
      training: whether dropout is active.

    Returns:
      A (batch, units) tensor.

    Raises:
      ValueError: if an argument is out of range, or (at build time)
        `sequences` is missing or does not match the embeddings.

    Example:
      >>> fusion = CrossAttentionFusion(units=16, num_heads=2)
      >>> fusion([np.ones((2, 8)), np.ones((2, 4))],
      ...        sequences=[np.ones((2, 5, 8)), np.ones((2, 3, 4))]).shape
      (2, 16)
    """

    def __init__(
        self,
        units: int = 256,
        num_heads: int = 4,
        dropout_rate: float = 0.3,
        activation: str | None = "relu",
        mask_padding: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check_units(units)
        self.num_heads = check_units(num_heads, "num_heads")
        self.dropout_rate = check_rate(dropout_rate)
        self.activation = check_activation(activation)
        self.mask_padding = bool(mask_padding)
        self.dropout = layers.Dropout(self.dropout_rate)
        self.dense = layers.Dense(self.units, activation=activation, name="mix")

    def build(self, embeddings_shape, presence_shape=None, sequences_shape=None):
        shapes = check_embedding_shapes(type(self).__name__, embeddings_shape, presence_shape)
        self.num_modalities = count = len(shapes)
        sequence_shapes = _check_sequence_shapes(sequences_shape, count)
        key_dim = max(self.units // self.num_heads, 1)
        self.projections = [layers.Dense(self.units, name=f"projection_{m}") for m in range(count)]
        self.attentions = [
            layers.MultiHeadAttention(self.num_heads, key_dim, dropout=self.dropout_rate, name=f"attention_{m}")
            for m in range(count)
        ]
        self.norms = [layers.LayerNormalization(name=f"norm_{m}") for m in range(count)]
        for m, shape in enumerate(sequence_shapes):
            self.projections[m].build(shape)
            self.attentions[m].build((None, shape[1], self.units), (None, None, self.units))
            self.norms[m].build((None, shape[1], self.units))
        self.dense.build((None, count * self.units + sum(int(shape[-1]) for shape in shapes)))

    def call(self, embeddings, presence=None, sequences=None, training=None):
        embeddings = embedding_list(self, embeddings)
        if sequences is None:
            _check_sequence_shapes(None, len(embeddings))
        presence = presence_or_ones(embeddings, presence)
        valid = [self._valid_steps(x) for x in sequences]
        projected = [projection(x) for projection, x in zip(self.projections, sequences, strict=True)]
        # (batch, steps) masks: 1.0 on every valid step of a present modality.
        step_masks = [
            ops.cast(valid[m], x.dtype) * ops.cast(present_column(presence, m), x.dtype)
            for m, x in enumerate(projected)
        ]
        pooled = []
        for m, query in enumerate(projected):
            others = [k for k in range(len(projected)) if k != m] or [m]
            context = ops.concatenate([projected[k] for k in others], axis=1)
            key_mask = ops.concatenate([step_masks[k] for k in others], axis=1)
            attention_mask = ops.expand_dims(ops.ones_like(query[..., 0]), -1) * ops.expand_dims(key_mask, 1)
            attended = self.attentions[m](
                query, context, attention_mask=attention_mask > 0, training=training
            )
            # With every key masked the attention is uniform over absent steps:
            # finite, but meaningless, so it is dropped for that example.
            has_context = ops.expand_dims(ops.max(key_mask, axis=1, keepdims=True), -1)
            steps = self.norms[m](query + attended * has_context)
            weights = ops.expand_dims(ops.cast(valid[m], steps.dtype), -1)
            mean = ops.sum(steps * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)
            pooled.append(mean * ops.cast(present_column(presence, m), steps.dtype))
        masked = [x * present_column(presence, m) for m, x in enumerate(embeddings)]
        joined = ops.concatenate(pooled + masked, axis=-1)
        return self.dense(self.dropout(joined, training=training))

    def compute_output_shape(self, embeddings_shape, presence_shape=None, sequences_shape=None):
        return (embeddings_shape[0][0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units, num_heads=self.num_heads, dropout_rate=self.dropout_rate, activation=self.activation,
            mask_padding=self.mask_padding,
        )
        return config

    @classmethod
    def from_config(cls, config):
        # Saved before `mask_padding` existed: trained with every step in the keys and means.
        return cls(**{"mask_padding": False, **config})

    def _valid_steps(self, sequence):
        """(batch, steps) booleans: the sequence's Keras mask with `mask_padding`, else every step."""
        mask = getattr(sequence, "_keras_mask", None) if self.mask_padding else None
        if mask is None:
            return ops.ones_like(sequence[..., 0], dtype="bool")
        return ops.cast(mask, "bool")
