"""Training against one modality dominating: auxiliary heads, OGM-GE and gradient blending.

Joint training often leans on the easiest modality and under-trains the
others (on avmnist the audio branch wins: without its audio the concat model fell to 0.386).
Three remedies, chosen with `mmkeras.train(..., balance=...)`:

- "aux_heads": each branch also feeds its own classifier (`aux_<feature>`
  outputs of `build_classifier(aux_heads=True)`), trained with its own loss on
  the examples where that modality is present, so every branch must learn.
- "ogm_ge": on-the-fly gradient modulation with generalisation enhancement
  (Peng et al., CVPR 2022), on top of the auxiliary heads: each step, the
  heads' mean confidence in the true class measures each modality's share;
  the gradients of a branch whose share exceeds the others' mean are scaled
  by `1 - tanh(alpha * (ratio - 1))`, and every branch's gradients get
  Gaussian noise with the gradients' own standard deviation.
- "gradient_blending": gradient blending (Wang et al., CVPR 2020, online as
  in MultiBench), also on the auxiliary heads: the loss is a weighted sum of
  the fused head's and every auxiliary head's losses, the weights estimated
  every `blend_every` epochs from each head's generalisation and overfitting
  (`mmkeras.training.blending`).
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras.src.losses.loss import scale_loss_for_distribution, unscale_loss_for_distribution

from mmkeras.models.classifier import AUX_PREFIX, PROBABILITIES
from mmkeras.training.blending import HEAD_LOSS_PREFIX
from mmkeras.training.config import BALANCES
from mmkeras.training.training_view import TrainingView

# The name of the main output's head in gradient blending's logs (`generalisation_gaps` names it the same).
FUSED_HEAD = "fused"


class BalancedTrainingView(TrainingView):
    """A `TrainingView` that also trains the classifier's auxiliary heads, with OGM-GE or gradient blending.

    Its metrics and logs are those of the main output only, so histories read
    the same with or without balancing; gradient blending adds each head's
    loss (`head_loss_<head>`, and `val_head_loss_<head>` on validation data;
    the heads are "fused" and the feature names), which its weights are
    estimated from.

    Args:
      classifier: a model from `build_classifier(..., aux_heads=True)`.
      method: "aux_heads", "ogm_ge" or "gradient_blending".
      aux_weight: weight of the mean auxiliary loss against the main loss
        ("aux_heads" and "ogm_ge").
      alpha: OGM-GE modulation strength.

    Attributes:
      head_names: ("fused", *feature names), the order of the blending weights.
      blend_weights: (gradient blending only) non-trainable (K,) variable of
        the heads' loss weights, summing to 1; equal until the
        `mmkeras.training.blending.GradientBlending` callback assigns new ones.
      blend_reference: (gradient blending only) non-trainable (2, K) variable
        of the heads' train and validation losses at the last blending
        checkpoint (NaN before the first).

    Raises:
      ValueError: for an unknown method or a classifier without auxiliary heads.

    Example:
      >>> view = BalancedTrainingView(build_classifier(spec, aux_heads=True), method="gradient_blending")
      >>> view.head_names
      ('fused', 'image', 'audio')
    """

    def __init__(self, classifier: keras.Model, *, method: str = "aux_heads", aux_weight: float = 0.5,
                 alpha: float = 0.5, **kwargs):
        if method not in BALANCES[1:]:
            raise ValueError(f"Unknown balance method {method!r}. Expected one of {list(BALANCES[1:])}.")
        names = [key[len(AUX_PREFIX):] for key in classifier.output if key.startswith(AUX_PREFIX)]
        if not names:
            raise ValueError("balance needs a classifier built with `aux_heads=True`.")
        super().__init__(classifier, output_names=(PROBABILITIES, *(AUX_PREFIX + n for n in names)), **kwargs)
        self.method = method
        self.aux_weight = float(aux_weight)
        self.alpha = float(alpha)
        self.feature_names = names
        self.head_names = (FUSED_HEAD, *names)
        self.branch_variables = [
            {id(v) for v in classifier.get_layer(f"{name}_branch").trainable_variables} for name in names
        ]
        if method == "gradient_blending":
            # Variables, not Python numbers: the callback assigns them without retracing the step,
            # and the run's backup saves them with the weights, so a resumed run goes on with them.
            count = len(self.head_names)
            self.blend_weights = self.add_weight(
                shape=(count,), initializer=keras.initializers.Constant(1.0 / count), trainable=False,
                dtype="float32", name="blend_weights",
            )
            self.blend_reference = self.add_weight(
                shape=(2, count), initializer=keras.initializers.Constant(float("nan")), trainable=False,
                dtype="float32", name="blend_reference",
            )
            self.head_losses = [keras.metrics.Mean(name=HEAD_LOSS_PREFIX + name) for name in self.head_names]

    def _symbolic_build(self, iterator=None, data_batch=None):
        # Under tf.distribute Keras builds the compiled loss and metrics against
        # every output; here they belong to the main one, so build them first.
        if data_batch is not None:
            x, y, _ = keras.utils.unpack_x_y_sample_weight(data_batch)
            probabilities = self.compute_output_spec(x, training=False)[0]
            for compiled in (self._compile_loss, self._compile_metrics):
                if compiled is not None and not compiled.built:
                    compiled.build(y, probabilities)
        super()._symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            probabilities, *aux = self(x, training=True)
            main_loss = self._compute_loss(x=x, y=y, y_pred=probabilities, sample_weight=sample_weight, training=True)
            aux_losses = self._aux_losses(x, y, aux, sample_weight)
            if self.method == "gradient_blending":
                weights = tf.unstack(tf.cast(self.blend_weights, main_loss.dtype))
                loss = weights[0] * main_loss + scale_loss_for_distribution(
                    tf.add_n([weight * head for weight, head in zip(weights[1:], aux_losses)])
                )
                self._track_head_losses(x, unscale_loss_for_distribution(main_loss), aux_losses)
            else:
                aux_loss = scale_loss_for_distribution(tf.add_n(aux_losses) / len(aux))
                loss = main_loss + self.aux_weight * aux_loss
            self._loss_tracker.update_state(
                unscale_loss_for_distribution(loss), sample_weight=tf.shape(tf.nest.flatten(x)[0])[0]
            )
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        if self.method == "ogm_ge":
            gradients = self._modulate(gradients, variables, y, aux)
        self.optimizer.apply(gradients, variables)
        return self._with_worker_axis(self.compute_metrics(x, y, probabilities, sample_weight=sample_weight))

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        probabilities, *aux = self(x, training=False)
        loss = self._compute_loss(x=x, y=y, y_pred=probabilities, sample_weight=sample_weight, training=False)
        if self.method == "gradient_blending":
            self._track_head_losses(x, unscale_loss_for_distribution(loss), self._aux_losses(x, y, aux, sample_weight))
        self._loss_tracker.update_state(
            unscale_loss_for_distribution(loss), sample_weight=tf.shape(tf.nest.flatten(x)[0])[0]
        )
        return self._with_worker_axis(self.compute_metrics(x, y, probabilities, sample_weight=sample_weight))

    def _track_head_losses(self, x, main_loss, aux_losses):
        """Add a batch's per-head losses to the running means, each weighted by its examples."""
        batch = tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], main_loss.dtype)
        self.head_losses[0].update_state(main_loss, sample_weight=batch)
        for tracker, name, head_loss in zip(self.head_losses[1:], self.feature_names, aux_losses):
            present = tf.reduce_sum(tf.cast(tf.reshape(x[f"{name}_present"], [-1]), head_loss.dtype))
            tracker.update_state(head_loss, sample_weight=present)

    def _aux_losses(self, x, y, aux, sample_weight=None):
        """Each head's loss, averaged over the examples where its modality is present.

        The loss is the compiled one (crossentropy or focal), weighted by the
        same sample (class) weights as the main output's.
        """
        losses = []
        for name, head in zip(self.feature_names, aux):
            if isinstance(self.loss, keras.losses.Loss):
                per_example = self.loss.call(y, head)
            else:
                per_example = keras.losses.sparse_categorical_crossentropy(y, head)
            per_example = tf.reshape(per_example, [-1])
            present = tf.cast(tf.reshape(x[f"{name}_present"], [-1]), per_example.dtype)
            weights = present if sample_weight is None else present * tf.cast(tf.reshape(sample_weight, [-1]), per_example.dtype)
            losses.append(tf.reduce_sum(per_example * weights) / tf.maximum(tf.reduce_sum(present), 1.0))
        return losses

    def _modulate(self, gradients, variables, y, aux):
        """OGM-GE: damp the dominant branches' gradients and add Gaussian noise to every branch's."""
        labels = tf.cast(tf.reshape(y, [-1, 1]), tf.int32)
        scores = tf.stack([tf.reduce_mean(tf.gather(head, labels, batch_dims=1)) for head in aux])
        coefficients = ogm_coefficients(scores, self.alpha)
        modulated = []
        for gradient, variable in zip(gradients, variables):
            owner = next((i for i, ids in enumerate(self.branch_variables) if id(variable) in ids), None)
            if gradient is not None and owner is not None:
                noise = tf.random.normal(tf.shape(gradient), stddev=tf.math.reduce_std(gradient) + 1e-8)
                gradient = gradient * tf.cast(coefficients[owner], gradient.dtype) + tf.cast(noise, gradient.dtype)
            modulated.append(gradient)
        return modulated


def ogm_coefficients(scores, alpha: float):
    """OGM's gradient scale per modality from each modality's confidence score.

    A modality whose score is above the mean of the others' (ratio > 1) is
    dominating: its gradients are scaled by `1 - tanh(alpha * (ratio - 1))`;
    the others keep scale 1.

    Args:
      scores: (M,) mean confidence of each modality's head in the true class.
      alpha: modulation strength.

    Returns:
      (M,) float tensor of scales in (0, 1].

    Example:
      >>> ogm_coefficients(tf.constant([0.9, 0.3]), 0.5).numpy()
      array([0.2384, 1.], dtype=float32)
    """
    scores = tf.convert_to_tensor(scores, tf.float32)
    count = int(scores.shape[0])
    others = (tf.reduce_sum(scores) - scores) / max(count - 1, 1)
    ratios = scores / tf.maximum(others, 1e-6)
    return tf.where(ratios > 1.0, 1.0 - tf.tanh(alpha * (ratios - 1.0)), tf.ones_like(ratios))
