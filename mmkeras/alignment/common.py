"""What the alignment losses share: reading their inputs and gathering candidates across replicas.

An alignment loss sees one batch of paired embeddings: row i of modality a and
row i of modality b come from the same example. Every other row of the batch
is a negative. Under `tf.distribute.MirroredStrategy` each replica holds only
its slice of the global batch, so the negatives of a replica's rows are
gathered from every replica (`ReplicaContext.all_gather`, whose gradient sends
each replica's share back to it): the loss of a replica's rows is then exactly
their loss within the global batch, and Keras' usual "mean over the local
batch, divided by the number of replicas, summed across replicas" gives the
global-batch mean.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import keras
import tensorflow as tf

from mmkeras.checks import check_number

POSITIVES = ("pairs", "labels")
# Keys of the dict form of `y_pred` (see `read_pair_inputs`).
EMBEDDINGS = "embeddings"
LOG_TEMPERATURE = "log_temperature"
VALID = "valid"
# A memory queue of earlier batches' embeddings (see `NegativeQueue`): extra candidates, never a row's partner.
QUEUE = "queue"
QUEUE_VALID = "queue_valid"
QUEUE_LABELS = "queue_labels"
PAIR_KEYS = (EMBEDDINGS, LOG_TEMPERATURE, VALID, QUEUE, QUEUE_VALID, QUEUE_LABELS)
# Added to the logits of masked candidates: far below any cosine / temperature.
MASKED_LOGIT = -1e9


class PairInputs(NamedTuple):
    """A loss's inputs, read from `y_true` and `y_pred`.

    Attributes:
      a, b: (batch, dim) float32 embeddings of the two modalities, rows paired.
      valid: (batch,) bool, True where both modalities of the row are present.
      labels: (batch,) int32 class ids, or None when positives are the pairs.
      log_temperature: scalar float32 log-temperature from `y_pred`, or None.
      queue: (queue_size, 2, dim) float32 queued embeddings (both modalities), or None.
      queue_valid: (queue_size,) bool, False for empty slots and missing modalities; None without a queue.
      queue_labels: (queue_size,) int32 class ids of the queued rows (-1: unknown); None without a queue.
    """

    a: tf.Tensor
    b: tf.Tensor
    valid: tf.Tensor
    labels: tf.Tensor | None
    log_temperature: tf.Tensor | None
    queue: tf.Tensor | None = None
    queue_valid: tf.Tensor | None = None
    queue_labels: tf.Tensor | None = None


class Candidates(NamedTuple):
    """The global batch of candidates a replica's rows are compared with.

    Attributes:
      a, b: (global_batch, dim) embeddings gathered from every replica.
      valid: (global_batch,) bool validity of the candidates.
      labels: (global_batch,) int32 class ids, or None.
      offset: where this replica's rows start in the global batch (int32 scalar).
    """

    a: tf.Tensor
    b: tf.Tensor
    valid: tf.Tensor
    labels: tf.Tensor | None
    offset: tf.Tensor


def check_positives(positives: str) -> str:
    """Validate the `positives` argument of a loss and return it."""
    if positives not in POSITIVES:
        raise ValueError(
            f"`positives` must be one of {list(POSITIVES)}, got {positives!r}: 'pairs' treats row i of one "
            "modality and row i of the other as the only match; 'labels' also matches rows of the same class."
        )
    return positives


def read_pair_inputs(y_true, y_pred, positives: str, loss_name: str) -> PairInputs:
    """Read the embeddings, validity, labels and temperature a loss was called with.

    Args:
      y_true: ignored for `positives="pairs"`; (batch,) class ids for `positives="labels"`.
      y_pred: a (batch, 2, dim) stack of the paired embeddings, or a dict with
        "embeddings" (that stack) and optionally "log_temperature" (a scalar),
        "valid" ((batch,) flags, False where a modality is missing) and a
        memory queue: "queue" ((queue_size, 2, dim) earlier embeddings),
        "queue_valid" ((queue_size,) flags) and "queue_labels" ((queue_size,) class ids).
      positives: "pairs" or "labels".
      loss_name: the loss's class name, for the messages.

    Returns:
      A `PairInputs`.

    Raises:
      ValueError: for a dict with unknown keys or a stack not shaped (batch, 2, dim).
    """
    log_temperature = valid = queue = queue_valid = queue_labels = None
    if isinstance(y_pred, Mapping):
        unknown = sorted(set(y_pred) - set(PAIR_KEYS))
        if unknown or EMBEDDINGS not in y_pred:
            raise ValueError(
                f"{loss_name}: a dict `y_pred` needs the key {EMBEDDINGS!r} and may have {list(PAIR_KEYS[1:])}; "
                f"got keys {sorted(y_pred)}."
            )
        log_temperature, valid = y_pred.get(LOG_TEMPERATURE), y_pred.get(VALID)
        queue, queue_valid, queue_labels = y_pred.get(QUEUE), y_pred.get(QUEUE_VALID), y_pred.get(QUEUE_LABELS)
        y_pred = y_pred[EMBEDDINGS]
    stack = tf.cast(tf.convert_to_tensor(y_pred), tf.float32)
    if stack.shape.rank != 3 or stack.shape[1] != 2:
        raise ValueError(
            f"{loss_name}: `y_pred` must stack the two modalities' embeddings as (batch, 2, dim) "
            f"(e.g. `ops.stack([image_embeddings, text_embeddings], axis=1)`), got shape {stack.shape}."
        )
    batch = tf.shape(stack)[0]
    valid = tf.ones([batch], tf.bool) if valid is None else tf.reshape(tf.cast(valid, tf.bool), [-1])
    labels = None
    if positives == "labels":
        labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
    if log_temperature is not None:
        log_temperature = tf.reshape(tf.cast(log_temperature, tf.float32), [])
    if queue is not None:
        queue = tf.cast(tf.convert_to_tensor(queue), tf.float32)
        if queue.shape.rank != 3 or queue.shape[1] != 2 or queue.shape[2] != stack.shape[2]:
            raise ValueError(
                f"{loss_name}: the queue must stack earlier embeddings like `y_pred`, as (queue_size, 2, "
                f"{stack.shape[2]}), got shape {queue.shape}."
            )
        size = tf.shape(queue)[0]
        queue_valid = (tf.ones([size], tf.bool) if queue_valid is None
                       else tf.reshape(tf.cast(queue_valid, tf.bool), [-1]))
        queue_labels = (tf.fill([size], -1) if queue_labels is None
                        else tf.reshape(tf.cast(queue_labels, tf.int32), [-1]))
    return PairInputs(stack[:, 0], stack[:, 1], valid, labels, log_temperature, queue, queue_valid, queue_labels)


def gather_candidates(inputs: PairInputs, gather_across_replicas: bool) -> Candidates:
    """Gather the candidates of the whole global batch from every replica.

    Outside a multi-replica step (or with `gather_across_replicas=False`) the
    candidates are this batch's own rows and the offset is 0.

    Args:
      inputs: this replica's `PairInputs`.
      gather_across_replicas: whether to all-gather under a distribution strategy.

    Returns:
      `Candidates` for the global batch.
    """
    context = tf.distribute.get_replica_context()
    if not gather_across_replicas or context is None or context.num_replicas_in_sync == 1:
        return Candidates(inputs.a, inputs.b, inputs.valid, inputs.labels, tf.constant(0, tf.int32))
    local_size = tf.shape(inputs.a)[:1]
    # Replicas may hold different numbers of rows (the last, partial batch).
    sizes = context.all_gather(local_size, axis=0)
    replica_id = tf.cast(context.replica_id_in_sync_group, tf.int32)
    offset = tf.reduce_sum(sizes[:replica_id])
    a = context.all_gather(inputs.a, axis=0)
    b = context.all_gather(inputs.b, axis=0)
    # Flags are gathered as ints: all_gather is a collective of numbers.
    valid = tf.cast(context.all_gather(tf.cast(inputs.valid, tf.int32), axis=0), tf.bool)
    labels = None if inputs.labels is None else context.all_gather(inputs.labels, axis=0)
    return Candidates(a, b, valid, labels, offset)


def append_queue(inputs: PairInputs, candidates: Candidates) -> Candidates:
    """Add the queued embeddings after the batch's candidates (unchanged without a queue).

    Queued rows come after the global batch, so no row's partner index points
    at them: with pairs they are negatives only; with labels, queued rows of
    the row's class are positives too (a label of -1 matches nothing).
    """
    if inputs.queue is None:
        return candidates
    queue = tf.stop_gradient(inputs.queue)  # earlier batches' embeddings are data: no gradient into them
    labels = None if candidates.labels is None else tf.concat([candidates.labels, inputs.queue_labels], axis=0)
    return Candidates(
        tf.concat([candidates.a, queue[:, 0]], axis=0),
        tf.concat([candidates.b, queue[:, 1]], axis=0),
        tf.concat([candidates.valid, inputs.queue_valid], axis=0),
        labels,
        candidates.offset,
    )


def positive_mask(inputs: PairInputs, candidates: Candidates) -> tf.Tensor:
    """(batch, global_batch) bool: which candidates match each of this replica's rows.

    With pairs, only the row's own partner; with labels, every valid candidate
    of the same class (the partner included).
    """
    batch = tf.shape(inputs.a)[0]
    total = tf.shape(candidates.a)[0]
    partner = tf.range(batch) + candidates.offset
    mask = tf.equal(partner[:, None], tf.range(total)[None, :])
    if inputs.labels is not None:
        mask = tf.logical_or(mask, tf.equal(inputs.labels[:, None], candidates.labels[None, :]))
    return tf.logical_and(mask, candidates.valid[None, :])


def check_temperature(temperature: float, name: str = "temperature") -> float:
    """Validate a positive, finite temperature and return it as a float."""
    return check_number(temperature, name, finite=True, hint=" (CLIP starts at 0.07)")


class AlignmentLoss(keras.losses.Loss):
    """Base of the alignment losses: a Keras loss whose `y_true` may be None.

    The positives of an alignment loss are the pairs themselves, so most
    calls have no targets; Keras converts `y_true` to a tensor, and None
    cannot be one, so a None `y_true` becomes a (batch,) vector of zeros.
    """

    def __call__(self, y_true, y_pred, sample_weight=None):
        if y_true is None and getattr(self, "positives", "pairs") == "labels":
            raise ValueError(
                f"{type(self).__name__}(positives='labels') needs the class ids as `y_true`; pass them, or use "
                "positives='pairs'."
            )
        if y_true is None:
            stack = y_pred.get(EMBEDDINGS) if isinstance(y_pred, Mapping) else y_pred
            if stack is None:
                # `read_pair_inputs` explains what the dict needs.
                read_pair_inputs(None, y_pred, "pairs", type(self).__name__)
            y_true = tf.zeros(tf.shape(tf.convert_to_tensor(stack))[:1], tf.float32)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)
