"""Augmentation policies: Keras layers, seeded, inactive at inference, MixUp/CutMix soft labels."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tltf.data.augment import (
    OPS,
    POLICIES,
    augmentation_layer,
    augmentation_layers,
    batch_augmenter,
    default_placement,
)


def _images(n=4, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.mark.parametrize("policy", POLICIES)
def test_policies_run_on_batches(policy):
    layers = augmentation_layers(policy, seed=0)
    assert (len(layers) == 0) == (policy == "none")
    fn = batch_augmenter(policy, seed=0)
    if policy == "none":
        assert fn is None
        return
    x = _images()
    out, labels = fn(tf.constant(x), tf.constant([0, 1, 0, 1]))
    assert out.shape == x.shape and out.dtype == tf.float32
    assert not np.allclose(out, x)
    assert float(tf.reduce_min(out)) >= -1e-3 and float(tf.reduce_max(out)) <= 255 + 1e-3
    assert labels.numpy().tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize("op", [o for o in OPS if o not in ("mixup", "cutmix")])
def test_every_op_is_a_keras_layer(op):
    (layer,) = augmentation_layers([op], seed=1)
    assert isinstance(layer, keras.layers.Layer)
    assert layer(_images(2), training=True).shape == (2, 32, 32, 3)


def test_custom_list_with_kwargs_and_layers():
    custom = keras.layers.RandomCrop(24, 24)
    layers = augmentation_layers(["flip", ("rotation", {"factor": 0.3}), custom], seed=5)
    assert [type(layer).__name__ for layer in layers] == [
        "RandomFlip",
        "RandomRotation",
        "RandomCrop",
    ]
    assert layers[1].factor == (-0.3, 0.3) and layers[2] is custom
    assert layers[0].seed == 5 and layers[1].seed == 6


@pytest.mark.parametrize(
    "policy, error, match",
    [
        ("wild", ValueError, "Expected `augment` to be one of"),
        (["flip", "twirl"], ValueError, "Expected each augmentation op"),
        (42, TypeError, "Expected `augment`"),
    ],
)
def test_unknown_policies_raise(policy, error, match):
    with pytest.raises(error, match=match):
        augmentation_layers(policy)


def test_augmentation_layer_only_active_in_training():
    layer = augmentation_layer("medium", seed=0)
    assert layer.name == "augmentation"
    x = _images()
    assert np.allclose(layer(x, training=False), x)
    assert not np.allclose(layer(x, training=True), x)
    assert augmentation_layer("none") is None and augmentation_layer(None) is None


def test_augmentation_layer_in_a_model_saves_and_predicts_unchanged(tmp_path):
    inputs = keras.Input((32, 32, 3))
    x = augmentation_layer("heavy", seed=0)(inputs)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, outputs)
    images = _images()
    assert np.allclose(model.predict(images, verbose=0), images.mean((1, 2)), atol=1e-3)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    names = [type(layer).__name__ for layer in loaded.get_layer("augmentation").layers]
    assert names == ["RandomFlip", "RandomZoom", "RandAugment", "RandomErasing"]
    assert np.allclose(loaded.predict(images, verbose=0), images.mean((1, 2)), atol=1e-3)


def test_batch_ops_refused_inside_the_model():
    with pytest.raises(ValueError, match="cannot run inside the model"):
        augmentation_layer(["flip", "cutmix"])


def test_batch_ops_need_one_hot():
    with pytest.raises(ValueError, match="one_hot=True"):
        batch_augmenter(["mixup"])


@pytest.mark.parametrize("op", ["mixup", "cutmix"])
def test_mixing_gives_soft_labels(op):
    fn = batch_augmenter([op], seed=0, one_hot=True)
    labels = np.eye(2, dtype="float32")[[0, 1, 0, 1, 0, 1, 0, 1]]
    images, mixed = fn(tf.constant(_images(8)), tf.constant(labels))
    mixed = mixed.numpy()
    assert images.shape == (8, 32, 32, 3)
    assert np.allclose(mixed.sum(1), 1.0, atol=1e-5)
    assert not np.allclose(mixed, labels)


def test_seeded_augmentation_is_reproducible():
    x = tf.constant(_images())
    y = tf.constant([0, 1, 0, 1])
    a = batch_augmenter("medium", seed=7)(x, y)[0]
    b = batch_augmenter("medium", seed=7)(x, y)[0]
    c = batch_augmenter("medium", seed=8)(x, y)[0]
    assert np.allclose(a, b) and not np.allclose(a, c)


def test_seeded_pipeline_is_reproducible():
    from tltf.data import load_arrays

    data = load_arrays(_images(8).astype("uint8"), np.arange(8) % 2)

    def first_batch():
        ds = data.prepare(training=True, batch_size=8, augment="light", seed=3)
        return next(iter(ds))[0].numpy()

    assert np.allclose(first_batch(), first_batch())


def test_default_placement_matches_devices():
    expected = "model" if tf.config.list_logical_devices("GPU") else "data"
    assert default_placement() == expected
