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
    sequence, runs the layer on that, and fills a sequence output's padded
    steps as the masked layer does (zeros, or an LSTM's last valid output), so
    its outputs equal the unwrapped layer's at every step, padded ones
    included, and the number of steps never changes what an example gets
    (tested). An LSTM, a GRU or a concatenating `Bidirectional` of them runs
    without its mask (see `_run_unmasked`); other layers get the mask cut to
    the same steps. Padding must come after the tokens, as `TextVectorization`
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
      The layer's output: (batch, steps, units) for a sequence output, padded
      steps as the masked layer gives them; (batch, units) otherwise.

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
        mask = tf.cast(mask, tf.bool)
        steps = tf.shape(inputs)[1]
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
        length = tf.maximum(tf.reduce_max(lengths), 1)  # a batch of empty texts still runs one (masked) step
        trimmed, trimmed_mask = inputs[:, :length], mask[:, :length]
        if not self._returns_sequences():
            return self.layer(trimmed, mask=trimmed_mask, training=training)
        outputs = self._run_unmasked(trimmed, lengths, training)
        if outputs is None:
            outputs = self.layer(trimmed, mask=trimmed_mask, training=training)
        outputs = tf.pad(outputs, [[0, 0], [0, steps - length], [0, 0]])
        return self._fill_padded(outputs, mask, lengths)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_mask(self, inputs, mask=None):
        return mask if self._returns_sequences() else None

    def _returns_sequences(self) -> bool:
        return bool(getattr(self.layer, "return_sequences", False))

    def _run_unmasked(self, inputs, lengths, training):
        """The sequence output without a mask, for the usual layers; None for others (masked instead).

        With the padding after the tokens, a forward layer's outputs at the valid
        steps do not depend on the padding, and a backward one reads each row's
        tokens reversed in place (`reverse_sequence`) with the padding after
        them. Keras would transpose the boolean mask to time-major, which makes
        oneDNN log a false "supports DT_BOOL only on platforms with AVX-512"
        ERROR line, and select the state at every step.
        """
        layer = self.layer
        if isinstance(layer, layers.Bidirectional):
            forward, backward = layer.forward_layer, layer.backward_layer
            if (layer.merge_mode != "concat" or layer.return_state or not _plain(forward)
                    or not _plain(backward, go_backwards=True)):
                return None
            ahead = forward(inputs, training=training)
            # The backward layer reads its input from the end: give it each row's tokens
            # before their padding, reversed (flip of the row reversed in place), so it reads
            # x_n .. x_1 then the padding; its outputs come in that order.
            reversed_rows = tf.reverse_sequence(inputs, lengths, seq_axis=1, batch_axis=0)
            behind = backward(tf.reverse(reversed_rows, axis=[1]), training=training)
            behind = tf.reverse_sequence(behind, lengths, seq_axis=1, batch_axis=0)
            return tf.concat([ahead, behind], axis=-1)
        if _plain(layer):
            return layer(inputs, training=training)
        return None

    def _fill_padded(self, outputs, mask, lengths):
        """Padded steps as a masked Keras layer gives them: zeros, or the last valid step's output."""
        zeros = isinstance(self.layer, layers.Bidirectional) or getattr(self.layer, "zero_output_for_mask", False)
        if zeros:
            return outputs * tf.cast(mask, outputs.dtype)[..., tf.newaxis]
        last = tf.gather(outputs, tf.maximum(lengths - 1, 0), axis=1, batch_dims=1)
        last = tf.where((lengths > 0)[:, tf.newaxis], last, tf.zeros_like(last))
        return tf.where(mask[..., tf.newaxis], outputs, last[:, tf.newaxis])


def _plain(layer: layers.Layer, go_backwards: bool = False) -> bool:
    """Whether `layer` is a Keras recurrent layer this wrapper may run without its mask."""
    return (isinstance(layer, layers.RNN) and layer.return_sequences and not layer.return_state
            and not layer.stateful and bool(layer.go_backwards) == go_backwards)
