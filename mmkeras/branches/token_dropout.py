"""Token dropout: replace random tokens with the out-of-vocabulary id while training."""
from __future__ import annotations

import keras
from keras import layers, ops

# TextVectorization's ids: 0 pads, 1 is the out-of-vocabulary token.
PADDING_ID = 0
OOV_ID = 1


@keras.saving.register_keras_serializable(package="mmkeras")
class TokenDropout(layers.Layer):
    """Replaces each real token with the out-of-vocabulary id at a given rate, while training.

    On unseen examples a text often holds words the vocabulary lacks (a new
    object's name), which all map to the out-of-vocabulary id. A model that
    never met that id while training reads such a text as something it has
    learned nothing about, not as "no information", and a text branch that
    memorised the training names then misleads the fused model. Replacing
    random training tokens with it (word dropout) teaches the model what an
    unknown word means, and keeps it from leaning on single rare words.
    Padding is never changed; inference passes ids through unchanged.

    Args:
      rate: the share of tokens replaced, in [0, 1).
      seed: optional seed.

    Call arguments:
      token_ids: (batch, steps) integer ids from a `TextVectorization` layer.
      training: replacement happens only when True.

    Returns:
      The ids, same shape and dtype.

    Example:
      >>> TokenDropout(0.5, seed=0)(np.array([[5, 6, 0]]), training=True)
      <tf.Tensor: shape=(1, 3), dtype=int64, numpy=array([[1, 6, 0]])>
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"TokenDropout `rate` must be in [0, 1), got {rate!r}.")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, token_ids, training=None):
        if not training or self.rate == 0.0:
            return token_ids
        drop = keras.random.uniform(ops.shape(token_ids), seed=self.seed_generator) < self.rate
        drop = ops.logical_and(drop, ops.not_equal(token_ids, PADDING_ID))
        return ops.where(drop, ops.cast(OOV_ID, token_ids.dtype), token_ids)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
