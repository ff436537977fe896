"""Run a masked recurrent layer over the batch's longest text, not over its padded length."""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers


@keras.saving.register_keras_serializable(package="mmkeras")
class TrimPadding(layers.Wrapper):
    """Runs a masked recurrent layer only over the steps up to the batch's longest sequence.

    `TextVectorization` pads every text to its feature's `sequence_length`
    (32 tokens for tuxpaint, whose descriptions average 4.5 words), and a
    masked LSTM still takes one sequential step per padded position: work
    whose results it throws away (a masked step keeps the state, and a
    sequence output is zero there). This wrapper cuts the batch to its longest
    sequence, runs the layer on that, and pads a sequence output back with
    zeros, so its outputs equal the unwrapped layer's at every step, padded
    ones included, and the number of steps never changes what an example gets
    (tested). Padding must come after the tokens, as `TextVectorization`
    writes it; without a mask the layer runs over every step.

    The number of steps depends on the batch, which XLA cannot compile, so
    the wrapper reports `supports_jit = False` (a text branch's
    `TextVectorization` already does).

    Args:
      layer: a recurrent layer (`LSTM`, `GRU`, `Bidirectional(...)`), with or
        without `return_sequences`.

    Call arguments:
      inputs: (batch, steps, channels) features.
      mask: (batch, steps) boolean mask of the valid steps, a prefix of each row.
      training: passed to the layer.

    Returns:
      The layer's output: (batch, steps, units) for a sequence output, zeros
      at padded steps; (batch, units) otherwise.

    Example:
      >>> recurrent = TrimPadding(layers.Bidirectional(layers.LSTM(8, return_sequences=True)))
      >>> recurrent(np.ones((2, 32, 4)), mask=np.arange(32) < np.array([[3], [5]])).shape
      TensorShape([2, 32, 16])
    """

    def __init__(self, layer: layers.Layer, **kwargs):
        super().__init__(layer, **kwargs)
        self.supports_masking = True
        self.supports_jit = False

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs, mask=None, training=None):
        if mask is None:
            return self.layer(inputs, training=training)
        steps = tf.shape(inputs)[1]
        ends = tf.where(mask, tf.range(1, steps + 1)[tf.newaxis], 0)
        length = tf.maximum(tf.reduce_max(ends), 1)  # a batch of empty texts still runs one (masked) step
        outputs = self.layer(inputs[:, :length], mask=mask[:, :length], training=training)
        if not self._returns_sequences():
            return outputs
        return tf.pad(outputs, [[0, 0], [0, steps - length], [0, 0]])

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_mask(self, inputs, mask=None):
        return mask if self._returns_sequences() else None

    def _returns_sequences(self) -> bool:
        return bool(getattr(self.layer, "return_sequences", False))
