"""Symmetric contrastive loss (InfoNCE, as in CLIP), correct under MirroredStrategy."""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from mmkeras.alignment.common import (
    MASKED_LOGIT,
    AlignmentLoss,
    append_queue,
    check_positives,
    check_temperature,
    gather_candidates,
    positive_mask,
    read_pair_inputs,
)
from mmkeras.checks import is_number


@keras.saving.register_keras_serializable(package="mmkeras")
class ContrastiveLoss(AlignmentLoss):
    """Symmetric InfoNCE between two modalities' embeddings of the same examples.

    Each example's embedding in modality a must pick its partner in modality b
    out of the whole (global) batch, and the other way round (Radford et al.,
    2021, "CLIP"). For rows i of `a` and candidates j of `b`, with logits
    `s_ij = a_i . b_j / temperature`:

        loss_i = (CE(softmax_j s_ij, q_i) + CE(softmax_j s_ji^T, q_i)) / 2

    where `q_i` puts all its mass on the partner (`positives="pairs"`), or
    spreads it evenly over every candidate of the same class
    (`positives="labels"`, for data paired by class rather than by instance,
    such as AV-MNIST). With labels and `partner_share=s`, the partner gets
    the share s of the target and the class (partner included) the rest,
    evenly: for naturally paired data with labels (a picture and its own
    description), where the pair says more than the class and both should
    be retrievable. Since crossentropy is linear in its target, that loss is
    `s * pairs_loss + (1 - s) * labels_loss`. Rows where a modality is missing (`valid` False) are
    neither anchors (their loss is 0) nor candidates. A memory queue of
    earlier batches' embeddings (MoCo, He et al., 2020; kept by a
    `DualEncoder` with `queue_size`) adds candidates after the batch's: with
    pairs they are extra negatives, with labels the queued rows of the
    anchor's class are positives too. The queue is data, not a function of
    this step's weights, so no gradient flows into it.

    Under `tf.distribute.MirroredStrategy` the candidates are all-gathered from
    every replica inside the replica step, so each replica's per-example
    losses are exactly those of the global batch; with Keras' reduction (mean
    over the local batch divided by the number of replicas, then summed over
    replicas) the training loss equals the single-device loss of the global batch.

    Args:
      temperature: the softmax temperature used when `y_pred` carries no
        learned log-temperature (a `DualEncoder` passes its own).
      positives: "pairs" or "labels" (see above).
      partner_share: with `positives="labels"`, the partner's share of the
        target in [0, 1] (None or 0: spread evenly over the class; 1: the
        pairs loss).
      gather_across_replicas: gather candidates from every replica (leave on:
        without it each replica only sees its own slice of negatives).
      reduction: Keras loss reduction.
      name: the loss's name.
      dtype: the loss's dtype (computation is float32 regardless).

    Call arguments:
      y_true: None for `positives="pairs"`; (batch,) class ids for "labels".
      y_pred: a (batch, 2, dim) stack of L2-normalised embeddings (modality a,
        modality b), or a dict `{"embeddings": stack, "log_temperature": scalar,
        "valid": (batch,) bool, "queue": (queue_size, 2, dim), "queue_valid":
        (queue_size,) bool, "queue_labels": (queue_size,) int}` (all but the first optional).
      sample_weight: optional (batch,) weights of the per-example losses.

    Returns:
      The reduced loss (a scalar with the default reduction); per-example
      losses with `reduction=None`.

    Raises:
      ValueError: for a non-positive temperature, unknown `positives`, a
        `partner_share` outside [0, 1] or without labels, a badly shaped
        `y_pred` or missing labels.

    Example:
      >>> pair = np.stack([np.eye(2), np.eye(2)], axis=1).astype("float32")   # 2 perfectly aligned pairs
      >>> float(ContrastiveLoss(temperature=1.0)(None, pair))                 # log(1 + e^-1)
      0.3132...
    """

    def __init__(
        self,
        temperature: float = 0.07,
        positives: str = "pairs",
        gather_across_replicas: bool = True,
        reduction: str | None = "sum_over_batch_size",
        name: str = "contrastive_loss",
        dtype=None,
        partner_share: float | None = None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = check_temperature(temperature)
        self.positives = check_positives(positives)
        self.gather_across_replicas = bool(gather_across_replicas)
        self.partner_share = _check_partner_share(partner_share, self.positives)

    def call(self, y_true, y_pred):
        inputs = read_pair_inputs(y_true, y_pred, self.positives, type(self).__name__)
        candidates = append_queue(inputs, gather_candidates(inputs, self.gather_across_replicas))
        log_temperature = inputs.log_temperature
        if log_temperature is None:
            log_temperature = tf.constant(math.log(self.temperature), tf.float32)
        scale = tf.exp(-log_temperature)
        targets = tf.cast(positive_mask(inputs, candidates), tf.float32)
        targets = targets / tf.maximum(tf.reduce_sum(targets, axis=1, keepdims=True), 1.0)
        if self.partner_share:
            partner = tf.cast(positive_mask(inputs._replace(labels=None), candidates), tf.float32)
            targets = self.partner_share * partner + (1.0 - self.partner_share) * targets
        logits_a_to_b = scale * tf.matmul(inputs.a, candidates.b, transpose_b=True)
        logits_b_to_a = scale * tf.matmul(inputs.b, candidates.a, transpose_b=True)
        a_to_b = _masked_crossentropy(logits_a_to_b, targets, candidates.valid)
        b_to_a = _masked_crossentropy(logits_b_to_a, targets, candidates.valid)
        return tf.where(inputs.valid, 0.5 * (a_to_b + b_to_a), tf.zeros_like(a_to_b))

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "positives": self.positives,
            "gather_across_replicas": self.gather_across_replicas,
            "partner_share": self.partner_share,
        }


def _check_partner_share(partner_share: float | None, positives: str) -> float | None:
    """`partner_share` as a float in [0, 1] (or None), only with label positives."""
    if partner_share is None:
        return None
    if not is_number(partner_share) or not 0.0 <= partner_share <= 1.0:
        raise ValueError(f"`partner_share` is the partner's share of the target, a number in [0, 1], "
                         f"got {partner_share!r}.")
    if positives != "labels":
        raise ValueError("`partner_share` splits the target between the partner and its class: it needs "
                         f"positives='labels', got positives={positives!r}.")
    return float(partner_share)


def _masked_crossentropy(logits: tf.Tensor, targets: tf.Tensor, valid_candidates: tf.Tensor) -> tf.Tensor:
    """Crossentropy of each row's softmax over the valid candidates against a target distribution."""
    logits = tf.where(valid_candidates[None, :], logits, tf.fill(tf.shape(logits), MASKED_LOGIT))
    log_probabilities = tf.nn.log_softmax(logits, axis=1)
    # Masked candidates have zero target: keep their huge negative log-probabilities out of the sum.
    return -tf.reduce_sum(tf.where(targets > 0, targets * log_probabilities, tf.zeros_like(targets)), axis=1)
