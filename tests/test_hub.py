"""TF Hub backbones under Keras 3: real SavedModels, real training steps, real round trips."""

import hashlib
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tltf
from tltf.backbones.hub import HubLayer
from tltf.backbones.hub_source import hub_backbone
from tltf.models.parts import backbone_of
from tltf.training.freeze import unfreeze

TF1_HANDLE = "https://tfhub.dev/google/imagenet/mobilenet_v2_035_128/feature_vector/2"


class _ConvBN(tf.Module):
    """A tiny reusable SavedModel in the TF Hub convention: conv + BatchNorm + pooling."""

    def __init__(self, with_training: bool):
        super().__init__()
        self.kernel = tf.Variable(tf.random.stateless_normal([3, 3, 3, 8], (1, 2)) * 0.3,
                                  name="conv/kernel")
        self.gamma = tf.Variable(tf.ones([8]), name="bn/gamma")
        self.beta = tf.Variable(tf.zeros([8]), name="bn/beta")
        self.moving_mean = tf.Variable(tf.fill([8], 0.1), trainable=False, name="bn/moving_mean")
        self.moving_var = tf.Variable(tf.fill([8], 2.0), trainable=False, name="bn/moving_variance")
        spec = tf.TensorSpec([None, None, None, 3], tf.float32)
        if with_training:
            self.call_fn = tf.function(self._forward)
            for training in (True, False):
                self.call_fn.get_concrete_function(spec, training)
        else:
            self.call_fn = tf.function(lambda x: self._forward(x, False), input_signature=[spec])

    def _forward(self, x, training=False):
        y = tf.nn.conv2d(x, self.kernel, 1, "SAME")
        if training:  # training mode updates the moving statistics, as BatchNorm does
            mean, var = tf.nn.moments(y, [0, 1, 2])
            self.moving_mean.assign(0.5 * self.moving_mean + 0.5 * mean)
            self.moving_var.assign(0.5 * self.moving_var + 0.5 * var)
        else:
            mean, var = self.moving_mean, self.moving_var
        y = tf.nn.batch_normalization(y, mean, var, self.beta, self.gamma, 1e-3)
        return tf.nn.relu(y)  # a feature map: the layer pools it


def _save(module, path, hub_attributes):
    if hub_attributes:  # the attributes of tfhub.dev TF2 models ("reusable SavedModel" API)
        root = tf.train.Checkpoint(module=module)
        root.variables = [module.kernel, module.gamma, module.beta, module.moving_mean,
                          module.moving_var]
        root.trainable_variables = [module.kernel, module.gamma, module.beta]
        root.regularization_losses = [
            tf.function(lambda: 1e-3 * tf.reduce_sum(module.kernel**2), input_signature=[])
        ]
    else:
        root = module
    root.__call__ = module.call_fn
    tf.saved_model.save(root, str(path))
    return str(path)


@pytest.fixture(scope="module")
def tf2_with_training(tmp_path_factory):
    return _save(_ConvBN(True), tmp_path_factory.mktemp("hub") / "with_training", True)


@pytest.fixture(scope="module")
def tf2_without_training(tmp_path_factory):
    return _save(_ConvBN(False), tmp_path_factory.mktemp("hub") / "without_training", False)


