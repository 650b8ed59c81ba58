"""A tiny registered backbone with BatchNorm and tiny learnable data, for the fine_tune tests.

Also imported by `_train_worker.py`, the subprocess the resume-after-kill test runs.
"""

import keras
import numpy as np
import tensorflow as tf

from tltf.backbones.registry import BackboneSpec, get_backbone, list_backbones, register_backbone
from tltf.models.classifier import build_classifier

NAME = "train_tiny"
BLOCKS = 3
SIZE = 32


def _constructor(input_shape, weights=None, pooling="avg"):
    inputs = keras.Input(tuple(input_shape))
    x = inputs
    for i in range(1, BLOCKS + 1):
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name=f"block{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(x), name=NAME)


def tiny_backbone():
    """Registers `train_tiny` once per process and returns its spec."""
    if NAME not in list_backbones():
        register_backbone(BackboneSpec(
            name=NAME, constructor=_constructor, default_size=SIZE, pretrained_sizes=None,
            preprocessing="unit", feature_dim=8,
            blocks=tuple(f"block{i}" for i in range(1, BLOCKS + 1)),
            family="test", min_size=SIZE, description="tiny test backbone for tltf.training.recipe"))
    return get_backbone(NAME)


def tiny_model(seed=0, **kwargs):
    tiny_backbone()
    keras.utils.set_random_seed(seed)
    kwargs.setdefault("dropout", 0.0)
    return build_classifier(NAME, 2, image_size=SIZE, weights=None, **kwargs)


def tiny_arrays(n=32, seed=0):
    """Images in [0, 255] and int labels: class 1 is brighter, so it can be learnt."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype("int32")
    x = rng.uniform(0, 160, (n, SIZE, SIZE, 3)) + 90 * y[:, None, None, None]
    return x.astype("float32"), y


def tiny_data(n=32, batch=16, seed=0):
    x, y = tiny_arrays(n, seed)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
