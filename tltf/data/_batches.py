"""The one way the caller's data becomes batches, for training, tuning, evaluation and export.

Every public function that takes data (`fine_tune`, `search`, `evaluate`, `calibrate`,
`verify_tflite`, `export_tflite`) reads it through `batches`, so an input form is accepted
(or refused, with the same error) by all of them. Data-level only: this module must not
import `tltf.models.classifier`, `tltf.training.recipe` or `tltf.evaluation.metrics`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tltf.data import _shares


@dataclass
class Batches:
    """The caller's data as batches, and what it says about itself.

    Attributes:
        data: a `tf.data.Dataset` of `(images, labels)` batches (always, with `fit=True`),
            or an iterable of batches (arrays, an in-order reader, a generator).
        class_names: list of str or None. The names the data records, in label order.
        files: list of str or None. The files, in order, when read in order.
        num_batches: int or None. Batches in one pass, when known without reading.
        image_size: (height, width) or None.
        labels: bool. Whether labels are required (iteration raises on a batch without).
        name: str. The argument's name, for errors.
    """

    data: Any
    class_names: list[str] | None = None
    files: list[str] | None = None
    num_batches: int | None = None
    image_size: tuple | None = None
    labels: bool = True
    name: str = "data"

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Yields `(float32 images (B, H, W, C), labels or None)` as NumPy arrays."""
        for item in self.data:
            if isinstance(item, (tuple, list)):
                images, labels = item[0], (item[1] if len(item) > 1 else None)
            else:
                images, labels = item, None
            images = np.asarray(images, dtype="float32")
            if images.ndim == 3:  # a generator may yield single images
                images = images[None]
                labels = None if labels is None else np.asarray(labels)[None]
            if images.ndim != 4:
                raise ValueError(
                    f"`{self.name}` must hold images of shape (batch, height, width, channels) "
                    f"or (height, width, channels). Received: images of shape {images.shape}"
                )
            if labels is None and self.labels:
                raise ValueError(
                    f"`{self.name}` yielded images without labels, but labels are needed here; "
                    f"yield (images, labels) pairs. Received: a batch of {len(images)} images"
                )
            yield images, None if labels is None else np.asarray(labels)