def _images(n=8, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _hub_layer(model):
    return backbone_of(model).get_layer("hub_savedmodel")


def _values(weights):
    return {w.name: np.array(w.numpy()) for w in weights}


@pytest.mark.parametrize("fixture", ["tf2_with_training", "tf2_without_training"])
def test_savedmodel_variables_become_keras_weights(fixture, request):
    layer = HubLayer(request.getfixturevalue(fixture))
    assert layer.feature_dim == 8 and layer.input_size is None and layer.fine_tunable
    assert sorted(w.name for w in layer.weights) == [
        "bn_beta", "bn_gamma", "bn_moving_mean", "bn_moving_variance", "conv_kernel"]
    assert layer.trainable_weights == []  # frozen by default, like every backbone
    layer.trainable = True
    assert sorted(w.name for w in layer.trainable_weights) == ["bn_beta", "bn_gamma", "conv_kernel"]
    assert sorted(w.name for w in layer.non_trainable_weights) == [
        "bn_moving_mean", "bn_moving_variance"]
    out = layer(_images(2) / 255.0)
    assert out.shape == (2, 8) and out.dtype == tf.float32


@pytest.mark.parametrize("fixture", ["tf2_with_training", "tf2_without_training"])
def test_training_step_updates_wrapped_weights_only_when_unfrozen(fixture, request):
    model = tltf.build_classifier(f"hub:{request.getfixturevalue(fixture)}", 2, image_size=32)
    x, y = _images(), np.arange(8) % 2
    hub_layer = _hub_layer(model)

    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    frozen = _values(hub_layer.weights)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    for name, value in _values(hub_layer.weights).items():
        np.testing.assert_array_equal(value, frozen[name], err_msg=name)

    backbone_of(model).trainable = True
    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    assert {"conv_kernel", "bn_gamma", "bn_beta"} <= {w.name for w in model.trainable_weights}
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    after = _values(hub_layer.weights)
    for name in ("conv_kernel", "bn_gamma", "bn_beta"):
        assert not np.allclose(after[name], frozen[name]), name
    # BatchNorm runs in inference mode: fit's training=True never reaches the SavedModel.
    for name in ("bn_moving_mean", "bn_moving_variance"):
        np.testing.assert_array_equal(after[name], frozen[name], err_msg=name)


def test_regularization_losses_count_only_while_trainable(tf2_with_training):
    layer = HubLayer(tf2_with_training)
    layer(_images(1) / 255.0)
    assert layer.losses == []
    layer.trainable = True
    layer(_images(1) / 255.0)
    assert len(layer.losses) == 1 and float(layer.losses[0]) > 0


def test_keras_round_trip_after_training(tf2_with_training, tmp_path):
    model = tltf.build_classifier(f"hub:{tf2_with_training}", 3, image_size=32)
    backbone_of(model).trainable = True
    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    model.fit(_images(), np.arange(8) % 3, epochs=1, verbose=0)
    path = tmp_path / "hub_model.keras"
    model.save(path)

    # A local SavedModel runs its graph when loaded: the user opts in (tests/
    # test_hostile_loading.py shows the refusal without it).
    loaded = tltf.load_model(path, trust_hub_handles=[tf2_with_training])
    assert _hub_layer(loaded).get_config()["handle"] == tf2_with_training
    x = _images(4, seed=1)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
    # The trained values came from the .keras file, not from the SavedModel on disk.
    np.testing.assert_array_equal(_values(_hub_layer(loaded).weights)["conv_kernel"],
                                  _values(_hub_layer(model).weights)["conv_kernel"])


def test_hub_model_converts_to_tflite(tf2_with_training, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model = tltf.build_classifier(f"hub:{tf2_with_training}", 2, image_size=32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    path = tmp_path / "hub.tflite"
    path.write_bytes(converter.convert())

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    x = _images(1, seed=2)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)


def test_hub_model_works_in_fine_tune(tf2_with_training):
    from tltf.training.recipe import fine_tune

    model = tltf.build_classifier(f"hub:{tf2_with_training}", 2, image_size=32)
    hub_layer = _hub_layer(model)
    before = _values(hub_layer.weights)
    seen = []

    class Watch(keras.callbacks.Callback):  # fine_tune may restore the best epoch at the end
        def on_epoch_end(self, epoch, logs=None):
            seen.append(_values(hub_layer.weights))

    x, y = _images(16), np.arange(16) % 2
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    result = fine_tune(model, data, data, head_epochs=1, finetune_epochs=2,
                       unfreeze="top_blocks:1", finetune_lr=0.1, early_stopping=False, seed=0,
                       callbacks=[Watch()], verbose=0)
    assert result.history["phase"][-1] == 2
    assert any(not np.array_equal(v["conv_kernel"], before["conv_kernel"]) for v in seen)
    for values in seen:
        np.testing.assert_array_equal(values["bn_moving_mean"], before["bn_moving_mean"])


def test_hub_layer_computes_in_float32_under_mixed_precision(tf2_without_training):
    keras.config.set_dtype_policy("mixed_bfloat16")  # restored by conftest
    model = tltf.build_classifier(f"hub:{tf2_without_training}", 2, image_size=32)
    assert _hub_layer(model).compute_dtype == "float32"
    assert model.predict(_images(2), verbose=0).shape == (2, 2)


def test_spec_from_a_local_savedmodel(tf2_without_training):
    spec = tltf.get_backbone(f"hub:{tf2_without_training}")
    assert spec.name == f"hub:{tf2_without_training}"
    assert (spec.feature_dim, spec.preprocessing, spec.pretrained_sizes) == (8, "unit", None)
    net = spec.constructor(input_shape=(48, 48, 3), pooling="max")
    assert net.output_shape == (None, 8)
    with pytest.warns(UserWarning, match="only 1"):
        unfreeze(tltf.build_classifier(spec, 2, image_size=32), "top_blocks:2")


def test_known_hub_backbones_are_listed():
    names = tltf.list_backbones("hub:*")
    for expected in ("hub:mobilenet_v2_100_224", "hub:mobilenet_v3_large_100_224",
                     "hub:efficientnet_v2_b0", "hub:bit_m_r50x1"):
        assert expected in names
    for name in names:
        spec = tltf.get_backbone(name)
        assert spec.preprocessing == "unit" and spec.family == "hub"
        assert spec.constructor.handle.startswith("https://tfhub.dev/")


# The real TF1 Hub module from ../shared ----------------------------------------------------


@pytest.mark.shared
def test_tf1_module_extracts_features(hub_module_dir):
    model = tltf.build_classifier(f"hub:{hub_module_dir}", 2)
    assert model.input_shape == (None, 128, 128, 3)  # the module's fixed size is the default
    layer = _hub_layer(model)
    assert (layer.feature_dim, layer.input_size, layer.fine_tunable) == (1280, (128, 128), False)
    assert len(layer.weights) == 260 and layer.trainable_weights == []
    # Features equal the module's own signature on [0, 1] images: preprocessing "unit".
    x = _images(2, 128)
    module = tf.saved_model.load(str(hub_module_dir), tags=[])
    expected = module.signatures["default"](images=tf.constant(x / 255.0))["default"]
    got = backbone_of(model)(x / 255.0)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.shared
def test_tf1_module_refuses_fine_tuning_with_the_reason(hub_module_dir):
    model = tltf.build_classifier(f"hub:{hub_module_dir}", 2)
    with pytest.raises(ValueError, match="legacy TF1 Hub format.*cannot run"):
        backbone_of(model).trainable = True
    with pytest.raises(ValueError, match="cannot be fine-tuned"):
        HubLayer(str(hub_module_dir), trainable=True)


@pytest.mark.shared
def test_tf1_module_refuses_another_size(hub_module_dir):
    with pytest.raises(ValueError, match="takes 128x128 images only"):
        hub_backbone(str(hub_module_dir), image_size=160)
    spec = hub_backbone(str(hub_module_dir))
    with pytest.raises(ValueError, match="takes 128x128 images only"):
        spec.constructor(input_shape=(160, 160, 3))


@pytest.mark.shared
def test_handle_resolves_through_the_hub_cache(hub_module_dir, tmp_path, monkeypatch):
    # tensorflow_hub's own resolver: the cache folder is the SHA1 of the handle URL.
    cache = tmp_path / "tfhub_cache"
    cache.mkdir()
    os.symlink(hub_module_dir, cache / hashlib.sha1(TF1_HANDLE.encode()).hexdigest())
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    model = tltf.build_classifier("hub:mobilenet_v2_035_128_tf1", 2)
    assert _hub_layer(model).handle == TF1_HANDLE
    by_path = tltf.build_classifier(f"hub:{hub_module_dir}", 2)
    x = _images(2, 128)
    np.testing.assert_allclose(backbone_of(model)(x), backbone_of(by_path)(x), atol=1e-6)


@pytest.mark.shared
def test_tf1_module_round_trips_through_keras_file(hub_module_dir, tmp_path):
    model = tltf.build_classifier(f"hub:{hub_module_dir}", 2)
    model.save(tmp_path / "tf1.keras")
    loaded = keras.saving.load_model(tmp_path / "tf1.keras", safe_mode=False)
    x = _images(2, 128)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)


# Errors -------------------------------------------------------------------------------------


def test_missing_directory_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a URL nor an existing directory"):
        HubLayer(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="holds no SavedModel"):
        HubLayer(str(tmp_path))


def test_unreachable_handle_explains_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="TFHUB_CACHE_DIR"):
        HubLayer("http://127.0.0.1:9/no/such/model/1")


