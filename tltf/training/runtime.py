"""Where and how a model runs: rebuilding it under a dtype policy or strategy, and seeds.

`fine_tune` uses these pieces; they are public so that a user who writes a custom loop gets
the same behaviour. `set_seed` seeds the global random generators and, when asked, turns on
TensorFlow's op determinism for the rest of the process (TensorFlow offers no way to turn it
off again). Precision and XLA rules live in `tltf.models.precision`, strategies and backups
in `tltf.training.distribute`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tltf._backend import check_backend
from tltf.models.precision import dtype_policy_scope
from tltf.training.distribute import resolve_strategy

check_backend()  # Keras must run on TensorFlow before this module builds anything

__all__ = ["match_runtime", "rebuild_with_policy", "set_seed"]


def _replace_policy(config, source: str, target: str):
    """Recursively replaces serialized dtype policies named `source` by `target`."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and isinstance(config.get("config"), dict):
            if config["config"].get("name") == source:
                return {**config, "config": {**config["config"], "name": target}}
            return config
        return {key: _replace_policy(value, source, target) for key, value in config.items()}
    if isinstance(config, list):
        return [_replace_policy(value, source, target) for value in config]
    return config


def _model_policy_name(model: keras.Model) -> str:
    return keras.dtype_policies.get(model.dtype_policy).name


