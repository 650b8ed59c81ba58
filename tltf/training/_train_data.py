"""Data helpers of `fine_tune`: counting steps, cached backbone features, argument checks."""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from tltf.data._batches import batches, check_labels
from tltf.models.parts import head_of
from tltf.training import _store


def num_batches(ds) -> int:
    """Batches per epoch of `ds` (counted by one pass if tf.data does not know)."""
    n = int(ds.cardinality())
    if n == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "The training dataset is infinite (`.repeat()`); fine_tune counts epochs as full "
            "passes over the data. Remove the `.repeat()`. Received: cardinality=infinite"
        )
    if n < 0:
        n = int(ds.reduce(np.int64(0), lambda count, _: count + 1))
    return max(n, 1)


def num_examples(train, train_ds) -> int:
    """Training examples: from an `ImageDataset`'s or a tuple's labels, else by one pass over
    the labels of `train_ds`."""
    if isinstance(train, (tuple, list)) and len(train) == 2:
        return len(train[1])
    if hasattr(train, "labels"):
        return len(train.labels)
    return int(train_ds.reduce(np.int64(0), lambda n, batch: n + tf.cast(
        tf.shape(batch[1])[0], tf.int64)))


def with_cardinality(ds):
    """`ds` with a known cardinality, so its batches are counted at most once."""
    if int(ds.cardinality()) >= 0:
        return ds
    return ds.apply(tf.data.experimental.assert_cardinality(num_batches(ds)))


class Cached(NamedTuple):
    """What `cached_features` returns."""

    head_model: keras.Model  # Input -> the model's own head layer
    x: np.ndarray  # training features, in the data's order (an np.memmap when on disk)
    y: np.ndarray  # training labels
    train: tf.data.Dataset  # (x, y) shuffled with the seed, batched
    val: tf.data.Dataset | None  # validation features and labels, batched
    seconds: float  # time spent computing all this
    x_mirror: np.ndarray | None = None  # the training images' mirror images' features


def feature_place(model, train, train_ds, val_ds, batch_size, cache_dir, options: dict,
                  note, mirror: bool = False) -> _store.Place | None:
    """Where phase 1's features will live (`_store.choose`, from the batch counts), or None
    when they fit neither memory nor disk and the head trains on the full model instead.

    `options` holds `cache_features` and `head_fit`; either set to force a cached fit raises
    then. A place on disk is said with `note`. `mirror`: the training images' mirror images
    are counted too.
    """
    values = math.prod(int(d) for d in head_of(model).input.shape[1:])
    images = images_at_most(train, train_ds, batch_size) * (2 if mirror else 1) + (
        0 if val_ds is None else images_at_most(None, val_ds, batch_size))
    place = _store.choose(images * values * 4, cache_dir,
                          f"backbone features of up to {images} images ({values} values each)")
    if place.fits:
        if place.folder is not None:
            note(f"phase 1: backbone features kept on disk in {place.folder} and read "
                 f"memory-mapped ({place.reason})")
        return place
    forced = [f"{k}={v!r}" for k, v in options.items() if v is True or v == "convex"]
    if forced:
        raise ValueError(f"Phase 1 cannot cache the backbone features: {place.reason}. Free "
                         "memory or disk space, or pass cache_features='auto' (which then "
                         f"trains the head on the full model). Received: {', '.join(forced)}")
    note(f"phase 1: training the head on the full model (cache_features='auto': {place.reason})")
    return None


def mirrored(model) -> bool:
    """Whether the model's augmentation is a horizontal flip and nothing else.

    Such a flip has two outcomes an image, so everything the frozen layers compute under it
    takes two values an image: the image's and its mirror image's. Both can be cached, and
    drawing one of the two at random every epoch is what the flip does (`_store.dataset`).
    """
    if "augmentation" not in [layer.name for layer in model.layers]:
        return False
    augmentation = model.get_layer("augmentation")
    inner = augmentation.layers if isinstance(augmentation, keras.Model) else [augmentation]
    return (len(inner) == 1 and isinstance(inner[0], keras.layers.RandomFlip)
            and inner[0].mode == "horizontal"
            and getattr(inner[0], "data_format", "channels_last") == "channels_last")