def test_bad_arguments_raise(tf2_without_training):
    with pytest.raises(ValueError, match="`pooling` must be"):
        HubLayer(tf2_without_training, pooling="sum")
    with pytest.raises(ValueError, match="has no signature 'nope'"):
        HubLayer(tf2_without_training, signature="nope")
    spec = hub_backbone(tf2_without_training)
    with pytest.raises(ValueError, match="always carries the weights"):
        spec.constructor(input_shape=(32, 32, 3), weights=None)


def test_several_outputs_need_output_key(tmp_path):
    class TwoHeads(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3])])
        def __call__(self, x):
            return {"a": tf.reduce_mean(x, [1, 2]), "b": tf.reduce_max(x, [1, 2, 3])}

    tf.saved_model.save(TwoHeads(), str(tmp_path))
    with pytest.raises(ValueError, match="several outputs"):
        HubLayer(str(tmp_path))
    assert HubLayer(str(tmp_path), output_key="a").feature_dim == 3
    with pytest.raises(ValueError, match="tensor of rank 1"):
        HubLayer(str(tmp_path), output_key="b")


def test_unknown_remote_handle_is_refused_in_safe_mode():
    config = {"module": "tltf.backbones.hub", "class_name": "HubLayer", "registered_name": "tltf>HubLayer",
              "config": {"handle": "https://example.com/model.tar.gz"}}
    with pytest.raises(ValueError, match="safe_mode=False"):
        keras.saving.deserialize_keras_object(config)  # safe mode, as in load_model


@pytest.mark.slow
def test_hub_backbone_in_the_tuner(tf2_with_training, tmp_path):
    from tltf.tune.tuner import search

    x, y = _images(16), np.arange(16) % 2
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    result = search(data, data, num_classes=2, backbone=f"hub:{tf2_with_training}",
                    image_size=32, tuner="random", max_trials=2, unfreeze_blocks=[0, 1],
                    head_epochs=1, finetune_epochs=1, directory=tmp_path, verbose=0)
    assert [t["status"] for t in result.trials] == ["COMPLETED", "COMPLETED"]
    assert _hub_layer(result.best_model).handle == tf2_with_training
