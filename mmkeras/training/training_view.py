"""The model that `fit` trains: the classifier seen through its supervised output."""
from __future__ import annotations

import keras
import tensorflow as tf

from mmkeras.models.classifier import PROBABILITIES


class FirstReplicaBuild:
    """Mixin for Keras models trained under tf.distribute with string or boolean inputs.

    Keras learns a model's input shapes by averaging the first distributed
    batch across replicas, which fails for text and presence flags; the first
    replica's batch has the same shapes, so build from it instead.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None or iterator is None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            first = next(batches)
            break
        local = tf.nest.map_structure(lambda value: self.distribute_strategy.experimental_local_results(value)[0], first)
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=local)


class TrainingView(FirstReplicaBuild, keras.Model):
    """A functional view of a classifier with only its "probabilities" output.

    It shares every layer and weight with the classifier, so training it
    trains the classifier, while labels, class weights and metrics stay plain
    tensors (Keras needs a target for every output of a dict-output model).
    It is never saved; the classifier is.

    It also works around two gaps of Keras 3 under `tf.distribute`:
    - Keras learns the input shapes by averaging the first distributed batch
      across replicas, which fails for text and presence flags; this view
      takes the first replica's batch instead (it has the same shapes).
    - Under a multi-worker strategy Keras averages each step's scalar logs
      across workers along an axis 0 they do not have
      (tensorflow/tensorflow#72388); this view gives them that axis.

    Args:
      classifier: a model from `build_classifier` (dict inputs, dict outputs).
      output_names: the classifier outputs the view returns (a list when several).

    Example:
      >>> view = TrainingView(build_classifier(spec))
      >>> view.output.shape
      (None, 3)
    """

    def __init__(self, classifier: keras.Model, *, output_names: tuple[str, ...] = (PROBABILITIES,), **kwargs):
        kwargs.setdefault("name", f"{classifier.name}_training_view")
        outputs = [classifier.output[name] for name in output_names]
        super().__init__(inputs=classifier.input, outputs=outputs[0] if len(outputs) == 1 else outputs, **kwargs)

    def build_for(self, element_spec) -> None:
        """Create the loss, metric and optimizer variables for batches like `element_spec`, eagerly.

        Outside a distribution strategy Keras defers them to the trace of the
        first training step, and `tf.function` then traces that step twice
        (once to create the variables, once without): on avmnist that was half
        of the first step. Call it after `compile`, before `fit`; under a
        strategy it does what `fit` would do first anyway.

        Args:
          element_spec: the training dataset's `element_spec`, `(features, labels)`.
        """
        batch = tf.nest.map_structure(lambda spec: keras.KerasTensor(spec.shape, spec.dtype.name), element_spec)
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=batch)

    def train_step(self, data):
        return self._with_worker_axis(super().train_step(data))

    def test_step(self, data):
        return self._with_worker_axis(super().test_step(data))

    def _with_worker_axis(self, logs):
        if not _is_multi_worker(self.distribute_strategy):
            return logs
        return tf.nest.map_structure(lambda value: tf.expand_dims(value, 0), logs)


def _is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` is a MultiWorkerMirroredStrategy over more than one worker."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return False
    cluster = resolver.cluster_spec()
    return sum(cluster.num_tasks(job) for job in ("chief", "worker") if job in cluster.jobs) > 1
