"""Token dropout: replace random tokens with the out-of-vocabulary id while training."""
from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers, ops

# TextVectorization's ids: 0 pads, 1 is the out-of-vocabulary token.
PADDING_ID = 0
OOV_ID = 1


@keras.saving.register_keras_serializable(package="mmkeras")
class TokenDropout(layers.Layer):
    """Replaces real tokens with the out-of-vocabulary id while training: each at `rate`, rare ones more often.

    On unseen examples a text often holds words the vocabulary lacks (a new
    object's name), which all map to the out-of-vocabulary id. A model that
    never met that id while training reads such a text as something it has
    learned nothing about, not as "no information", and a text branch that
    memorised the training names then misleads the fused model. Replacing
    training tokens with it (word dropout) teaches the model what an unknown
    word means, and keeps it from leaning on single rare words.

    With `rare` (alpha) and the training `counts` of each token id, a token seen
    n times is replaced with probability `strength * alpha / (alpha + n)`
    (frequency-aware word dropout, Kiperwasser and Goldberg 2016), or `rate`
    if that is larger: a word seen once is hidden often (alpha 1: half the
    time), a common word almost never. Words seen once or twice are exactly the
    ones a model can only memorise, and the ones an unseen example's new words
    resemble. `strength` (a weight, 1 unless set) lets training ramp the rare
    words' dropout in: `mmkeras.train` raises it from 0 over the first epochs
    (`RareTokenDropoutWarmup`), so that the model first learns from every word.
    Padding is never changed; inference passes ids through unchanged.

    Args:
      rate: the share of every real token replaced, in [0, 1).
      rare: alpha of the frequency-aware rate, >= 0 (0: off). Needs `counts`.
      counts: the number of times each token id occurs in the training texts,
        one entry per id of the vocabulary (ids 0 and 1, padding and the
        out-of-vocabulary id, are never replaced). Kept as the weight
        `rare_probability` (alpha / (alpha + n) per id), so a saved model
        keeps it; `vocab_size` is its length.
      vocab_size: the table's length when the layer is rebuilt from a config
        (the saved weights then fill it); taken from `counts` when given.
      seed: optional seed.

    Call arguments:
      token_ids: (batch, steps) integer ids from a `TextVectorization` layer.
      training: replacement happens only when True.

    Returns:
      The ids, same shape and dtype.

    Raises:
      ValueError: for a rate outside [0, 1), a negative `rare`, or `rare`
        without `counts` or `vocab_size`.

    Example:
      >>> TokenDropout(0.5, seed=0)(np.array([[5, 6, 0]]), training=True)
      <tf.Tensor: shape=(1, 3), dtype=int64, numpy=array([[1, 6, 0]])>
      >>> layer = TokenDropout(rare=1.0, counts=[0, 0, 1, 99])  # id 2 seen once, id 3 99 times
      >>> layer.rare_probability.numpy()
      array([0.  , 0.  , 0.5 , 0.01], dtype=float32)
    """

    def __init__(
        self,
        rate: float = 0.0,
        seed: int | None = None,
        *,
        rare: float = 0.0,
        counts: Sequence[int] | None = None,
        vocab_size: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"TokenDropout `rate` must be in [0, 1), got {rate!r}.")
        if isinstance(rare, bool) or not float(rare) >= 0.0:
            raise ValueError(f"TokenDropout `rare` (alpha) must be >= 0, got {rare!r}.")
        self.rate = float(rate)
        self.rare = float(rare)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.rare_probability = self.strength = None
        if self.rare:
            if counts is None and vocab_size is None:
                raise ValueError("TokenDropout with `rare` needs `counts` (training counts per token id) or `vocab_size`.")
            probability = np.zeros(len(counts) if counts is not None else int(vocab_size), "float32")
            if counts is not None:
                probability[:] = self.rare / (self.rare + np.asarray(counts, "float64"))
                probability[[PADDING_ID, OOV_ID][: len(probability)]] = 0.0
            self.rare_probability = self.add_weight(
                shape=probability.shape, initializer=keras.initializers.Constant(probability), trainable=False,
                name="rare_probability", dtype="float32",
            )
            self.strength = self.add_weight(shape=(), initializer="ones", trainable=False, name="strength",
                                            dtype="float32")

    def call(self, token_ids, training=None):
        if not training or (self.rate == 0.0 and self.rare_probability is None):
            return token_ids
        probability = self.rate
        if self.rare_probability is not None:
            rare = ops.take(self.rare_probability, ops.clip(token_ids, 0, self.vocab_size - 1)) * self.strength
            probability = ops.maximum(rare, self.rate)
        drop = keras.random.uniform(ops.shape(token_ids), seed=self.seed_generator) < probability
        drop = ops.logical_and(drop, ops.not_equal(token_ids, PADDING_ID))
        return ops.where(drop, ops.cast(OOV_ID, token_ids.dtype), token_ids)

    @property
    def vocab_size(self) -> int | None:
        """The length of the per-id table, or None without `rare`."""
        return None if self.rare_probability is None else int(self.rare_probability.shape[0])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {**super().get_config(), "rate": self.rate, "seed": self.seed}
        if self.rare:
            config.update(rare=self.rare, vocab_size=self.vocab_size)
        return config