def batches(data, name: str = "data", *, training: bool = False, batch_size: int = 32,
            seed: int | None = None, labels: bool = True, num_classes: int | None = None,
            fit: bool = False, in_order: bool = False, shuffle: bool | None = None,
            cache: str | None = "auto", cache_dir=None, shard=None) -> Batches:
    """Turns any accepted input form into batches.

    Accepted forms: a `tltf.ImageDataset` (prepared with `training`; read file by file
    in order with `in_order=True`), a batched `tf.data.Dataset` of `(images, labels)` (or of
    images when `labels=False`), a tuple `(images, labels)` of arrays, an array of images
    (when `labels=False`), and a generator or a function returning one (unless `fit=True`:
    Keras reads the data once per epoch, a generator only once).

    Args:
        data: the caller's data, in one of the forms above.
        name: str. The argument's name in errors. Defaults to `"data"`.
        training: bool. Prepare an `ImageDataset` for training (augmentation, shuffling);
            arrays are shuffled too when `fit=True`. Defaults to `False`.
        batch_size: int. Batch size of an `ImageDataset` or arrays. Defaults to `32`.
        seed: int or None. Seed of the shuffle. Defaults to `None`.
        labels: bool. Whether labels are required. Defaults to `True`.
        num_classes: int or None. When given, a label outside `0..num_classes-1` raises
            (arrays: all of them now; a `tf.data.Dataset`: the first batch now, the others
            by an assertion in the pipeline). Defaults to `None`.
        fit: bool. Return a `tf.data.Dataset` of `(images, labels)` for `keras.Model.fit`.
            Defaults to `False`.
        in_order: bool. Read an `ImageDataset` in order without dropping a file (results
            reported per file). Defaults to `False`.
        shuffle: bool or None. Shuffle an `ImageDataset` (defaults to `training`).
        cache: str or None. `ImageDataset.prepare`'s cache. Defaults to `"auto"`.
        cache_dir: str, path or None. `ImageDataset.prepare`'s `cache_dir` (a run folder).
            Defaults to `None` (the temp folder).
        shard: `(num_workers, index)` or None. In multi-worker training (the pair
            `tltf.training.distribute.worker_shard(strategy)` gives), the training batches
            of an `ImageDataset` hold only this worker's share of the files
            (`ImageDataset.prepare(shard=...)`), still batched by the global `batch_size`;
            `num_batches` is then the steps of an epoch, which is more than the batches of
            this worker's dataset (each step takes `batch_size / num_workers` of its images)
            and which every worker runs. With `training=False` the share is read in order
            (the phase-1 feature pass). Other forms, and data read in order for results
            per file, are left to `tf.distribute`, which shards them by element. Defaults to
            `None` (one process reads all the data).

    Returns:
        A `Batches`.

    Raises:
        TypeError: if `data` is none of the accepted forms.
        ValueError: if `data` is empty, not batched, lacks labels or has a label out of range.

    Example:

    >>> import numpy as np
    >>> b = batches((np.zeros((5, 8, 8, 3)), np.array([0, 1, 0, 1, 0])), batch_size=2)
    >>> [len(y) for _, y in b]
    [2, 2, 1]
    """
    if hasattr(data, "prepare") and hasattr(data, "class_names"):  # an ImageDataset
        return _image_dataset(data, name, training, batch_size, seed, in_order, shuffle, cache,
                              cache_dir, shard)
    if isinstance(data, tf.data.Dataset):
        return _tf_dataset(data, name, training, labels, num_classes, fit)
    if isinstance(data, tuple) and len(data) == 2 and not callable(data[0]):
        return _arrays(data, name, training, batch_size, seed, num_classes, fit, shuffle)
    if labels is False and (isinstance(data, np.ndarray) or tf.is_tensor(data)):
        x = np.asarray(data)
        if not len(x):
            raise ValueError(_empty(name, training, f"{name}.shape={x.shape}"))
        return Batches([x[i:i + batch_size] for i in range(0, len(x), batch_size)],
                       num_batches=-(-len(x) // batch_size), labels=False, name=name)
    if not fit and (callable(data) or isinstance(data, Iterator)):
        data = data() if callable(data) else data
        if isinstance(data, Iterator):
            return Batches(data, labels=labels, name=name)
    forms = ("a tltf.ImageDataset or a batched tf.data.Dataset of (images, labels)"
             + ("" if labels else " or of images") + ", a tuple (images, labels) of arrays"
             + ("" if labels else ", an array of images")
             + ("" if fit else ", or a generator (or a function returning one) of these"))
    why = ""
    if fit and (callable(data) or isinstance(data, Iterator)):
        why = (" A generator can be read only once, but training reads the data every epoch; "
               "wrap it in tf.data.Dataset.from_generator(...).")
    elif isinstance(data, np.ndarray) or tf.is_tensor(data):
        why = " Images alone have no labels; pass the tuple (images, labels)."
    raise TypeError(f"`{name}` must be {forms}.{why} Received: {name}={type(data).__name__}")


def _empty(name, training, received):
    return (f"`{name}` yielded no images (it is empty), so there is nothing to "
            f"{'train on' if training else 'read'}. "
            f"Check the folder, the split arguments or the arrays. Received: {received}")


def _image_dataset(data, name, training, batch_size, seed, in_order, shuffle, cache, cache_dir,
                   shard):
    size = len(data) if hasattr(data, "__len__") else None
    if size == 0:
        raise ValueError(_empty(name, training, f"len({name})=0"))
    common = dict(class_names=[str(n) for n in data.class_names], name=name,
                  num_batches=None if size is None else -(-size // batch_size),
                  image_size=tuple(getattr(data, "image_size", ()) or ()) or None)
    if in_order:
        from tltf.data.dataset import _batches_in_order

        # Never drops an image: results are attributed to `files` by position.
        return Batches(_batches_in_order(data, batch_size), files=data.files, **common)
    options = {} if shuffle is None else {"shuffle": shuffle}
    if cache_dir is not None:
        options["cache_dir"] = cache_dir
    if shard is not None and not in_order:
        workers, index = shard
        if workers > 1:
            options["shard"] = (workers, index)
            # The steps of an epoch, which every worker runs.
            common["num_batches"] = _shares.share(data, batch_size, workers)[1]
    ds = data.prepare(training=training, batch_size=batch_size, seed=seed, cache=cache, **options)
    return Batches(ds, **common)  # no files: prepare() may leave out a broken one


def _tf_dataset(data, name, training, labels, num_classes, fit):
    spec = data.element_spec
    parts = spec if isinstance(spec, tuple) else (spec,)
    images = parts[0] if parts else None
    rank = getattr(getattr(images, "shape", None), "rank", None)
    if rank == 3:
        raise ValueError(
            f"`{name}` must be batched: it yields single images; batch it with "
            f"`.batch(batch_size)`. Received: {name}.element_spec={spec}")
    if rank != 4:
        raise ValueError(
            f"`{name}` must yield batches of (images, labels) with images of shape "
            f"(batch, height, width, 3). Received: {name}.element_spec={spec}")
    if labels and len(parts) < 2:
        raise ValueError(
            f"`{name}` yields images without labels, but labels are needed here; make it "
            f"yield (images, labels). Received: {name}.element_spec={spec}")
    if fit and len(parts) > 2:
        raise ValueError(
            f"`{name}` must yield (images, labels); sample weights are not read (use "
            f"`class_weight=`). Received: {name}.element_spec={spec}")
    if int(data.cardinality()) == 0:
        raise ValueError(f"`{name}` is an empty tf.data.Dataset: there is nothing to "
                         f"{'train on' if training else 'read'}. Received: {name}.cardinality()=0")
    if len(parts) > 2:
        data = data.map(lambda x, y, *rest: (x, y))
    if num_classes is not None and len(parts) >= 2:
        data = _checked_labels(data, name, int(num_classes))
    n = int(data.cardinality())
    return Batches(data, num_batches=n if n >= 0 else None, name=name, labels=labels,
                   image_size=tuple(images.shape[1:3]))


def _arrays(data, name, training, batch_size, seed, num_classes, fit, shuffle):
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if len(x) != len(y):
        raise ValueError(
            f"`{name}` as a tuple must be (images, labels) of equal length. "
            f"Received: {len(x)} images and {len(y)} labels")
    if not len(x):
        raise ValueError(_empty(name, training, f"{name}[0].shape={x.shape}"))
    if num_classes is not None:
        check_labels(name, y, int(num_classes))
    common = dict(num_batches=-(-len(x) // batch_size), name=name,
                  image_size=tuple(x.shape[1:3]) if x.ndim == 4 else None)
    if not fit:
        return Batches([(x[i:i + batch_size], y[i:i + batch_size])
                        for i in range(0, len(x), batch_size)], **common)
    if x.ndim != 4:
        raise ValueError(f"`{name}` must hold images of shape (N, height, width, 3). "
                         f"Received: {name}[0].shape={x.shape}")
    ds = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y))
    if training if shuffle is None else shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return Batches(ds.batch(batch_size), **common)


def _label_error(name, labels, num_classes):
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] != 1:  # (batch, 1) is one int label per image
        if labels.shape[1] == num_classes:
            return None
        return (f"`{name}` has one-hot labels of width {labels.shape[1]} for a "
                f"{num_classes}-class model. Received: label width={labels.shape[1]}")
    labels = labels.reshape(-1).astype(np.int64)
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if not bad.size:
        return None
    return (f"`{name}` has label {int(bad[0])}, but the model has {num_classes} classes (labels "
            f"0 to {num_classes - 1}); fix the labels or build the model with more classes. "
            f"Received: label={int(bad[0])}, num_classes={num_classes}")


def check_labels(name, labels, num_classes):
    """Raises a ValueError when a label does not fit a `num_classes`-class model."""
    message = _label_error(name, labels, num_classes)
    if message:
        raise ValueError(message)


def _checked_labels(data, name, num_classes):
    """The labels of a tf.data.Dataset are checked on its first batch here (a ValueError
    before any training) and on every later batch by an assertion in the pipeline, so a
    label 7 for a 2-class model never trains silently as an all-zero target."""
    for _, labels in data.take(1):  # one batch, eagerly: a clear error before training
        check_labels(name, labels, num_classes)
    if data.element_spec[1].shape.rank != 1:
        return data

    def check(images, labels):
        ints = tf.cast(labels, tf.int64)
        ok = tf.reduce_all((ints >= 0) & (ints < num_classes))
        with tf.control_dependencies([tf.debugging.Assert(ok, [
                f"`{name}` has a label outside 0..{num_classes - 1} for a {num_classes}-class "
                "model. Received: labels=", ints], summarize=8)]):
            return tf.identity(images), labels

    return data.map(check)
