"""`Preprocessing`: the backbone's `preprocess_input` as a layer inside the model.

A tltf model takes raw pixels in [0, 255]; this layer turns them into what its backbone
expects, so training, evaluation, the saved `.keras` file and the exported `.tflite` all
agree without the user calling `preprocess_input` by hand. It also carries the backbone's
spec in the model's config (`tltf.models.parts.spec_of` reads it back).
"""

from __future__ import annotations

import keras
import numpy as np

from tltf._backend import check_backend
from tltf.backbones._affine import parse_affine
from tltf.backbones._hub_handles import FromLiveLayer, check_backbone_name
from tltf.backbones.registry import PREPROCESSING_MODES

check_backend()  # Keras must run on TensorFlow before this module builds anything

__all__ = ["Preprocessing"]

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="tltf")
class Preprocessing(keras.layers.Layer):
    """Turns raw pixels in [0, 255] into what a backbone expects, inside the model.

    The arithmetic is that of the family's `keras.applications.<family>.preprocess_input`,
    so a model never depends on the user remembering to call it.

    Args:
        mode: str. `"tf"` (to [-1, 1]), `"torch"` (to [0, 1], then ImageNet mean/std),
            `"caffe"` (RGB to BGR, then ImageNet mean subtracted), `"unit"` (to [0, 1]),
            `"none"` (the backbone preprocesses itself) or `"affine:<scale>/<offset>"`
            (`x * scale + offset`, per channel: exactly what a KerasHub preset's image
            converter computes at the model's input size).
        backbone_name: str or `None`. The name of the backbone it feeds.
        backbone_spec: dict or `None`. The data of that backbone's `BackboneSpec`
            (`tltf.backbones.registry.spec_data`), kept in the model's config so that unfreezing by
            blocks works for any spec, registered or not, with no registry lookup.
        **kwargs: base `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> layer = Preprocessing("tf")
    >>> np.asarray(layer(np.array([[[[0.0, 127.5, 255.0]]]]))).round(3).tolist()
    [[[[-1.0, 0.0, 1.0]]]]
    """

    def __init__(self, mode: str = "none", backbone_name: str | None = None,
                 backbone_spec: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES and parse_affine(mode) is None:
            raise ValueError(
                f"`mode` must be one of {PREPROCESSING_MODES} or 'affine:<scale>/<offset>'. "
                f"Received: mode={mode!r}"
            )
        self.mode = mode
        self._affine = parse_affine(mode)
        self.backbone_name = backbone_name
        self.backbone_spec = backbone_spec

    def call(self, images):
        x = keras.ops.cast(images, self.compute_dtype)
        if self._affine is not None:  # as KerasHub's ImageConverter: x * scale, then + offset
            scale, offset = (keras.ops.cast(np.array(v, "float32"), x.dtype) for v in self._affine)
            return x * scale + offset
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "torch":
            mean = np.array(_TORCH_MEAN, "float32")
            std = np.array(_TORCH_STD, "float32")
            return (x / 255.0 - keras.ops.cast(mean, x.dtype)) / keras.ops.cast(std, x.dtype)
        if self.mode == "caffe":
            x = keras.ops.flip(x, axis=-1)
            return x - keras.ops.cast(np.array(_CAFFE_MEAN_BGR, "float32"), x.dtype)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        name = self.backbone_name
        if isinstance(name, str) and name.startswith("hub:"):
            name = FromLiveLayer(name)  # an in-memory clone may resolve it again
        config.update(mode=self.mode, backbone_name=name, backbone_spec=self.backbone_spec)
        return config

    @classmethod
    def from_config(cls, config):
        check_backbone_name(config.get("backbone_name"))  # `spec_of` would load that hub model
        return cls(**config)
