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
        self._steps_ahead = {}  # "train" / "test" -> the step as a `tf.function` traced by `trace_ahead`

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

    def trace_ahead(self, train_spec=None, test_spec=None) -> bool:
        """Trace the training and evaluation steps now, for batches like `train_spec` and `test_spec`.

        `fit` traces each step when it first runs it: on avmnist's defaults
        about 1.2 s of Python for the training step and 0.8 s for the
        evaluation step, while the cores that decode the data
        (`mmkeras.data.DecodeAhead`) are done or idle. Called before `fit`,
        while the splits are still decoding, the traces overlap with it. Each
        step becomes a `tf.function`, traced here, that Keras' own step
        function calls: the graph is the same and is traced once. Call it
        after `build_for`, with the specs of the batches `fit` will get
        (`(features, labels)`; a `class_weight` adds sample weights, and the
        step would be traced again).

        Without effect (returns False) under a distribution strategy, with XLA
        or when the model runs eagerly: there Keras' own functions are kept.

        Args:
          train_spec: the training dataset's `element_spec`, or None.
          test_spec: the validation dataset's `element_spec`, or None.

        Returns:
          Whether the steps were traced ahead.
        """
        if self.run_eagerly or self.jit_compile or self._distribute_strategy is not None:
            return False
        for kind, step, spec in (("train", self.train_step, train_spec), ("test", self.test_step, test_spec)):
            if spec is not None:
                traced = tf.function(step, reduce_retracing=True)
                traced.get_concrete_function(spec)
                self._steps_ahead[kind] = traced
        self.train_function = self.test_function = None  # made again, around the traced steps
        return True

    def make_train_function(self, force=False):
        if "train" not in self._steps_ahead:
            return super().make_train_function(force)
        if self.train_function is None or force:
            self.train_function = self._make_function(self._steps_ahead["train"])
        return self.train_function

    def make_test_function(self, force=False):
        if "test" not in self._steps_ahead:
            return super().make_test_function(force)
        if self.test_function is None or force:
            self.test_function = self._make_function(self._steps_ahead["test"])
        return self.test_function

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
