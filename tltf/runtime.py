"""Where and how a model runs: mixed precision, XLA, `tf.distribute` strategies, seeds.

`fine_tune` uses these pieces; they are public so that a user who writes a custom loop gets
the same behaviour. The global Keras dtype policy only changes inside a `with` block
(`dtype_policy_scope`). `set_seed` seeds the global random generators and, when asked, turns
on TensorFlow's op determinism for the rest of the process (TensorFlow offers no way to turn
it off again).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator

import keras
import tensorflow as tf

from tltf import _compat
from tltf._backend import check_backend

check_backend()  # Keras must run on TensorFlow before this module builds anything

__all__ = [
    "backup_and_restore",
    "dtype_policy_scope",
    "global_batch_size",
    "is_chief",
    "match_runtime",
    "rebuild_with_policy",
    "resolve_jit_compile",
    "resolve_mixed_precision",
    "resolve_strategy",
    "set_seed",
]

# User-facing option -> Keras dtype policy name.
_PRECISIONS = {
    "float32": "float32",
    "float16": "mixed_float16",
    "bfloat16": "mixed_bfloat16",
    "mixed_float16": "mixed_float16",
    "mixed_bfloat16": "mixed_bfloat16",
}


def _gpu_compute_capabilities() -> list[tuple[int, int]]:
    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability")
        if capability is not None:  # None on non-CUDA GPUs (ROCm, Metal)
            capabilities.append(tuple(capability))
    return capabilities


def resolve_mixed_precision(option: str = "auto") -> str:
    """Turns a `mixed_precision=` option into a Keras dtype policy name.

    `"auto"` picks what is fastest without changing results in a way that matters:

    - every visible GPU is CUDA with compute capability >= 8.0 (Ampere and newer):
      `"mixed_bfloat16"`. These GPUs run bfloat16 on their tensor cores as fast as float16,
      and bfloat16 keeps float32's exponent range, so no loss scaling is needed.
    - CUDA GPUs with compute capability 7.x (Volta, Turing): `"mixed_float16"`, the 16-bit
      type their tensor cores accelerate (trained with dynamic loss scaling).
    - anything else (CPU, older GPUs, non-CUDA GPUs): `"float32"`. On these, 16-bit compute
      is not faster (TensorFlow mixed precision guide) and float16 is emulated.

    Explicit choices are `"float32"`, `"float16"` (= `"mixed_float16"`) and `"bfloat16"`
    (= `"mixed_bfloat16"`): variables stay float32, layers compute in the 16-bit type, and
    the classification head's output stays float32.

    Args:
        option: str. One of `"auto"`, `"float32"`, `"float16"`, `"bfloat16"`,
            `"mixed_float16"`, `"mixed_bfloat16"`. Defaults to `"auto"`.

    Returns:
        The Keras dtype policy name: `"float32"`, `"mixed_float16"` or `"mixed_bfloat16"`.

    Raises:
        ValueError: if `option` is not one of the values above.

    Example:

    >>> resolve_mixed_precision("bfloat16")
    'mixed_bfloat16'
    >>> resolve_mixed_precision("auto")  # on a machine without a GPU
    'float32'
    """
    if isinstance(option, str) and option in _PRECISIONS:
        return _PRECISIONS[option]
    if option != "auto" or not isinstance(option, str):
        raise ValueError(
            "`mixed_precision` must be 'auto', 'float32', 'float16', 'bfloat16', "
            "'mixed_float16' or 'mixed_bfloat16'. Use 'float32' to turn mixed precision "
            f"off. Received: mixed_precision={option!r}"
        )
    capabilities = _gpu_compute_capabilities()
    if not capabilities or len(capabilities) != len(tf.config.list_physical_devices("GPU")):
        return "float32"
    slowest = min(capabilities)
    if slowest >= (8, 0):
        return "mixed_bfloat16"
    if slowest >= (7, 0):
        return "mixed_float16"
    return "float32"


@contextlib.contextmanager
def dtype_policy_scope(policy: str | keras.DTypePolicy | None) -> Iterator[None]:
    """Sets the global Keras dtype policy inside a `with` block, then restores it.

    Keras layers take their dtype policy when they are created, so a model must be BUILT
    inside this block for the policy to apply. The previous policy comes back when the block
    exits, also when it exits with an exception.

    Args:
        policy: str, `keras.DTypePolicy` or None. A Keras dtype policy such as `"float32"`,
            `"mixed_float16"` or `"mixed_bfloat16"` (see `resolve_mixed_precision` for the
            user-facing names). None leaves the current policy in place.

    Returns:
        A context manager.

    Raises:
        ValueError: if `policy` is not a dtype policy Keras knows.

    Example:

    >>> with dtype_policy_scope("mixed_bfloat16"):
    ...     layer = keras.layers.Dense(4)
    >>> layer.compute_dtype, keras.config.dtype_policy().name
    ('bfloat16', 'float32')
    """
    previous = keras.config.dtype_policy()
    if policy is not None:
        try:
            keras.config.set_dtype_policy(policy)
        except (ValueError, TypeError) as error:
            raise ValueError(
                "`policy` must be a Keras dtype policy name such as 'float32', "
                "'mixed_float16' or 'mixed_bfloat16', or a `keras.DTypePolicy` "
                f"({error}). Received: policy={policy!r}"
            ) from None
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def resolve_jit_compile(option: bool | str = "auto", *, strategy=None) -> bool:
    """Decides whether to compile training steps with XLA (`jit_compile`).

    `"auto"` turns XLA on where it helps: when a GPU is visible, the default (single device)
    strategy is used, and TensorFlow's op determinism is off. On CPU, XLA compiles slowly and
    rarely runs faster; Keras also disables it under `tf.distribute` and with op determinism.
    Layers that cannot be compiled are still handled by Keras (`compile(jit_compile=True)`
    falls back when a layer does not support XLA).

    Args:
        option: bool or `"auto"`. True or False are returned unchanged. Defaults to `"auto"`.
        strategy: `tf.distribute.Strategy` or None. The strategy training will run under.
            Defaults to None (the current strategy).

    Returns:
        bool, the value to pass as `model.compile(jit_compile=...)`.

    Raises:
        ValueError: if `option` is neither a bool nor `"auto"`.

    Example:

    >>> resolve_jit_compile("auto")  # on a machine without a GPU
    False
    """
    if isinstance(option, bool):
        return option
    if option != "auto":
        raise ValueError(
            "`jit_compile` must be True, False or 'auto' (XLA on a GPU, off on CPU). "
            f"Received: jit_compile={option!r}"
        )
    if not tf.config.list_physical_devices("GPU") or _compat.is_op_determinism_enabled():
        return False
    return _is_default_strategy(resolve_strategy(strategy))


def _is_default_strategy(strategy: tf.distribute.Strategy) -> bool:
    # TensorFlow's single-device default strategy has no public class; Keras turns XLA off
    # under any other strategy.
    return type(strategy).__name__ == "_DefaultDistributionStrategy"


def resolve_strategy(strategy: tf.distribute.Strategy | None = None) -> tf.distribute.Strategy:
    """Returns the `tf.distribute.Strategy` to train under.

    Args:
        strategy: `tf.distribute.Strategy` or None. None means the current strategy: the one
            whose `scope()` is open, else TensorFlow's default single-device strategy.
            Defaults to None.

    A `MultiWorkerMirroredStrategy` is adapted once, in place, so that Keras 3's `fit` runs
    under it (Keras reduces the nested batch and scalar losses with calls the strategy
    rejects; its `reduce` is wrapped to handle them, other calls are unchanged; see
    `tltf._compat.fix_multi_worker_reduce` for why it cannot be a wrapper object).

    Returns:
        A `tf.distribute.Strategy`. Build, compile and fit the model inside its `scope()`:
        variables created outside it cannot be mirrored (see `match_runtime`).

    Raises:
        TypeError: if `strategy` is neither None nor a `tf.distribute.Strategy`.

    Example:

    >>> strategy = resolve_strategy(None)
    >>> with strategy.scope():
    ...     model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> strategy.num_replicas_in_sync
    1
    """
    if strategy is None:
        return tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError(
            "`strategy` must be a `tf.distribute.Strategy` (for example "
            "`tf.distribute.MirroredStrategy()`) or None for a single device. "
            f"Received: strategy={strategy!r}"
        )
    _compat.fix_multi_worker_reduce(strategy)
    return strategy


def global_batch_size(
    per_replica_batch_size: int, strategy: tf.distribute.Strategy | None = None
) -> int:
    """The batch size to give `tf.data` so that each replica sees `per_replica_batch_size`.

    Under a `tf.distribute` strategy, Keras splits every batch of the input dataset across the
    replicas in sync (all devices of all workers). `batch_size=32` in `fine_tune` means 32
    images per replica, so the dataset is batched by 32 x replicas and learning rates that
    scale with the batch size scale with this global size.

    Args:
        per_replica_batch_size: int >= 1. Images per replica per step.
        strategy: `tf.distribute.Strategy` or None. Defaults to None (the current strategy).

    Returns:
        int, `per_replica_batch_size * strategy.num_replicas_in_sync`.

    Raises:
        ValueError: if `per_replica_batch_size` is not a positive int.

    Example:

    >>> global_batch_size(32)  # the default strategy has one replica
    32
    """
    if (
        isinstance(per_replica_batch_size, bool)
        or not isinstance(per_replica_batch_size, int)
        or per_replica_batch_size < 1
    ):
        raise ValueError(
            "`per_replica_batch_size` must be a positive int (images per device per step). "
            f"Received: per_replica_batch_size={per_replica_batch_size!r}"
        )
    return per_replica_batch_size * resolve_strategy(strategy).num_replicas_in_sync


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process should write files (checkpoints, logs, the final model).

    In a multi-worker run every worker executes the same code; only one (the `chief`, or
    worker 0 when the cluster has no chief) should write to the shared output directory.
    Single-process strategies always return True.

    Args:
        strategy: `tf.distribute.Strategy` or None. Defaults to None (the current strategy).

    Returns:
        bool.

    Example:

    >>> is_chief()
    True
    """
    strategy = resolve_strategy(strategy)
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


