"""A tiny registered backbone and tiny data for the tune tests (also used by their workers)."""

import keras
import numpy as np
import tensorflow as tf

from tltf.backbones.registry import BackboneSpec, get_backbone, list_backbones, register_backbone

NAME = "tune_tiny"
BLOCKS = 3


def _constructor(input_shape, weights=None, pooling="avg"):
    # Three conv blocks with BatchNorm: 2 trainable variables per block (kernel, bias) once
    # unfrozen, BatchNorm kept frozen by tltf.training.freeze.
    inputs = keras.Input(tuple(input_shape))
    x = inputs
    for i in range(1, BLOCKS + 1):
        x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name=f"block{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
    pool = keras.layers.GlobalMaxPooling2D if pooling == "max" else keras.layers.GlobalAveragePooling2D
    return keras.Model(inputs, pool(name="pool")(x), name=NAME)


def tiny_backbone():
    """Registers `tune_tiny` once per process and returns its spec."""
    if NAME not in list_backbones():
        register_backbone(BackboneSpec(
            name=NAME, constructor=_constructor, default_size=32, pretrained_sizes=None,
            preprocessing="unit", feature_dim=4, blocks=tuple(f"block{i}" for i in range(1, BLOCKS + 1)),
            family="test", min_size=32, description="tiny test backbone for tltf.tune.tuner"))
    return get_backbone(NAME)


def tiny_data(n=16, batch=8, seed=0):
    """Batched (images in [0, 255], int labels): class 1 is brighter, so it can be learnt."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.uniform(0, 160, (n, 32, 32, 3)) + 90 * y[:, None, None, None]
    return tf.data.Dataset.from_tensor_slices((x.astype("float32"), y.astype("int32"))).batch(batch)