def known_size(data) -> int | None:
    """The number of images of an `ImageDataset` or of arrays (from their labels), else None."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return len(data[1])
    if hasattr(data, "labels"):
        return len(data.labels)
    return None


def images_at_most(data, ds, batch_size: int) -> int:
    """At most how many images `ds` (batches of `data`) holds, without reading it: exactly
    for an `ImageDataset` or arrays (their labels say), else its batches x `batch_size`. A
    worker's share of an ImageDataset has no known size (counting it would decode it), but
    the data set's length bounds it."""
    known = known_size(data)
    if known is not None:
        return known
    steps = int(ds.cardinality())
    return (steps if steps >= 0 else num_batches(ds)) * batch_size


def cached_features(model, train, train_ds, val_ds, batch_size, seed, verbose,
                    place: _store.Place | None = None, shard=(1, 0), trunk=None,
                    mirror: bool = False) -> Cached:
    """Features of the frozen backbone, computed once; a head model sharing the head layer.

    `place` (from `feature_place`) keeps them on disk, memory-mapped; None: in memory.
    `shard` (`distribute.worker_shard`): a worker computes the features of its own share
    of the training images only, and trains on them. `trunk` (a
    `tltf.training._trunk.TrunkOutputs`): the frozen trunk's outputs for the same images,
    already computed for phase 2; the features are then the backbone's layers above the cut
    run on them, and no image is read again. `mirror` (the model's augmentation is a
    horizontal flip, `mirrored`): the training images' mirror images get features too, and
    every epoch draws one of the two for each image.
    """
    t0 = time.perf_counter()
    head = head_of(model)
    if trunk is None:
        extract = _Extractor(keras.Model(model.inputs, head.input))
        out = cache_outputs(extract, model, train, val_ds, batch_size, seed, verbose,
                            "phase 1: caching", "features", rebatch=batch_size, place=place,
                            shard=shard, mirror=mirror)
        x, y, tr, va, xm = out.x, out.y, out.train, out.val, out.x_mirror
    else:
        folder = None if place is None else place.folder
        extract, out = _Extractor(trunk.top), trunk.data
        x, y = rows_through(extract, out.x, batch_size, _store.Rows(folder, "train")), out.y
        xm = None if out.x_mirror is None else rows_through(
            extract, out.x_mirror, batch_size, _store.Rows(folder, "train_mirror"))
        tr = _store.dataset(x, y, batch_size, seed, mirror=xm)
        va = None if out.val_x is None else _store.dataset(
            rows_through(extract, out.val_x, batch_size, _store.Rows(folder, "val")),
            out.val_y, batch_size, shuffle=False)
    # With a trunk, its pass over the images is part of what the features cost.
    seconds = time.perf_counter() - t0 + (0.0 if trunk is None else trunk.seconds)
    if verbose:
        where = "" if place is None or place.folder is None else f" on disk in {place.folder}"
        print(f"Phase 1: cached backbone features of {len(y)} training images "
              f"({x.shape[1]} values each){where} in {seconds:.1f}s")
    head_model = keras.Sequential([keras.Input((x.shape[1],)), head],
                                  name=f"{model.name}_head")
    return Cached(head_model, x, y, tr, va, seconds, xm)


def rows_through(extract, x: np.ndarray, batch_size: int, rows: _store.Rows) -> np.ndarray:
    """`extract` run on the rows of `x` (outputs stored before, in memory or memory-mapped),
    `batch_size` at a time, into `rows`; returns `rows.array()`."""
    for start in range(0, len(x), batch_size):
        rows.append(extract(tf.convert_to_tensor(x[start:start + batch_size])))
    return rows.array()


