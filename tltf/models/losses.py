"""The loss tltf compiles single-label classifiers with on integer labels."""

from __future__ import annotations

import keras

from tltf._backend import check_backend

check_backend()  # Keras must run on TensorFlow before this module builds anything

__all__ = ["SparseCategoricalCrossentropy"]


@keras.saving.register_keras_serializable(package="tltf")
class SparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy for integer labels that also supports label smoothing.

    Keras' own `SparseCategoricalCrossentropy` has no `label_smoothing`; this one one-hot
    encodes the labels inside the loss so the data pipeline can keep integer labels.

    Args:
        from_logits: bool. Whether predictions are logits. Defaults to `False`.
        label_smoothing: float in [0, 1). Defaults to `0.0`.
        **kwargs: base `keras.losses.Loss` arguments.

    Example:

    >>> import numpy as np
    >>> loss = SparseCategoricalCrossentropy(label_smoothing=0.1)
    >>> float(loss(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]))) > 0
    True
    """

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0,
                 name: str = "sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"`label_smoothing` must be in [0, 1). Received: label_smoothing={label_smoothing!r}"
            )
        self.from_logits = from_logits
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        num_classes = keras.ops.shape(y_pred)[-1]
        labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        one_hot = keras.ops.one_hot(labels, num_classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        config = super().get_config()
        config.update(from_logits=self.from_logits, label_smoothing=self.label_smoothing)
        return config
