"""build_classifier and compile_classifier: the model contract users rely on."""

import urllib.error

import keras
import numpy as np
import pytest

from tltf import build_classifier, compile_classifier
from tltf.models.losses import SparseCategoricalCrossentropy
from tltf.models.parts import backbone_of, head_of, inference_model, spec_of


def _pixels(n=4, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_model_takes_raw_pixels_and_has_the_documented_layers():
    model = build_classifier("mobilenet_v2", 3, image_size=32, weights=None,
                             class_names=["a", "b", "c"])
    assert [layer.name for layer in model.layers] == ["image", "preprocessing", "backbone", "head"]
    assert model.input_shape == (None, 32, 32, 3)
    assert backbone_of(model).trainable is False
    assert spec_of(model).name == "mobilenet_v2"
    assert head_of(model).class_names == ["a", "b", "c"]
    uint8 = _pixels().astype("uint8")
    np.testing.assert_allclose(model(uint8), model(uint8.astype("float32")), atol=1e-6)


def test_rebuilding_in_a_loop_keeps_names_and_globals():
    policy, fmt = keras.config.dtype_policy().name, keras.config.image_data_format()
    for _ in range(3):
        model = build_classifier("mobilenet_v2", 2, image_size=32, weights=None)
        assert [layer.name for layer in model.layers][1:] == ["preprocessing", "backbone", "head"]
    assert keras.config.dtype_policy().name == policy
    assert keras.config.image_data_format() == fmt


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "efficientnet_b0", "resnet50", "convnext_tiny"])
def test_keras_file_round_trip_gives_identical_predictions(tmp_path, backbone):
    model = build_classifier(backbone, 3, image_size=32, weights=None, hidden_units=8,
                             class_names=["x", "y", "z"])
    compile_classifier(model, label_smoothing=0.1)
    if backbone == "mobilenet_v2":  # one trained model is enough to cover optimizer state
        model.fit(_pixels(), np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    images = _pixels(seed=3)
    np.testing.assert_array_equal(loaded(images, training=False), model(images, training=False))
    assert head_of(loaded).class_names == ["x", "y", "z"]
    assert spec_of(loaded).name == backbone
    assert loaded.loss.label_smoothing == 0.1


def test_logits_head_gets_a_from_logits_loss_and_mismatch_raises():
    model = build_classifier("mobilenet_v2", 4, image_size=32, weights=None, output="logits")
    compile_classifier(model)
    assert model.loss.from_logits is True
    with pytest.raises(ValueError, match="head emits logits but the loss was built with from_logits=False"):
        compile_classifier(model, loss=keras.losses.SparseCategoricalCrossentropy())
    probs = build_classifier("mobilenet_v2", 4, image_size=32, weights=None)
    with pytest.raises(ValueError, match="emits probabilities"):
        compile_classifier(probs, loss=keras.losses.CategoricalCrossentropy(from_logits=True))


def test_label_formats_pick_loss_and_metrics():
    model = build_classifier("mobilenet_v2", 10, image_size=32, weights=None)
    compile_classifier(model, label_format="one_hot")
    assert isinstance(model.loss, keras.losses.CategoricalCrossentropy)
    compile_classifier(model)
    assert isinstance(model.loss, SparseCategoricalCrossentropy)
    history = model.fit(_pixels(), np.array([0, 1, 2, 9]), epochs=1, verbose=0)
    assert {"accuracy", "top5_accuracy"} <= set(history.history)
    with pytest.raises(ValueError, match="single-label \\(softmax\\) but the labels are 'multi_hot'"):
        compile_classifier(model, label_format="multi_hot")
    with pytest.raises(ValueError, match="`label_format` must be one of"):
        compile_classifier(model, label_format="onehot")


def test_multi_label_head_uses_sigmoid_and_binary_loss():
    model = build_classifier("mobilenet_v2", 3, image_size=32, weights=None, multi_label=True)
    out = np.asarray(model(_pixels()))
    assert np.all((out > 0) & (out < 1)) and not np.allclose(out.sum(axis=1), 1.0)
    compile_classifier(model)
    assert isinstance(model.loss, keras.losses.BinaryCrossentropy)
    labels = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], "float32")
    model.fit(_pixels(), labels, epochs=1, verbose=0)


def test_label_smoothing_loss_matches_keras_categorical():
    y = np.array([0, 2, 1])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]], "float32")
    ours = SparseCategoricalCrossentropy(label_smoothing=0.2)(y, p)
    reference = keras.losses.CategoricalCrossentropy(label_smoothing=0.2)(np.eye(3)[y], p)
    np.testing.assert_allclose(float(ours), float(reference), rtol=1e-6)
    with pytest.raises(ValueError, match="`label_smoothing` must be in"):
        SparseCategoricalCrossentropy(label_smoothing=1.0)


def test_custom_keras_backbone_is_pooled_and_sizes_are_checked():
    inputs = keras.Input((40, 40, 3))
    outputs = keras.layers.Conv2D(6, 3)(keras.layers.Rescaling(1 / 255)(inputs))
    net = keras.Model(inputs, outputs, name="my_net")
    model = build_classifier(net, 2, weights=None)
    assert backbone_of(model).output_shape == (None, 6)
    assert spec_of(model) is None
    assert model(_pixels(size=40)).shape == (4, 2)
    with pytest.raises(ValueError, match="takes 40x40 images"):
        build_classifier(net, 2, image_size=64)