class Outputs(NamedTuple):
    """What `cache_outputs` returns."""

    x: np.ndarray  # training outputs, in the data's order (an np.memmap when on disk)
    y: np.ndarray  # training labels
    train: tf.data.Dataset  # (x, y) shuffled with the seed every epoch, batched by `batch`
    val: tf.data.Dataset | None  # the validation outputs and labels, batched by `batch`
    batch: int
    val_x: np.ndarray | None  # the validation outputs and labels as arrays
    val_y: np.ndarray | None
    x_mirror: np.ndarray | None  # the outputs of the training images' mirror images, or None


def cache_outputs(extract, model, train, val_ds, batch_size, seed, verbose, label, what, *,
                  rebatch=None, place: _store.Place | None = None, shard=(1, 0),
                  mirror: bool = False) -> Outputs:
    """`extract`'s outputs for every training and validation image, computed once.

    The training images are read once, unshuffled and un-augmented (otherwise as `fit` reads
    them, `batch_size` at a time; a cache would only hold a second copy of the images the
    training data caches). Returns an `Outputs`: the training outputs and labels as arrays,
    the same as a dataset shuffled with `seed` every epoch and batched by `rebatch` (None: as
    the data's own first batch), the validation outputs batched the same way and as arrays
    (None without `val_ds`), and that batch size. With a disk `place`, the outputs are written to its
    folder and read memory-mapped. With a `shard` of several workers, the training outputs
    are this worker's share's, marked so that `tf.distribute` does not shard them again.
    With `mirror`, the training images flipped left to right are run through `extract` too
    (`Outputs.x_mirror`), and the training dataset draws one of the two every epoch.
    """
    folder = None if place is None else place.folder
    source = batches(train, "train", training=False, batch_size=batch_size, seed=seed, fit=True,
                     cache=None, shard=shard)
    sizes = []
    mirrors = _store.Rows(folder, "train_mirror") if mirror else None
    x, y = features(extract, source.data, f"{label} training {what}", verbose,
                    source.num_batches, sizes=sizes, rows=_store.Rows(folder, "train"),
                    mirror_rows=mirrors)
    xm = None if mirrors is None else mirrors.array()
    num_classes = int(model.outputs[0].shape[-1])
    check_labels("train", y, num_classes)
    rebatch = rebatch or sizes[0]
    tr = _store.dataset(x, y, rebatch, seed, mirror=xm)
    off = tf.data.experimental.AutoShardPolicy.OFF
    if shard[0] > 1 and source.data.options().experimental_distribute.auto_shard_policy == off:
        # The images were this worker's share (an ImageDataset's files, cut before
        # decoding): so are the features, and tf.distribute must not cut them again.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF)
        # An unknown size, as the images' share has: Keras then reads it to its end, the
        # `workers` times more steps than its own batches (each step takes 1/workers of a
        # global batch); a known size would stop every epoch after that many steps.
        tr = tr.filter(lambda *_: True).with_options(options)
    va = vx = vy = None
    if val_ds is not None:
        vx, vy = features(extract, val_ds, f"{label} validation {what}", verbose,
                          rows=_store.Rows(folder, "val"))
        check_labels("val", vy, num_classes)
        va = _store.dataset(vx, vy, rebatch, shuffle=False)
    return Outputs(x, y, tr, va, rebatch, vx, vy, xm)


class _Extractor:
    """The frozen backbone as one traced graph per image shape and dtype, reused by every batch.

    A concrete function with a free batch dimension serves the full batches and the last,
    smaller one alike, and training and validation data share it: one trace per run, and
    none of TensorFlow's retracing warnings when several models train in one process.
    """

    def __init__(self, extractor):
        self.extractor = extractor
        self.graphs = {}

    def __call__(self, images):
        key = (tuple(images.shape[1:]), images.dtype)
        graph = self.graphs.get(key)
        if graph is None:
            # float32 whatever the compute dtype: the head casts to its own policy.
            run = tf.function(lambda x: tf.cast(self.extractor(x, training=False), tf.float32))
            graph = self.graphs[key] = run.get_concrete_function(
                tf.TensorSpec((None, *images.shape[1:]), images.dtype))
        return graph(images)


