"""Private Keras internals that tltf relies on, each with the reason it has no public twin.

This is the one place where tltf imports `keras.src` or `tensorflow.python` or touches a
private attribute of a Keras object; a Keras or TensorFlow release that moves a name breaks
here, loudly (tests/test_compat.py), and nowhere else.
"""

from __future__ import annotations

import os

__all__: list[str] = []


def in_safe_mode() -> bool:
    """Whether Keras is deserializing a config in safe mode right now.

    Keras keeps the flag of `keras.saving.load_model(..., safe_mode=...)` in a private global
    (`serialization_lib.in_safe_mode`, read by `keras.layers.Lambda` and `TFSMLayer` too) and
    has no public accessor. It is `True` while a config is deserialized in safe mode (the
    default of `load_model`, `deserialize_keras_object` and the nested layers of
    `Model.from_config`), `False` after the caller opted out (`safe_mode=False`,
    `keras.config.enable_unsafe_deserialization()`), and `None` outside any deserialization
    (building or cloning layers in memory), which counts as not safe mode here.
    """
    try:
        from keras.src.saving.serialization_lib import in_safe_mode as keras_in_safe_mode
    except ImportError:  # pragma: no cover - a Keras layout we do not know: refuse, not run
        return True
    return bool(keras_in_safe_mode())


def keras_home() -> str:
    """The folder Keras caches downloads in (`~/.keras`, or `$KERAS_HOME`).

    `keras.utils.get_file` downloads backbone weights under this folder; tltf names it in the
    error a user sees offline. Keras computes it once, at import, from `KERAS_HOME` and falls
    back to `/tmp/.keras` when the home folder is not writable; only the private
    `keras.src.backend.config.keras_home` returns the result (it says "Private accessor" in
    its source), so reading the environment variable again could name another folder. No
    upstream issue.
    """
    try:
        from keras.src.backend.config import keras_home as keras_keras_home
    except ImportError:  # pragma: no cover - a Keras layout we do not know: Keras' own rule
        return os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return keras_keras_home()


def is_op_determinism_enabled() -> bool:
    """Whether `tf.config.experimental.enable_op_determinism()` is in force.

    TensorFlow exports the setter only; the getter
    (`tensorflow.python.framework.config.is_op_determinism_enabled`) has no `tf.config`
    name. tltf keeps XLA off under op determinism (`runtime.resolve_jit_compile`), since
    several XLA kernels have no deterministic version. No upstream issue.
    """
    from tensorflow.python.framework.config import (
        is_op_determinism_enabled as tf_is_op_determinism_enabled,
    )

    return bool(tf_is_op_determinism_enabled())


def optimizer_variable_index(optimizer, variable) -> int:
    """The position of `variable` in the variables `optimizer` was built with.

    Inside `update_step` Keras passes the backend's variable (a `tf.Variable`, one replica's
    component under `tf.distribute`), not the `keras.Variable`, so it has no `path` and no
    public key. Keras' own optimizers (Adam, SGD, ...) and the custom-optimizer example in
    `keras.optimizers.Optimizer`'s docstring map it back with the private
    `_get_variable_index`, which also resolves distributed components; tltf's
    `DiscriminativeAdam` uses it to find a variable's learning-rate factor. No upstream
    issue.
    """
    return optimizer._get_variable_index(variable)
