"""Gated multimodal unit (GMU) fusion, after Arevalo et al. (2017)."""
from __future__ import annotations

import keras
from keras import layers, ops

from mmkeras.fusion.common import (
    check_embedding_shapes,
    check_rate,
    check_units,
    embedding_list,
    presence_or_ones,
    present_column,
)


@keras.saving.register_keras_serializable(package="mmkeras")
class GatedFusion(layers.Layer):
    """Sums `tanh` projections of the modalities, each scaled by a learned gate.

    A gated multimodal unit (Arevalo et al., 2017, "Gated Multimodal Units for
    Information Fusion") generalised to M modalities: each modality m gets a
    projection `h_m = tanh(W_m x_m)` and a feature-wise gate
    `z_m = sigmoid(V_m [x_1 p_1; ...; x_M p_M; p])` computed from all the
    present embeddings and the presence flags, and the output is
    `sum_m p_m z_m h_m`. An absent modality's gate is zeroed and its embedding
    is hidden from the other gates, so it contributes nothing. Use it when one
    modality should be able to switch another's features on or off.

    Args:
      units: width of the projections and of the fused output.
      dropout_rate: dropout on the fused output during training.

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
      >>> GatedFusion(units=16)([np.ones((2, 8)), np.ones((2, 4))]).shape
      (2, 16)
    """

    def __init__(self, units: int = 256, dropout_rate: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        self.units = check_units(units)
        self.dropout_rate = check_rate(dropout_rate)
        self.dropout = layers.Dropout(self.dropout_rate)

    def build(self, embeddings_shape, presence_shape=None, sequences_shape=None):
        shapes = check_embedding_shapes(type(self).__name__, embeddings_shape, presence_shape)
        self.num_modalities = count = len(shapes)
        gate_width = sum(int(shape[-1]) for shape in shapes) + count
        self.projections = [
            layers.Dense(self.units, activation="tanh", name=f"projection_{m}") for m in range(count)
        ]
        self.gates = [layers.Dense(self.units, activation="sigmoid", name=f"gate_{m}") for m in range(count)]
        for projection, gate, shape in zip(self.projections, self.gates, shapes):
            projection.build(shape)
            gate.build((None, gate_width))

    def call(self, embeddings, presence=None, sequences=None, training=None):
        embeddings = embedding_list(self, embeddings)
        presence = presence_or_ones(embeddings, presence)
        # Absent embeddings are zeroed before the gates see them, so nothing
        # about an absent modality (not even its "missing" embedding) leaks in.
        masked = [x * present_column(presence, m) for m, x in enumerate(embeddings)]
        gate_input = ops.concatenate(masked + [presence], axis=-1)
        fused = 0.0
        for m, (projection, gate) in enumerate(zip(self.projections, self.gates)):
            fused = fused + gate(gate_input) * present_column(presence, m) * projection(embeddings[m])
        return self.dropout(fused, training=training)

    def compute_output_shape(self, embeddings_shape, presence_shape=None, sequences_shape=None):
        return (embeddings_shape[0][0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, dropout_rate=self.dropout_rate)
        return config