def features(extract, ds, label="extracting features", verbose=0, total=None, sizes=None,
             rows=None, mirror_rows=None):
    """(features, labels) as NumPy arrays of every batch of `ds`, through `extract`; the size
    of every batch is appended to the list `sizes` when given. `rows` (a `_store.Rows`)
    says where the features go: in memory by default. `mirror_rows` (a `_store.Rows`),
    when given, receives the features of the images flipped left to right."""
    from tltf._progress import progress

    if total is None and int(ds.cardinality()) >= 0:
        total = int(ds.cardinality())
    rows = rows if rows is not None else _store.Rows(None, "features")
    ys = []
    for images, labels in progress(ds, label, verbose, total=total, unit="batches"):
        rows.append(extract(images))
        if mirror_rows is not None:
            mirror_rows.append(extract(tf.reverse(images, [2])))  # (batch, H, W, C)
        ys.append(np.asarray(labels))
        if sizes is not None:
            sizes.append(len(ys[-1]))
    if not ys:
        raise ValueError("The data set is empty: there is nothing to train on. "
                         "Received: 0 batches")
    return rows.array(), np.concatenate(ys)


def class_weight_of(option, train):
    if option is None:
        return None
    if option == "balanced":
        if not hasattr(train, "class_weight"):
            raise ValueError(
                "`class_weight='balanced'` needs class counts, which only a "
                "tltf.ImageDataset has; pass a dict {class index: weight} instead. "
                f"Received: class_weight={option!r}"
            )
        return train.class_weight()
    if not isinstance(option, dict):
        raise ValueError(
            "`class_weight` must be None, 'balanced' or a dict {class index: weight}. "
            f"Received: class_weight={option!r}"
        )
    return {int(k): float(v) for k, v in option.items()}


def check_args(head_epochs, finetune_epochs, batch_size, label_smoothing, early_stopping,
                discriminative_lr, cache_features, resume, directory, head_lr, finetune_lr):
    for name, value in (("head_epochs", head_epochs), ("finetune_epochs", finetune_epochs)):
        if name == "finetune_epochs" and value == "auto":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            also = " or 'auto'" if name == "finetune_epochs" else ""
            raise ValueError(f"`{name}` must be an int >= 0 (0 skips the phase){also}. "
                             f"Received: {name}={value!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1. Received: batch_size={batch_size!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(
            f"`label_smoothing` must be in [0, 1). Received: label_smoothing={label_smoothing!r}")
    for name, value in (("head_lr", head_lr), ("finetune_lr", finetune_lr)):
        if value != "auto" and not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(
                f"`{name}` must be 'auto' or a positive float. Received: {name}={value!r}")
    if not isinstance(early_stopping, (bool, int)) or early_stopping < 0:
        raise ValueError(
            "`early_stopping` must be True, False or a patience in epochs (int >= 1). "
            f"Received: early_stopping={early_stopping!r}")
    if discriminative_lr is not None and not 0.0 < discriminative_lr <= 1.0:
        raise ValueError(
            "`discriminative_lr` must be None or a factor in (0, 1]. "
            f"Received: discriminative_lr={discriminative_lr!r}")
    if cache_features not in (True, False, "auto"):
        raise ValueError(
            "`cache_features` must be True, False or 'auto'. "
            f"Received: cache_features={cache_features!r}")
    if resume and directory is None:
        raise ValueError(
            "`resume=True` needs the `directory` of the run to continue. "
            f"Received: directory={directory!r}")


def check_tensorboard(directory) -> None:
    if directory is None:
        raise ValueError(
            "`tensorboard=True` writes event files into the run folder, so it needs "
            "`directory`. Pass directory=... or tensorboard=False. Received: directory=None"
        )
    try:
        import tensorboard  # noqa: F401  (Keras' callback writes; this package reads them)
    except ImportError:
        raise ImportError(
            "`tensorboard=True` needs the tensorboard package, which TensorFlow no longer "
            'installs. Install it with: pip install "tltf[tensorboard]"'
        ) from None
