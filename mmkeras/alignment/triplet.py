"""Cross-modal triplet loss with a margin and semi-hard negatives mined within the batch."""
from __future__ import annotations

import keras
import tensorflow as tf

from mmkeras.alignment.common import AlignmentLoss, check_positives, gather_candidates, positive_mask, read_pair_inputs
from mmkeras.checks import check_number


@keras.saving.register_keras_serializable(package="mmkeras")
class TripletLoss(AlignmentLoss):
    """Margin loss on squared distances, with semi-hard negatives from the batch, in both directions.

    The anchor is an example's embedding in modality a, its positive the same
    example's embedding in modality b, and its negative another example's
    modality-b embedding chosen within the (global) batch as in FaceNet
    (Schroff et al., 2015): the closest negative that is still farther than the
    positive (semi-hard); if no negative is farther, the farthest one. Then

        loss_i = max(d(a_i, b_i) - d(a_i, b_n) + margin, 0),   d = squared Euclidean distance

    averaged with the same loss for modality-b anchors against modality-a
    candidates. Semi-hard mining avoids the collapse that the hardest negatives
    cause early in training. On L2-normalised embeddings `d = 2 - 2 cos`, so a
    margin of 0.2 asks for a cosine gap of 0.1.

    With `positives="labels"` candidates of the anchor's class are never used
    as negatives (for data paired by class). Rows with a missing modality
    (`valid` False) are neither anchors (loss 0) nor candidates; an anchor
    without any negative gets loss 0. Under `MirroredStrategy` candidates are
    gathered from every replica, as for `ContrastiveLoss`.

    Args:
      margin: the margin, >= 0.
      positives: "pairs" or "labels".
      gather_across_replicas: mine negatives in the global batch.
      reduction: Keras loss reduction.
      name: the loss's name.
      dtype: the loss's dtype (computation is float32 regardless).

    Call arguments:
      y_true: None for `positives="pairs"`; (batch,) class ids for "labels".
      y_pred: a (batch, 2, dim) stack of embeddings, or the dict form
        `{"embeddings": stack, "valid": (batch,) bool}` (a "log_temperature"
        entry is accepted and ignored).
      sample_weight: optional (batch,) weights of the per-example losses.

    Returns:
      The reduced loss (a scalar with the default reduction).

    Raises:
      ValueError: for a negative margin, unknown `positives`, a badly shaped
        `y_pred` or missing labels.

    Example:
      >>> pair = np.stack([np.eye(2), np.eye(2)], axis=1).astype("float32")   # d_ap = 0, d_an = 2
      >>> float(TripletLoss(margin=0.2)(None, pair))
      0.0
    """

    def __init__(
        self,
        margin: float = 0.2,
        positives: str = "pairs",
        gather_across_replicas: bool = True,
        reduction: str | None = "sum_over_batch_size",
        name: str = "triplet_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = check_number(margin, "margin", inclusive=True)
        self.positives = check_positives(positives)
        self.gather_across_replicas = bool(gather_across_replicas)

    def call(self, y_true, y_pred):
        inputs = read_pair_inputs(y_true, y_pred, self.positives, type(self).__name__)
        candidates = gather_candidates(inputs, self.gather_across_replicas)
        # Negatives: valid candidates that are not the partner (nor, with labels, of the same class).
        negatives = tf.logical_and(tf.logical_not(positive_mask(inputs, candidates)), candidates.valid[None, :])
        a_to_b = self._direction(inputs.a, inputs.b, candidates.b, negatives)
        b_to_a = self._direction(inputs.b, inputs.a, candidates.a, negatives)
        return tf.where(inputs.valid, 0.5 * (a_to_b + b_to_a), tf.zeros_like(a_to_b))

    def _direction(self, anchors, positives, candidates, negatives):
        positive_distance = tf.reduce_sum(tf.square(anchors - positives), axis=1)
        distances = _squared_distances(anchors, candidates)
        farther = tf.logical_and(negatives, distances > positive_distance[:, None])
        inf = tf.fill(tf.shape(distances), float("inf"))
        closest_farther = tf.reduce_min(tf.where(farther, distances, inf), axis=1)
        farthest = tf.reduce_max(tf.where(negatives, distances, -inf), axis=1)
        negative_distance = tf.where(tf.reduce_any(farther, axis=1), closest_farther, farthest)
        losses = tf.maximum(positive_distance - negative_distance + self.margin, 0.0)
        return tf.where(tf.reduce_any(negatives, axis=1), losses, tf.zeros_like(losses))

    def get_config(self):
        return {
            **super().get_config(),
            "margin": self.margin,
            "positives": self.positives,
            "gather_across_replicas": self.gather_across_replicas,
        }


def _squared_distances(anchors: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
    """(n, m) squared Euclidean distances, clipped at 0 against rounding."""
    squared = (
        tf.reduce_sum(tf.square(anchors), axis=1, keepdims=True)
        - 2.0 * tf.matmul(anchors, candidates, transpose_b=True)
        + tf.reduce_sum(tf.square(candidates), axis=1)[None, :]
    )
    return tf.maximum(squared, 0.0)