class _RestoreOnly:
    """Mixin: a backup callback as a worker that is not the chief runs it.

    Used with Keras' `BackupAndRestore` (`backup_and_restore`) and with `fine_tune`'s
    `PhaseCheckpoint`, through `_restore_only`. The worker restores from the chief's backup
    at the start of `fit` (the callback's own `on_train_begin`) and never writes or deletes
    it. Saving reads on-read-synchronised variables, which runs collective ops: the worker
    must still save whenever the chief does, or the chief waits forever for it, so every
    save moment goes to a twin of the callback that writes to a private scratch folder.
    Public callback methods only: Keras' `_save_model` hook is private.
    """

    def on_train_begin(self, logs=None):
        self._scratch = tempfile.mkdtemp(prefix="tltf-worker-backup-")
        if isinstance(self, keras.callbacks.BackupAndRestore):
            self._twin = keras.callbacks.BackupAndRestore(
                self._scratch, save_freq=self.save_freq, double_checkpoint=False,
                delete_checkpoint=False)
        else:  # PhaseCheckpoint
            self._twin = self._scratch_twin(self._scratch)
        self._twin.set_model(self.model)
        super().on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._twin.on_epoch_end(epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._twin.on_train_batch_end(batch, logs)

    def on_train_end(self, logs=None):
        # Not the callback's own on_train_end: the chief deletes the shared backup.
        shutil.rmtree(self._scratch, ignore_errors=True)


@functools.cache
def _restore_only(callback_class: type) -> type:
    """`callback_class` (`BackupAndRestore` or a subclass) for a non-chief worker: `_RestoreOnly`."""
    return type(f"RestoreOnly{callback_class.__name__}", (_RestoreOnly, callback_class), {})


def backup_and_restore(
    backup_dir: str | os.PathLike,
    *,
    strategy: tf.distribute.Strategy | None = None,
    save_freq: str | int = "epoch",
) -> keras.callbacks.BackupAndRestore:
    """A `keras.callbacks.BackupAndRestore` that is also safe in multi-worker training.

    `BackupAndRestore` saves the weights, optimizer state and epoch at the end of every
    epoch, and a later `fit` with the same callback resumes from there: restart the job
    after a crash or preemption and training continues where it stopped. It keeps the
    previous backup too, so a process killed while writing loses at most one epoch.

    Keras 3's callback has every worker write the same files, which collide (HDF5 refuses
    the second writer). Here only the chief (see `is_chief`) writes the backup; the other
    workers restore from the chief's backup at the start of `fit`, so all of them resume
    from the same epoch (they still save to a private scratch directory at the same
    moments, because saving runs collective ops every worker must join). `backup_dir` must
    be reachable by every worker (a shared file system).

    Args:
        backup_dir: str or path. Directory of the backup; it is deleted when `fit` completes.
        strategy: `tf.distribute.Strategy` or None. Defaults to None (the current strategy).
        save_freq: `"epoch"` or int. Back up at the end of every epoch, or every this many
            batches. Defaults to `"epoch"`.

    Returns:
        A `keras.callbacks.BackupAndRestore` to pass to `fit(callbacks=[...])`.

    Example:

    >>> import numpy as np, tempfile
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> backup = backup_and_restore(tempfile.mkdtemp())
    >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 1)), epochs=2, callbacks=[backup], verbose=0)
    """
    backup_dir = os.fspath(backup_dir)
    if is_chief(strategy):
        return keras.callbacks.BackupAndRestore(
            backup_dir, save_freq=save_freq, double_checkpoint=True
        )
    return _restore_only(keras.callbacks.BackupAndRestore)(
        backup_dir, save_freq=save_freq, double_checkpoint=False)


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
