"""Transfer really happens: cats vs dogs with the real MobileNetV2 weights, against weights=None."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tltf.models.classifier import build_classifier
from tltf.training.recipe import fine_tune

SIZE = 128
TRAIN_PER_CLASS, VAL_PER_CLASS = 100, 50


def _load(folder, per_class):
    images, labels = [], []
    for label, cls in enumerate(("cats", "dogs")):
        for f in sorted((folder / cls).glob("*.jpg"))[:per_class]:
            img = tf.io.decode_jpeg(tf.io.read_file(str(f)), channels=3)
            images.append(tf.image.resize(img, (SIZE, SIZE)).numpy())
            labels.append(label)
    return np.stack(images).astype("float32"), np.asarray(labels, "int32")


def _run(weights, train, val):
    keras.utils.set_random_seed(0)
    model = build_classifier("mobilenet_v2", 2, image_size=SIZE, weights=weights)
    result = fine_tune(model, train, val, head_epochs=10, finetune_epochs=1, seed=0, verbose=0)
    return max(result.history["val_accuracy"]), result


@pytest.mark.shared
@pytest.mark.slow
def test_pretrained_weights_transfer_to_cats_and_dogs(cats_dogs_dir):
    xt, yt = _load(cats_dogs_dir / "train", TRAIN_PER_CLASS)
    xv, yv = _load(cats_dogs_dir / "validation", VAL_PER_CLASS)
    train = tf.data.Dataset.from_tensor_slices((xt, yt)).shuffle(len(yt), seed=0).batch(32)
    val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(32)
    pretrained, result = _run("imagenet", train, val)
    scratch, _ = _run(None, train, val)
    assert result.cached_features
    assert pretrained > 0.85, result.history
    assert pretrained > scratch + 0.2, (pretrained, scratch)
