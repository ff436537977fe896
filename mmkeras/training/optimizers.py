"""Adam and AdamW with one fused TensorFlow op per variable: smaller graphs, faster steps.

Keras 3's Adam writes its update in about fifteen element-wise ops per
variable (moments, bias correction, the step), each routed through
`tf.distribute`'s per-variable update, and AdamW adds a weight-decay update
that evaluates the learning rate again for every variable. On a CPU the
training step of a small model is then a few hundred tiny kernels, and
tracing it is a large part of the first epoch. Outside a distribution
strategy these classes apply the same update with TensorFlow's own fused
kernel (`ResourceApplyAdam`, one op per variable) and decay the weights with
one learning-rate evaluation per step. Under a strategy (several GPUs or
workers), with `amsgrad`, or for sparse gradients (embedding lookups) they
fall back to Keras' own per-variable update, so they are safe everywhere.
The two updates agree to float32 rounding (`tests/training/test_optimizers.py`).
"""
from __future__ import annotations

import keras
import tensorflow as tf


class _FusedAdamUpdate:
    """The fused update shared by `FusedAdam` and `FusedAdamW` (a mixin ahead of a Keras Adam class)."""

    def _fused(self) -> bool:
        return not (tf.distribute.has_strategy() or self.amsgrad)

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None or not self._fused():
            return super()._apply_weight_decay(variables)
        decay = tf.cast(self.learning_rate, tf.float32) * self.weight_decay  # once, not once per variable
        for variable in variables:
            if self._use_weight_decay(variable):
                value = _tf_variable(variable)
                value.assign_sub(value * tf.cast(decay, value.dtype))

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if not self._fused():
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1_power = tf.pow(tf.constant(self.beta_1, tf.float32), step)
        beta_2_power = tf.pow(tf.constant(self.beta_2, tf.float32), step)
        for grad, variable in zip(grads, trainable_variables):
            if isinstance(grad, tf.IndexedSlices):  # Keras' own update handles sparse gradients
                self.update_step(grad, variable, learning_rate)
                continue
            index = self._get_variable_index(variable)
            value = _tf_variable(variable)
            dtype = value.dtype
            tf.raw_ops.ResourceApplyAdam(
                var=value.handle,
                m=_tf_variable(self._momentums[index]).handle,
                v=_tf_variable(self._velocities[index]).handle,
                beta1_power=tf.cast(beta_1_power, dtype),
                beta2_power=tf.cast(beta_2_power, dtype),
                lr=tf.cast(learning_rate, dtype),
                beta1=tf.constant(self.beta_1, dtype),
                beta2=tf.constant(self.beta_2, dtype),
                epsilon=tf.constant(self.epsilon, dtype),
                grad=tf.cast(grad, dtype),
            )


@keras.saving.register_keras_serializable(package="mmkeras")
class FusedAdam(_FusedAdamUpdate, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with one fused op per variable outside a distribution strategy.

    Takes the same arguments and gives the same updates (to float32
    rounding); see the module docstring for when it falls back.

    Example:
      >>> model.compile(optimizer=FusedAdam(1e-3), loss="sparse_categorical_crossentropy")
    """


@keras.saving.register_keras_serializable(package="mmkeras")
class FusedAdamW(_FusedAdamUpdate, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with one fused op per variable outside a distribution strategy.

    Takes the same arguments and gives the same updates (to float32
    rounding), `exclude_from_weight_decay` included; see the module
    docstring for when it falls back.

    Example:
      >>> optimizer = FusedAdamW(2e-3, weight_decay=0.01)
      >>> optimizer.exclude_from_weight_decay(var_names=["bias"])
    """


def _tf_variable(variable) -> tf.Variable:
    """The `tf.Variable` behind a Keras variable (or the variable itself)."""
    return variable.value if isinstance(variable, keras.Variable) else variable
