"""A memory queue of negatives: the last K embeddings of each tower, for small batches (MoCo)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf
from keras import layers

from mmkeras.checks import check_positive_int

# The label of a queued row whose class is unknown (unlabelled data) or of an empty slot: matches no class.
UNKNOWN_LABEL = -1


@keras.saving.register_keras_serializable(package="mmkeras")
class NegativeQueue(layers.Layer):
    """A first-in, first-out store of the last `size` embeddings of each tower, their labels and presence.

    With a small batch the contrastive softmax sees few negatives, so its
    gradient is noisy and weak; keeping the embeddings of the last batches
    (He et al., 2020, "MoCo") gives every anchor `size` more candidates at
    almost no cost. The queued embeddings are detached (`stop_gradient`):
    they are data from earlier steps, not functions of this step's weights.
    Empty slots are marked absent, so a fresh queue adds nothing until the
    first batches arrive.

    The queue is state, not parameters, but it is stored as non-trainable
    weights: a saved encoder keeps it, so training resumed from a `.keras`
    file or checkpoint sees the same negatives as an uninterrupted run (as
    MoCo's checkpoints keep theirs). Exported towers do not carry it.

    Under a multi-replica strategy each replica enqueues the whole global
    batch (all-gathered) and the first replica's write is kept, so every
    replica holds the same queue.

    Args:
      size: how many rows the queue holds (K).
      feature_names: the towers' feature names.
      embed_dim: the embedding width.

    The layer is not called on inputs: `read()` returns what it holds and
    `enqueue(...)` adds a batch, overwriting the oldest rows.

    Raises:
      ValueError: for a non-positive size or width, or fewer than one feature.

    Example:
      >>> queue = NegativeQueue(4, ("picture", "sound"), embed_dim=2)
      >>> queue.enqueue({"picture": a, "sound": b}, labels=[3, 5])
      >>> embeddings, present, labels = queue.read()    # rows 0-1 filled, rows 2-3 absent
    """

    def __init__(self, size: int, feature_names: Sequence[str], embed_dim: int, **kwargs):
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.size = check_positive_int(size, "size", hint=" (the number of queued rows; 0 turns the queue off)")
        self.embed_dim = check_positive_int(embed_dim, "embed_dim")
        self.feature_names = tuple(feature_names)
        if not self.feature_names or isinstance(feature_names, str):
            raise ValueError(f"`feature_names` must list the towers' feature names, got {feature_names!r}.")
        # Only the first replica's write is kept: every replica writes the same gathered batch.
        state = {"trainable": False, "aggregation": "only_first_replica"}
        self.embeddings = {
            name: self.add_weight(name=f"{name}_embeddings", shape=(self.size, self.embed_dim),
                                  initializer="zeros", **state)
            for name in self.feature_names
        }
        self.present = {
            name: self.add_weight(name=f"{name}_present", shape=(self.size,), initializer="zeros", **state)
            for name in self.feature_names
        }
        self.labels = self.add_weight(name="labels", shape=(self.size,), dtype="int32",
                                      initializer=keras.initializers.Constant(UNKNOWN_LABEL), **state)
        self.position = self.add_weight(name="position", shape=(), dtype="int32", initializer="zeros", **state)
        self.built = True

    def read(self) -> tuple[dict, dict, tf.Tensor]:
        """What the queue holds.

        Returns:
          (embeddings, present, labels): feature name -> (size, embed_dim)
          float32; feature name -> (size,) bool (False for empty slots and
          rows where that modality was missing); (size,) int32 class ids (-1: unknown).
        """
        embeddings = {name: tf.convert_to_tensor(self.embeddings[name]) for name in self.feature_names}
        present = {name: tf.convert_to_tensor(self.present[name]) > 0.5 for name in self.feature_names}
        return embeddings, present, tf.convert_to_tensor(self.labels)

    def enqueue(self, embeddings: Mapping, labels=None, present: Mapping | None = None) -> None:
        """Write a batch over the oldest rows (first in, first out); a batch longer than the queue keeps its last rows.

        Args:
          embeddings: feature name -> (batch, embed_dim), for every feature of the queue.
          labels: (batch,) class ids, or None (unknown: -1).
          present: feature name -> (batch,) bool; missing names count as present.
        """
        present = present or {}
        values = [tf.stop_gradient(tf.cast(embeddings[name], tf.float32)) for name in self.feature_names]
        batch = tf.shape(values[0])[0]
        flags = [tf.cast(tf.reshape(present[name], [-1]), tf.float32) if name in present
                 else tf.ones([batch], tf.float32) for name in self.feature_names]
        labels = (tf.fill([batch], UNKNOWN_LABEL) if labels is None
                  else tf.reshape(tf.cast(labels, tf.int32), [-1]))
        values, flags, labels = _gather_replicas(values, flags, labels)
        count = tf.minimum(tf.shape(labels)[0], self.size)
        values = [value[-count:] for value in values]
        flags = [flag[-count:] for flag in flags]
        labels = labels[-count:]
        position = tf.convert_to_tensor(self.position)
        slots = tf.math.floormod(position + tf.range(count), self.size)[:, None]
        for name, value, flag in zip(self.feature_names, values, flags):
            self.embeddings[name].assign(tf.tensor_scatter_nd_update(self.embeddings[name], slots, value))
            self.present[name].assign(tf.tensor_scatter_nd_update(self.present[name], slots, flag))
        self.labels.assign(tf.tensor_scatter_nd_update(self.labels, slots, labels))
        self.position.assign(tf.math.floormod(position + count, self.size))

    def get_config(self):
        return {
            **super().get_config(),
            "size": self.size,
            "feature_names": list(self.feature_names),
            "embed_dim": self.embed_dim,
        }


def _gather_replicas(values, flags, labels):
    """All-gather the batch from every replica (unchanged on one replica), so each enqueues the global batch."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values, flags, labels
    return (
        [context.all_gather(value, axis=0) for value in values],
        [context.all_gather(flag, axis=0) for flag in flags],
        context.all_gather(labels, axis=0),
    )
