"""SpecAugment-style masking of log-mel frames while training."""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from mmkeras.checks import check_positive_int


@keras.saving.register_keras_serializable(package="mmkeras")
class SpecAugment(layers.Layer):
    """Masks random frequency bands and time spans of each training example.

    Recordings from speakers the model never heard are the norm at test
    time; hiding a few mel bands and frame spans while training (Park et al.,
    2019) stops the audio branch from memorising the training voices. The
    frames are normalised per utterance, so a masked value of 0 is the clip's mean.
    Inference passes frames through unchanged.

    Args:
      frequency_masks: bands masked per example.
      frequency_width: widest band, as a fraction of the mel bins.
      time_masks: spans masked per example.
      time_width: widest span, as a fraction of the frames.
      seed: optional seed.

    Call arguments:
      frames: (batch, frames, mel_bins) float tensor.
      training: masking happens only when True.

    Returns:
      The masked frames, same shape.

    Example:
      >>> SpecAugment()(np.ones((2, 50, 20), "float32"), training=True).shape
      TensorShape([2, 50, 20])
    """

    def __init__(self, frequency_masks: int = 2, frequency_width: float = 0.15, time_masks: int = 2,
                 time_width: float = 0.1, seed: int | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        for value, name in ((frequency_masks, "frequency_masks"), (time_masks, "time_masks")):
            check_positive_int(value, name, allow_zero=True)
        for value, name in ((frequency_width, "frequency_width"), (time_width, "time_width")):
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {value!r}.")
        self.frequency_masks = frequency_masks
        self.frequency_width = float(frequency_width)
        self.time_masks = time_masks
        self.time_width = float(time_width)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, frames, training=None):
        if not training:
            return frames
        keep = tf.ones_like(frames)
        shape = tf.shape(frames)
        for count, width, axis in ((self.frequency_masks, self.frequency_width, 2),
                                   (self.time_masks, self.time_width, 1)):
            for _ in range(count):
                keep *= self._mask(shape, axis, width)
        return frames * keep

    def _mask(self, shape, axis: int, width: float):
        """A (batch, frames, bins) 0/1 tensor hiding one random span along `axis` per example."""
        size = tf.cast(shape[axis], tf.float32)
        span = keras.random.uniform((shape[0], 1), 0.0, width, seed=self.seed_generator) * size
        start = keras.random.uniform((shape[0], 1), 0.0, 1.0, seed=self.seed_generator) * (size - span)
        positions = tf.cast(tf.range(shape[axis]), tf.float32)[None, :]
        hidden = tf.logical_and(positions >= start, positions < start + span)
        mask = 1.0 - tf.cast(hidden, tf.float32)
        return mask[:, None, :] if axis == 2 else mask[:, :, None]

    def compute_output_shape(self, frames_shape):
        return frames_shape

    def get_config(self):
        return {
            **super().get_config(),
            "frequency_masks": self.frequency_masks,
            "frequency_width": self.frequency_width,
            "time_masks": self.time_masks,
            "time_width": self.time_width,
            "seed": self.seed,
        }