def test_dtype_policy_is_applied_while_building_and_restored():
    before = keras.config.dtype_policy().name
    model = build_classifier("mobilenet_v2", 2, image_size=32, weights=None,
                             dtype_policy="mixed_bfloat16")
    assert keras.config.dtype_policy().name == before
    assert backbone_of(model).layers[1].compute_dtype == "bfloat16"
    assert head_of(model).predictions.compute_dtype == "float32"
    assert model(_pixels()).dtype == "float32"


def test_inference_model_is_the_model_when_there_is_no_augmentation():
    model = build_classifier("mobilenet_v2", 2, image_size=32, weights=None)
    assert inference_model(model) is model


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(num_classes=1), ValueError, "at least 2 classes"),
        (dict(num_classes=0), ValueError, "`num_classes` must be a positive integer"),
        (dict(num_classes=3, class_names=["a", "b"]), ValueError, "`class_names` has 2 names"),
        (dict(output="softmax"), ValueError, "`output` must be one of"),
        (dict(pooling="mean"), ValueError, "`pooling` must be 'avg' or 'max'"),
        (dict(dropout=1.5), ValueError, "`dropout` must be in"),
        (dict(image_size=16, weights=None), ValueError, "at least 32x32 pixels"),
        (dict(image_size="big", weights=None), ValueError, "`image_size` must be an int"),
        (dict(image_size=100, weights="imagenet"), ValueError, r"only for square sizes \[96, 128, 160, 192, 224\].*image_size=96"),
        (dict(image_size=(96, 128), weights="imagenet"), ValueError, "only for square sizes"),
        (dict(weights="/no/such/file.h5"), FileNotFoundError, "'/no/such/file.h5' does not exist"),
        (dict(weights=3), ValueError, "`weights` must be 'imagenet'"),
    ],
)
def test_documented_errors(kwargs, error, match):
    kwargs = {"num_classes": 2, "image_size": 96, "weights": None} | kwargs
    num_classes = kwargs.pop("num_classes")
    with pytest.raises(error, match=match):
        build_classifier("mobilenet_v2", num_classes, **kwargs)


def test_missing_imagenet_weights_name_the_file_and_folder(monkeypatch, keras_home):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", offline)
    with pytest.raises(FileNotFoundError,
                       match=r"weights_mobilenet_v3_small_224_0\.75_float_no_top.*models"):
        build_classifier("mobilenet_v3_small_075", 2, image_size=32)


def test_model_not_built_by_tltf_is_rejected():
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="not built by `tltf.build_classifier`"):
        head_of(plain)


@pytest.mark.shared
def test_allow_other_size_uses_the_default_size_weights_on_purpose(imagenet_weights):
    # Keras loads the default size's file (224) for any size outside its table, as documented;
    # the offline files for 96-192 are copies of the 224 file, so only 224 is a true reference.
    model = build_classifier("mobilenet_v2", 2, image_size=112, allow_other_size=True)
    reference = build_classifier("mobilenet_v2", 2, image_size=224)
    for a, b in zip(backbone_of(model).weights, backbone_of(reference).weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def _load(paths, size):
    import tensorflow as tf

    images = []
    for path in paths:
        image = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3)
        images.append(tf.image.resize(image, (size, size), antialias=True).numpy())
    return np.stack(images)


def _centroid_accuracy(model, train, train_y, test, test_y):
    preprocess, backbone = model.get_layer("preprocessing"), backbone_of(model)
    embed = lambda x: np.array(backbone(preprocess(x), training=False))  # noqa: E731
    f_train, f_test = embed(train), embed(test)
    f_train /= np.linalg.norm(f_train, axis=1, keepdims=True) + 1e-9
    f_test /= np.linalg.norm(f_test, axis=1, keepdims=True) + 1e-9
    centroids = np.stack([f_train[train_y == c].mean(0) for c in (0, 1)])
    return float(np.mean(np.argmax(f_test @ centroids.T, axis=1) == test_y))


@pytest.mark.shared
@pytest.mark.slow
def test_real_imagenet_weights_separate_cats_from_dogs(cats_dogs_dir):
    n = 40
    paths, labels = [], []
    for split in ("train", "validation"):
        for label, cls in enumerate(("cats", "dogs")):
            files = sorted((cats_dogs_dir / split / cls).glob("*.jpg"))[:n]
            paths.append(files)
            labels.append(np.full(len(files), label))
    train = _load(paths[0] + paths[1], 160)
    test = _load(paths[2] + paths[3], 160)
    train_y, test_y = np.concatenate(labels[:2]), np.concatenate(labels[2:])

    pretrained = build_classifier("mobilenet_v2", 2, image_size=160)  # offline, via KERAS_HOME
    random = build_classifier("mobilenet_v2", 2, image_size=160, weights=None)
    acc_pretrained = _centroid_accuracy(pretrained, train, train_y, test, test_y)
    acc_random = _centroid_accuracy(random, train, train_y, test, test_y)
    assert acc_pretrained >= 0.9, acc_pretrained
    assert acc_pretrained - acc_random >= 0.2, (acc_pretrained, acc_random)