def rebuild_with_policy(
    model: keras.Model,
    policy: str | keras.DTypePolicy,
    *,
    strategy: tf.distribute.Strategy | None = None,
) -> keras.Model:
    """Clones a built functional model under a dtype policy and copies its weights.

    Keras fixes a layer's dtype policy when the layer is created, so switching a float32
    model to mixed precision means building it again. Every layer that had the model's own
    policy gets `policy`; layers built with another policy keep theirs. A layer that must
    compute in float32 inside a float32 model must say so itself, as tltf's
    `ClassificationHead` does for its output Dense (it stays float32 under any policy).
    Variables stay float32 under mixed policies, so the
    weights copy over exactly. `trainable` flags (a frozen backbone, non-trainable
    BatchNormalization) carry over; optimizer state does not: compile the new model.

    Under `mixed_float16`, `model.compile` wraps the optimizer in
    `keras.optimizers.LossScaleOptimizer` (dynamic loss scaling) because the rebuilt model's
    own policy is `mixed_float16`; keep `compile`'s default `auto_scale_loss=True`.

    The copy is a new object: copy trained weights back with
    `model.set_weights(rebuilt.get_weights())` if the caller's model must hold them.

    Args:
        model: keras.Model. A built functional model (e.g. from `build_classifier`).
        policy: str or `keras.DTypePolicy`. The dtype policy to build under, e.g.
            `"mixed_bfloat16"`.
        strategy: `tf.distribute.Strategy` or None. If given, the copy is built in its
            `scope()` so that its variables are distributed. Defaults to None (current).

    Returns:
        A new keras.Model with the same architecture, names and weights.

    Raises:
        TypeError: if `model` is not a built functional `keras.Model`.
        ValueError: if `policy` is not a dtype policy Keras knows.

    Example:

    >>> inputs = keras.Input((8,))
    >>> outputs = keras.layers.Dense(2)(keras.layers.Dense(4)(inputs))
    >>> model = keras.Model(inputs, outputs)
    >>> mixed = rebuild_with_policy(model, "mixed_bfloat16")
    >>> [layer.compute_dtype for layer in mixed.layers[1:]]
    ['bfloat16', 'bfloat16']
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise TypeError(
            "`model` must be a functional keras.Model, such as one returned by "
            f"`build_classifier`. Received: model={type(model).__name__}"
        )
    if not model.built:
        raise TypeError(
            "`model` must be built (call it once or give it an Input). "
            f"Received: model={model.name}"
        )
    strategy = resolve_strategy(strategy)
    with dtype_policy_scope(policy):
        target = keras.config.dtype_policy().name
        source = _model_policy_name(model)

        def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
            config = _replace_policy(layer.get_config(), source, target)
            return layer.__class__.from_config(config)

        with strategy.scope():
            rebuilt = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
            rebuilt.set_weights(model.get_weights())
    _copy_trainable(model, rebuilt)
    return rebuilt


def _walk_layers(layer: keras.Layer) -> list[keras.Layer]:
    """`layer`, then every layer nested in it, each once, parents before their children.

    Through public attributes only (Keras' `_flatten_layers` is private): a model's `layers`,
    and the layers (or lists, tuples and dicts of layers) a custom layer holds in its public
    attributes, which is how Keras tracks them (tltf's head holds its `Dense` layers so).
    """
    found, seen = [], set()

    def children(obj) -> list:
        if isinstance(obj, keras.Model):
            return list(obj.layers)
        nested = []
        for name, value in vars(obj).items():
            if name.startswith("_"):
                continue
            if isinstance(value, dict):
                value = list(value.values())
            if isinstance(value, (list, tuple)):
                nested += [v for v in value if isinstance(v, keras.Layer)]
            elif isinstance(value, keras.Layer):
                nested.append(value)
        return nested

    def visit(obj) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        found.append(obj)
        for child in children(obj):
            visit(child)

    visit(layer)
    return found


def _copy_trainable(source: keras.Model, target: keras.Model) -> None:
    """Copies every `trainable` flag, parents first (setting a parent's flag sets its children).

    Layer configs carry `trainable`, but a nested model (the backbone) loses its own flag when
    cloned, which would unfreeze a frozen backbone.
    """
    pairs = zip(_walk_layers(source), _walk_layers(target), strict=True)
    for before, after in pairs:
        after.trainable = before.trainable


def _created_in(model: keras.Model, strategy: tf.distribute.Strategy) -> bool:
    weights = model.weights
    if not weights:
        return True
    return all(strategy.extended.variable_created_in_scope(w.value) for w in weights)


def match_runtime(
    model: keras.Model,
    *,
    dtype_policy: str | keras.DTypePolicy | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> keras.Model:
    """Returns `model` itself if it already runs under the policy and strategy, else a copy.

    This is the step a training routine takes before `compile`: a float32 model asked to
    train in `"mixed_float16"`, or a model built outside `strategy.scope()`, is rebuilt with
    `rebuild_with_policy` (same weights, new object); a model that already matches is
    returned unchanged (no copy, no cost).

    Args:
        model: keras.Model. A built functional model.
        dtype_policy: str, `keras.DTypePolicy` or None. The wanted policy; None keeps the
            model's own. Defaults to None.
        strategy: `tf.distribute.Strategy` or None. The strategy to train under. Defaults to
            None (the current strategy).

    Returns:
        keras.Model, `model` or a rebuilt copy. Compare with `is` to know which.

    Raises:
        TypeError: if a rebuild is needed and `model` is not a built functional model.
        ValueError: if `dtype_policy` is not a dtype policy Keras knows.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> match_runtime(model) is model
    True
    """
    strategy = resolve_strategy(strategy)
    wanted = _model_policy_name(model)
    if dtype_policy is not None:
        with dtype_policy_scope(dtype_policy):
            wanted = keras.config.dtype_policy().name
    if wanted == _model_policy_name(model) and _created_in(model, strategy):
        return model
    return rebuild_with_policy(model, wanted, strategy=strategy)


def set_seed(seed: int, *, deterministic: bool = True) -> None:
    """Seeds Python, NumPy and TensorFlow; optionally makes TensorFlow ops deterministic.

    `keras.utils.set_random_seed(seed)` makes weight initialisation, dropout, shuffling and
    augmentation repeat. On CPU, the same seed then gives the same history only if ops also
    run deterministically (multi-threaded reductions can add floats in a different order):
    `deterministic=True` calls `tf.config.experimental.enable_op_determinism()`.

    Op determinism is GLOBAL and PERMANENT for the process: TensorFlow has no call to turn
    it off again. It makes some ops slower, disables XLA auto-compilation in Keras, and makes
    ops without a deterministic kernel (mostly on GPU) raise. Use `deterministic=False` to
    only seed.

    Args:
        seed: int >= 0.
        deterministic: bool. Whether to enable TensorFlow op determinism. Defaults to True.

    Raises:
        ValueError: if `seed` is not a non-negative int.
        TypeError: if `deterministic` is not a bool.

    Example:

    >>> set_seed(0, deterministic=False)
    >>> a = keras.random.uniform((2,), seed=keras.random.SeedGenerator(1))
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(
            "`seed` must be a non-negative int; use the same value to repeat a run. "
            f"Received: seed={seed!r}"
        )
    if not isinstance(deterministic, bool):
        raise TypeError(
            "`deterministic` must be True (also enable TensorFlow op determinism, for the "
            f"whole process) or False (only seed). Received: deterministic={deterministic!r}"
        )
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
