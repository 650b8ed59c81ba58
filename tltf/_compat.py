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
    name. tltf keeps XLA off under op determinism (`tltf.models.precision.resolve_jit_compile`), since
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


def fix_multi_worker_reduce(strategy) -> None:
    """Lets Keras 3 `fit` run under `MultiWorkerMirroredStrategy`; changes `strategy` in place.

    Keras' TensorFlow trainer calls `strategy.reduce` in two ways that
    `MultiWorkerMirroredStrategy` rejects: on the nested `(images, labels)` batch it uses to
    build the model (`_maybe_symbolic_build`), and with `axis=0` on the scalar loss and
    metrics of every step (`reduce_per_replica`, which hard-codes `reduction="auto"`, so the
    public `Model.distribute_reduction_method` does not reach it). The error is "Invalid
    reduction dimension 0 for input with 0 dimensions" (tensorflow/tensorflow#72388). This
    reduces each leaf of a nest on its own, and scalars over replicas (`axis=None`); any
    other call goes to the strategy's own `reduce` unchanged. Applied once per strategy.

    Why in place: Keras takes the strategy from the `scope()` the model is built in and calls
    that object's `reduce`, so no wrapper object can stand in for it; the caller's strategy
    is the only place the fix can live. Other strategies are left untouched.
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    if getattr(strategy, "_tltf_reduce_fixed", False):
        return
    original = strategy.reduce

    def reduce(reduce_op, value, axis):
        def reduce_leaf(leaf):
            local = strategy.experimental_local_results(leaf)[0]
            leaf_axis = axis if getattr(local.shape, "rank", None) else None
            return original(reduce_op, leaf, axis=leaf_axis)

        if isinstance(value, (tuple, list, dict)):
            return tf.nest.map_structure(reduce_leaf, value)
        return reduce_leaf(value)

    strategy.reduce = reduce
    strategy._tltf_reduce_fixed = True
