"""ImageNet input preprocessing as a serializable layer (no Lambda, no Python in the graph)."""
from __future__ import annotations

import keras
from keras import layers, ops

# The `preprocess_input` conventions of keras.applications.
MODES = ("none", "tf", "torch", "caffe")
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="mmkeras")
class ImagenetPreprocessing(layers.Layer):
    """Applies a keras.applications `preprocess_input` convention inside the model.

    Keeping it a layer means the exported model takes raw 0..255 pixels and the
    backbone always sees what it was trained on.

    Args:
      mode: "none" (pass through as float), "tf" (scale to [-1, 1]), "torch"
        (scale to [0, 1], normalise per channel), "caffe" (RGB->BGR, subtract means).

    Call arguments:
      images: (batch, height, width, 3) pixels in 0..255.

    Returns:
      float images in the backbone's convention.

    Example:
      >>> ImagenetPreprocessing("tf")(np.full((1, 2, 2, 3), 255.0)).numpy().max()
      1.0
    """

    def __init__(self, mode: str = "none", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"Unknown preprocessing mode {mode!r}. Expected one of {list(MODES)}.")
        self.mode = mode

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        if self.mode == "tf":
            return images / 127.5 - 1.0
        if self.mode == "torch":
            return (images / 255.0 - ops.array(_TORCH_MEAN, self.compute_dtype)) / ops.array(
                _TORCH_STD, self.compute_dtype
            )
        if self.mode == "caffe":
            return ops.flip(images, axis=-1) - ops.array(_CAFFE_MEAN_BGR, self.compute_dtype)
        return images

    def compute_output_shape(self, images_shape):
        return images_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
