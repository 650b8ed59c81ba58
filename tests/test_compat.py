"""Each private Keras/TensorFlow internal in `tltf._compat` still exists and behaves as relied on.

A Keras or TensorFlow release that moves or changes one of them fails here, by name, rather
than somewhere deep in training.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tltf import _compat


def test_in_safe_mode_follows_load_model_safe_mode(tmp_path):
    from keras.src.saving import serialization_lib

    assert serialization_lib.in_safe_mode() is None  # outside any deserialization
    assert _compat.in_safe_mode() is False
    seen = {}

    @keras.saving.register_keras_serializable(package="tltf_test_compat")
    class Probe(keras.layers.Layer):
        @classmethod
        def from_config(cls, config):
            seen[len(seen)] = _compat.in_safe_mode()
            return super().from_config(config)

    model = keras.Sequential([keras.Input((2,)), Probe()])
    path = str(tmp_path / "m.keras")
    model.save(path)
    keras.saving.load_model(path)
    keras.saving.load_model(path, safe_mode=False)
    assert list(seen.values()) == [True, False]


def test_keras_home_is_the_folder_get_file_caches_in():
    from keras.src.backend import config

    assert config.keras_home() == _compat.keras_home()
    expected = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    assert _compat.keras_home() in (expected, os.path.join("/tmp", ".keras"))


def test_is_op_determinism_enabled_reads_the_public_setter():
    assert _compat.is_op_determinism_enabled() is False
    tf.config.experimental.enable_op_determinism()
    try:
        assert _compat.is_op_determinism_enabled() is True
    finally:
        from tensorflow.python.framework import config

        config.disable_op_determinism()
    assert _compat.is_op_determinism_enabled() is False


@pytest.mark.parametrize("distributed", [False, True])
def test_optimizer_variable_index_maps_update_step_variables(distributed):
    # update_step gets the backend's tf.Variable (a replica's component under tf.distribute).
    strategy = (tf.distribute.MirroredStrategy(["/cpu:0"]) if distributed
                else tf.distribute.get_strategy())
    with strategy.scope():
        layer = keras.layers.Dense(2)
        layer.build((None, 3))
        seen = []

        class Recording(keras.optimizers.SGD):
            def update_step(self, gradient, variable, learning_rate):
                assert not isinstance(variable, keras.Variable)
                seen.append(_compat.optimizer_variable_index(self, variable))
                return super().update_step(gradient, variable, learning_rate)

        optimizer = Recording(0.1)
        variables = [layer.kernel, layer.bias]

        @tf.function
        def step():
            grads = [tf.ones_like(v.value) for v in variables]
            optimizer.apply(grads, variables)

        strategy.run(step) if distributed else step()
    assert sorted(seen) == [0, 1]
    np.testing.assert_allclose(layer.bias.numpy(), [-0.1, -0.1])


def test_the_public_layer_walk_finds_every_layer_keras_tracks():
    # runtime._walk_layers replaced Keras' private `_flatten_layers`; they must agree.
    import tltf
    from tltf.training.runtime import _walk_layers

    model = tltf.build_classifier("mobilenet_v2", 3, image_size=32, weights=None,
                                  hidden_units=4)
    walked = _walk_layers(model)
    assert walked[0] is model and len({id(x) for x in walked}) == len(walked)
    assert {id(x) for x in walked} == {id(x) for x in model._flatten_layers(include_self=True)}


def test_keras_still_calls_strategy_reduce_as_fix_multi_worker_reduce_expects():
    # _compat.fix_multi_worker_reduce wraps MultiWorkerMirroredStrategy.reduce for exactly
    # these two Keras calls; when Keras changes them, revisit (or drop) the workaround.
    import inspect

    from keras.src.backend.tensorflow import trainer

    reduce_source = inspect.getsource(trainer.reduce_per_replica)
    assert 'strategy.reduce("MEAN", v, axis=0)' in reduce_source
    build_source = inspect.getsource(trainer.TensorFlowTrainer._maybe_symbolic_build)
    assert "self.distribute_strategy.reduce(" in build_source
    make_source = inspect.getsource(trainer.TensorFlowTrainer._make_function)
    assert 'reduction="auto"' in make_source  # so distribute_reduction_method cannot help


def test_fix_multi_worker_reduce_leaves_other_strategies_alone():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    _compat.fix_multi_worker_reduce(strategy)
    assert "reduce" not in vars(strategy)
