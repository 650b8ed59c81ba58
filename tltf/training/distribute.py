"""Training under `tf.distribute`: the strategy, the global batch, which process writes, backups.

`fine_tune` uses these pieces; they are public so that a user who writes a custom loop gets
the same behaviour. A `MultiWorkerMirroredStrategy` is adapted once so that Keras 3's `fit`
runs under it (`tltf._compat.fix_multi_worker_reduce` says why).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from tltf import _compat
from tltf._backend import check_backend

check_backend()  # Keras must run on TensorFlow before this module builds anything

__all__ = [
    "backup_and_restore", "global_batch_size", "is_chief", "resolve_strategy", "worker_shard",
]


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


def worker_shard(strategy: tf.distribute.Strategy | None = None) -> tuple[int, int]:
    """This process's share of the training files: `(num_workers, index)`.

    In multi-worker training every worker runs the same code; each should read and decode
    only its own files. `ImageDataset.prepare(shard=worker_shard(strategy))` keeps the
    files `index, index + num_workers, ...` of the data set. Workers are numbered as
    `tf.distribute` numbers its input pipelines: the chief (if the cluster has one) is 0,
    then `worker` 0, 1, ... Single-process strategies return `(1, 0)`: all the files.

    Args:
        strategy: `tf.distribute.Strategy` or None. Defaults to None (the current strategy).

    Returns:
        A tuple `(num_workers, index)` of ints, `0 <= index < num_workers`.

    Example:

    >>> worker_shard()  # one process reads everything
    (1, 0)
    """
    return _shard_of(getattr(resolve_strategy(strategy), "cluster_resolver", None))


def _shard_of(resolver) -> tuple[int, int]:
    """`worker_shard` of a `tf.distribute.cluster_resolver.ClusterResolver` (or None)."""
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    chiefs, workers = len(spec.get("chief", ())), len(spec.get("worker", ()))
    if chiefs + workers <= 1 or resolver.task_type not in ("chief", "worker"):
        return 1, 0  # one process, or an evaluator: all the files
    offset = 0 if resolver.task_type == "chief" else chiefs
    return chiefs + workers, offset + int(resolver.task_id)


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
