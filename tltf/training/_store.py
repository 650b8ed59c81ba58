"""Where phase 1's features and phase 2's trunk outputs live: memory, or a file read memory-mapped.

MobileNetV2's pooled features take 5 KB an image (1,280 float32 values): 5 GB for a million
images, and phase 2's trunk outputs at `block_14_add` three times that at 160 px. `choose`
keeps them in memory while they fit `MEMORY_FRACTION` of the memory available, else writes
them batch by batch to a raw float32 file in a new folder on a disk with room
(`DISK_FRACTION` of its free space; the run folder, or the temp folder without one) and
reads them back memory-mapped: the operating system pages in the rows a batch needs, so the
process holds no copy. The folder is removed when the phase ends, and at exit otherwise.

`dataset` serves either from the same shuffled index stream, so a run reads the same rows
in the same order whichever place was chosen.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tltf.data._cache_choice import decide


class Place(NamedTuple):
    """What `choose` decided: `folder` None is memory; `fits` False is neither memory nor disk."""

    folder: Path | None
    fits: bool
    reason: str  # why not memory, "" when memory


def choose(nbytes: int, cache_dir: str | os.PathLike | None, what: str) -> Place:
    """Memory when `nbytes` fit the memory budget, else a new folder on a disk with room."""
    kind, base, reason = decide(nbytes, cache_dir, what)
    if kind != "disk":
        return Place(None, kind == "memory", reason)
    folder = Path(tempfile.mkdtemp(prefix="tltf-features-", dir=base))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return Place(folder, True, reason)


def remove(place: Place | None) -> None:
    """Deletes a disk place's folder (mapped arrays stay readable until they are freed)."""
    if place is not None and place.folder is not None:
        shutil.rmtree(place.folder, ignore_errors=True)


class Rows:
    """float32 rows appended batch by batch, kept in memory or written to `folder/name.f32`."""

    def __init__(self, folder: Path | None, name: str):
        self.path = None if folder is None else folder / f"{name}.f32"
        self.file = None if self.path is None else open(self.path, "wb")  # noqa: SIM115
        self.parts: list[np.ndarray] = []
        self.rows, self.shape = 0, None

    def append(self, batch) -> None:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self.shape = batch.shape[1:]
        self.rows += len(batch)
        if self.file is None:
            self.parts.append(batch)
        else:
            self.file.write(batch.tobytes())

    def array(self) -> np.ndarray:
        """All rows: one array in memory, or a read-only `np.memmap` of the file."""
        if self.file is None:
            return np.concatenate(self.parts)
        self.file.close()
        return np.memmap(self.path, np.float32, "r", shape=(self.rows, *self.shape))


def dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed=None,
            shuffle: bool = True, mirror: np.ndarray | None = None) -> tf.data.Dataset:
    """`(x, y)` batches, shuffled every epoch with `seed` when `shuffle`.

    Arrays in memory become tensors; a memory-mapped `x` is read by row indices, shuffled
    the same way, so both give the same batches. `mirror` (rows of the same images flipped
    left to right, where the model's augmentation is that flip): every epoch each image's
    row is drawn from `x` or `mirror` with even odds, as a random flip of the image would
    choose, from a stream seeded with `seed`.
    """
    if mirror is None and not isinstance(x, np.memmap):
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size)
    labels = tf.constant(y)
    rows = tf.data.Dataset.range(len(y))
    if shuffle:
        rows = rows.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    if mirror is None:
        views = rows.map(lambda index: (index, tf.zeros((), tf.int64)))
    else:
        coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        views = tf.data.Dataset.zip(rows, coins.map(lambda r: r % 2))
    sources = (x,) if mirror is None else (x, mirror)
    if any(isinstance(a, np.memmap) for a in sources):
        def pick(index, view):  # each row read once, from the file its view is in
            out = np.empty((len(index), *x.shape[1:]), np.float32)
            for v, source in enumerate(sources):
                chosen = view == v
                out[chosen] = source[index[chosen]]
            return out

        def read(index, view):
            values = tf.numpy_function(pick, [index, view], tf.float32, stateful=False)
            return tf.ensure_shape(values, (None, *x.shape[1:])), tf.gather(labels, index)
    else:
        table = tf.constant(np.stack(sources))  # (views, rows, ...)

        def read(index, view):
            return tf.gather_nd(table, tf.stack([view, index], -1)), tf.gather(labels, index)

    return views.batch(batch_size).map(read, num_parallel_calls=tf.data.AUTOTUNE,
                                       deterministic=True)
