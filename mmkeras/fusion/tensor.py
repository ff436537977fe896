"""Tensor fusion (TFN), after Zadeh et al. (2017)."""
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

# Above this many outer-product features the mixing layer alone would hold
# hundreds of millions of weights.
MAX_TENSOR_FEATURES = 1_000_000


@keras.saving.register_keras_serializable(package="mmkeras")
class TensorFusion(layers.Layer):
    """Mixes the outer product of all modalities, so every cross-modal interaction is a feature.

    Tensor Fusion Network (Zadeh et al., 2017, "Tensor Fusion Network for
    Multimodal Sentiment Analysis"): each embedding is first projected down to
    `rank_dim` features (`tanh`, to keep the size tractable and the products
    bounded), a 1 is appended (`[z_m; 1]`), and the outer product across all
    M modalities, `(rank_dim + 1) ** M` features, is flattened and mixed by a
    dense layer. The appended 1 keeps the unimodal and bimodal terms. An
    absent modality's projection is zeroed, which leaves exactly the
    interaction terms of the present modalities. Use it when the label
    depends on products of modalities, with few modalities (the size grows
    exponentially with M; see `LowRankTensorFusion` for a cheaper variant).

    Args:
      units: width of the fused output.
      rank_dim: size each embedding is projected to before the outer product.
      dropout_rate: dropout on the flattened outer product during training.
      activation: activation of the mixing layer.

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
        embeddings are not a list of (batch, d) tensors or
        `(rank_dim + 1) ** M` exceeds `MAX_TENSOR_FEATURES`.

    Example:
      >>> TensorFusion(units=16, rank_dim=4)([np.ones((2, 8)), np.ones((2, 4))]).shape
      (2, 16)
    """

    def __init__(
        self,
        units: int = 256,
        rank_dim: int = 16,
        dropout_rate: float = 0.3,
        activation: str | None = "relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check_units(units)
        self.rank_dim = check_units(rank_dim, "rank_dim")
        self.dropout_rate = check_rate(dropout_rate)
        self.activation = check_activation(activation)
        self.dropout = layers.Dropout(self.dropout_rate)
        self.dense = layers.Dense(self.units, activation=activation, name="mix")

    def build(self, embeddings_shape, presence_shape=None, sequences_shape=None):
        shapes = check_embedding_shapes(type(self).__name__, embeddings_shape, presence_shape)
        self.num_modalities = count = len(shapes)
        features = (self.rank_dim + 1) ** count
        if features > MAX_TENSOR_FEATURES:
            largest = max(round(MAX_TENSOR_FEATURES ** (1.0 / count)) - 1, 1)
            while (largest + 1) ** count > MAX_TENSOR_FEATURES:
                largest -= 1
            raise ValueError(
                f"TensorFusion over {count} modalities with rank_dim={self.rank_dim} makes "
                f"(rank_dim + 1) ** {count} = {features:,} features, more than {MAX_TENSOR_FEATURES:,}. "
                f"Use rank_dim <= {largest}, or fusion='low_rank_tensor' (LowRankTensorFusion), "
                "which grows linearly with the number of modalities."
            )
        self.projections = [
            layers.Dense(self.rank_dim, activation="tanh", name=f"projection_{m}") for m in range(count)
        ]
        for projection, shape in zip(self.projections, shapes):
            projection.build(shape)
        self.dense.build((None, features))

    def call(self, embeddings, presence=None, sequences=None, training=None):
        embeddings = embedding_list(self, embeddings)
        presence = presence_or_ones(embeddings, presence)
        product = None
        for m, (projection, x) in enumerate(zip(self.projections, embeddings)):
            z = projection(x) * present_column(presence, m)
            z = ops.concatenate([z, ops.ones_like(z[:, :1])], axis=-1)
            if product is None:
                product = z
            else:
                outer = ops.expand_dims(product, -1) * ops.expand_dims(z, 1)
                product = ops.reshape(outer, (-1, outer.shape[1] * outer.shape[2]))
        return self.dense(self.dropout(product, training=training))

    def compute_output_shape(self, embeddings_shape, presence_shape=None, sequences_shape=None):
        return (embeddings_shape[0][0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units, rank_dim=self.rank_dim, dropout_rate=self.dropout_rate, activation=self.activation
        )
        return config
