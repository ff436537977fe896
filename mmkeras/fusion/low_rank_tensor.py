"""Low-rank multimodal fusion (LMF), after Liu et al. (2018)."""
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


@keras.saving.register_keras_serializable(package="mmkeras")
class LowRankTensorFusion(layers.Layer):
    """Tensor fusion with the weight tensor factorised into `rank` per-modality factors.

    Low-rank Multimodal Fusion (Liu et al., 2018, "Efficient Low-rank
    Multimodal Fusion with Modality-Specific Factors"): instead of building
    the outer product of `[x_m; 1]` and mixing it, each modality m has
    factors of shape (rank, d_m + 1, units), and the output is
    `sum_r prod_m ([x_m; 1] @ factor_m[r]) + bias`. It models the same
    multiplicative interactions as `TensorFusion` at a cost that grows
    linearly with the number of modalities. An absent modality's embedding is
    zeroed, so only its factor's constant row (the appended 1) remains.

    Args:
      units: width of the fused output.
      rank: number of rank-one terms summed.
      dropout_rate: dropout on each embedding during training.
      activation: activation applied to the fused output (None: linear, as
        in the paper).

    Call arguments:
      embeddings: list of M (batch, d_i) tensors, one per modality.
      presence: optional (batch, M) tensor, 1.0 where a modality is present
        and 0.0 where it is absent. None means all present.
      sequences: unused; accepted for the common fusion contract.
      training: whether dropout is active.

    Returns:
      A (batch, units) tensor.

    Raises:
      ValueError: if an argument is out of range, or (at build time) the
        embeddings are not a list of (batch, d) tensors.

    Example:
      >>> LowRankTensorFusion(units=16, rank=2)([np.ones((2, 8)), np.ones((2, 4))]).shape
      (2, 16)
    """

    def __init__(
        self,
        units: int = 256,
        rank: int = 4,
        dropout_rate: float = 0.3,
        activation: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check_units(units)
        self.rank = check_units(rank, "rank")
        self.dropout_rate = check_rate(dropout_rate)
        self.activation = check_activation(activation)
        self.activation_fn = keras.activations.get(activation)
        self.dropout = layers.Dropout(self.dropout_rate)

    def build(self, embeddings_shape, presence_shape=None, sequences_shape=None):
        shapes = check_embedding_shapes(type(self).__name__, embeddings_shape, presence_shape)
        self.num_modalities = len(shapes)
        self.factors = [
            self.add_weight(
                shape=(self.rank, int(shape[-1]) + 1, self.units),
                initializer="glorot_normal",
                name=f"factor_{m}",
            )
            for m, shape in enumerate(shapes)
        ]
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, embeddings, presence=None, sequences=None, training=None):
        embeddings = embedding_list(self, embeddings)
        presence = presence_or_ones(embeddings, presence)
        product = None
        for m, (factor, x) in enumerate(zip(self.factors, embeddings)):
            x = self.dropout(x, training=training) * present_column(presence, m)
            x = ops.concatenate([x, ops.ones_like(x[:, :1])], axis=-1)
            term = ops.einsum("bd,rdu->bru", x, ops.cast(factor, x.dtype))
            product = term if product is None else product * term
        fused = ops.sum(product, axis=1) + ops.cast(self.bias, product.dtype)
        return self.activation_fn(fused)

    def compute_output_shape(self, embeddings_shape, presence_shape=None, sequences_shape=None):
        return (embeddings_shape[0][0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, rank=self.rank, dropout_rate=self.dropout_rate, activation=self.activation)
        return config
