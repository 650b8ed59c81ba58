"""`ImageDataset`: labelled images of one split, and `prepare`, its input pipeline.

The loaders in `tltf.data.folder` build it; `fine_tune`, `evaluate`, `export_tflite` and `search`
consume it. `prepare` turns it into batches for training or evaluation: parallel decode,
cache of the decoded images, per-epoch reshuffle, optional augmentation, prefetch.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from tltf.data import _shares
from tltf.data._cache_choice import choose_cache, new_cache_prefix
from tltf.data.augment import Policy, batch_augmenter

__all__ = ["ImageDataset"]

_AUTOTUNE = tf.data.AUTOTUNE
_SHUFFLE_BYTES = 512 * 2**20  # cap of the shuffle window of records that hold encoded images
# Cap of the shuffle buffer of decoded images (1,700 at 160 px). In pairs of first epochs
# over 200k images, a 512 MB buffer cost 1.13x (memory cache) to 1.38x (disk cache) the CPU
# of this one: its images are freed in random order, long after they were made.
_SHUFFLE_IMAGE_BYTES = 128 * 2**20


class ImageDataset:
    """Labelled images of one split, with their class names and a `tf.data` pipeline.

    Built by `load_image_folder`, `load_tfds`, `load_arrays` or `load_csv`; not usually
    constructed by hand.

    Args:
        records: `tf.data.Dataset` of undecoded elements (e.g. file path, label, JPEG scale).
        decode: function mapping one element of `records` to (uint8 image, int32 label).
        class_names: class names, index = label.
        labels: int array, one label per element of `records`, in order.
        image_size: (height, width) of the decoded images.
        files: source files in order, or `None`. Defaults to `None`.
        skipped: (path, reason) of the files left out. Defaults to `()`.
        image_bytes: bytes of one decoded image, to size shuffle buffers. Defaults to
            height * width * 3.
        record_bytes: bytes of one element of `records` when they hold the encoded image
            (TFRecords), to bound the shuffle buffer of records. Defaults to `None` (records
            are small: a path and a label, all shuffled at once).
        record_files: `(file, count)` of each file `records` is read from, in order, with
            `read_records`, a function from a list of those files to their records: then a
            worker of `prepare(shard=...)` reads only its own files, not every record.
            Defaults to `None` (a worker's share is cut from `records` element by element).
        read_records: see `record_files`. Defaults to `None`.

    Attributes:
        dataset: `tf.data.Dataset` of unbatched (uint8 image (H, W, 3), int32 label) pairs,
            in a fixed order.
        class_names: list of str, index = label.
        num_classes: int.
        class_counts: dict, class name -> number of images.
        files: list of str (the source files, in dataset order) or `None` for in-memory data.
        labels: int numpy array, one label per image, in dataset order.
        image_size: (height, width) of every image.
        skipped: list of (path, reason) for files left out (corrupt, truncated, empty, ...).

    Example:

    >>> import numpy as np
    >>> from tltf.data import load_arrays
    >>> x = np.random.randint(0, 255, (8, 32, 32, 3), dtype="uint8")
    >>> data = load_arrays(x, np.array([0, 1] * 4), class_names=["cat", "dog"])
    >>> batch_x, batch_y = next(iter(data.prepare(training=True, batch_size=4, seed=0)))
    >>> tuple(batch_x.shape), batch_x.dtype.name
    ((4, 32, 32, 3), 'float32')
    """

    def __init__(
        self,
        records: tf.data.Dataset,
        decode: Callable[..., tuple[tf.Tensor, tf.Tensor]],
        *,
        class_names: Sequence[str],
        labels: np.ndarray,
        image_size: tuple[int, int],
        files: Sequence[str] | None = None,
        skipped: Sequence[tuple[str, str]] = (),
        image_bytes: int | None = None,
        record_bytes: int | None = None,
        record_files: Sequence[tuple[str, int]] | None = None,
        read_records: Callable[[list[str]], tf.data.Dataset] | None = None,
    ):
        self._records = records
        self._record_files = list(record_files) if record_files and read_records else None
        self._read_records = read_records
        self._decode = decode
        self.class_names = [str(c) for c in class_names]
        self.num_classes = len(self.class_names)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.files = list(files) if files is not None else None
        self.skipped = list(skipped)
        counts = (
            np.bincount(self.labels, minlength=self.num_classes)
            if len(self.labels)
            else np.zeros(self.num_classes, int)
        )
        self.class_counts = {name: int(n) for name, n in zip(self.class_names, counts, strict=True)}
        self._image_bytes = image_bytes or self.image_size[0] * self.image_size[1] * 3
        self._record_bytes = record_bytes

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"ImageDataset({len(self)} images, {self.num_classes} classes {self.class_names[:5]}"
            f"{'...' if self.num_classes > 5 else ''}, image_size={self.image_size}"
            f"{f', {len(self.skipped)} files skipped' if self.skipped else ''})"
        )

    @property
    def dataset(self) -> tf.data.Dataset:
        """Unbatched (uint8 image, int32 label) pairs, decoded and resized on the fly."""
        return self._records.map(self._decode, num_parallel_calls=_AUTOTUNE, deterministic=True)

    def class_weight(self) -> dict[int, float]:
        """Per-class weights for `fit(class_weight=...)` that balance the classes.

        Weight of class `c` = `len(self) / (num_classes * count_c)` (scikit-learn's
        "balanced"), so every class contributes equally to the loss. A class without images
        gets 1.0.

        Returns:
            dict, label -> float weight.

        Example:

        >>> import numpy as np
        >>> from tltf.data import load_arrays
        >>> x = np.zeros((4, 8, 8, 3), "uint8")
        >>> load_arrays(x, np.array([0, 0, 0, 1])).class_weight()
        {0: 0.6666666666666666, 1: 2.0}
        """
        total = len(self)
        return {
            i: (total / (self.num_classes * n) if n else 1.0)
            for i, n in enumerate(self.class_counts.values())
        }

    def prepare(
        self,
        *,
        training: bool,
        batch_size: int = 32,
        cache: str | os.PathLike | None = "auto",
        cache_dir: str | os.PathLike | None = None,
        augment: Policy = None,
        seed: int | None = None,
        shuffle: bool | None = None,
        one_hot: bool = False,
        deterministic: bool | None = None,
        drop_remainder: bool = False,
        shard: tuple[int, int] | None = None,
    ) -> tf.data.Dataset:
        """Batches for `fit`, `evaluate` or `predict`: decode, cache, shuffle, augment, prefetch.

        Images are decoded and resized in parallel; with a cache they are decoded once, so
        later epochs only read memory or the cache file. By default the cache is in memory
        when it fits, on disk when it does not (see `cache`). Shuffling happens every epoch
        (seeded when `seed` is given; with a cache, the file order is shuffled once before it
        and the decoded images every epoch within a buffer of 128 MB, about 1,700 images at
        160 px). Augmentation runs after the cache, on whole batches.

        Args:
            training: bool. `True` shuffles (unless `shuffle` says otherwise) and allows
                augmentation; `False` keeps the dataset order.
            batch_size: int. Defaults to `32`.
            cache: `"auto"`, `"memory"`, `"disk"`, a file path prefix, or `None`. Where
                the decoded images are kept after the first epoch. `"auto"` chooses memory
                when the decoded set (N x H x W x 3 bytes) fits 25% of the memory available
                now, else `"disk"` when it fits half the free space of `cache_dir`'s disk,
                else `None`, and warns once with the figures when it does not choose memory.
                `"disk"` writes `tf.data` cache files into a new folder under `cache_dir`,
                removed when the process ends. A path prefix writes the cache files there
                and keeps them (use one prefix per data set and image size, since an
                existing complete cache is read back as it is). `None` decodes every epoch.
                Defaults to `"auto"`.
            cache_dir: str, path or `None`. The folder of a `"disk"` (or `"auto"` on disk)
                cache, e.g. the run folder. Defaults to the temp folder.
            augment: a policy name, list of ops or layer (see
                `tltf.data.augment.augmentation_layers`), applied in `tf.data`. Only with
                `training=True`. Defaults to `None`.
            seed: int or `None`. Seed of the shuffle and of the augmentation. Defaults to
                `None`.
            shuffle: bool or `None`. Defaults to `training`.
            one_hot: bool. Labels as one-hot float32 vectors instead of int32. Required by
                MixUp/CutMix. Defaults to `False`.
            deterministic: bool or `None`. Keep element order reproducible even with
                parallel decoding (slightly slower). Defaults to `True` when `seed` is given
                or `training` is `False`, else `False`.
            drop_remainder: bool. Drop the last, smaller batch. Defaults to `False`.
            shard: `(num_shards, index)` or `None`. Prepare only this worker's share of a
                multi-worker run (`tltf.training.distribute.worker_shard(strategy)` gives
                it): the elements `index, index + num_shards, ...`, chosen before
                decoding, so this process decodes and caches only its own files (with
                `record_files`, at least one per worker: the files `index, index +
                num_shards, ...`, so it reads no other worker's records). Give
                the global `batch_size`, as without sharding: `tf.distribute` takes
                `batch_size / num_shards` images of each worker's own share per step.
                Every share is padded to the same whole number of such steps by repeating
                its first elements (fewer than `batch_size` repeats in all; by record
                file, up to a file's worth, to the largest share), so that all
                workers run the same steps and every step is a full global batch. An
                epoch then has about `num_shards` times more steps than this dataset has
                batches: Keras reads it until it ends (do not set `steps_per_epoch` from
                its batches). The dataset is marked so that `tf.distribute` does not
                shard it again. A `cache` path prefix gets the suffix
                `.shard-<index>-of-<num_shards>`, so workers sharing a disk never write
                the same cache file. Defaults to `None` (all).

        Returns:
            A `tf.data.Dataset` of (float32 images in [0, 255] of shape
            (batch, height, width, 3), labels).

        Raises:
            ValueError: if `batch_size` is not a positive int, `cache` is invalid,
                `augment` is given with `training=False`, MixUp/CutMix without `one_hot`,
                or `shard` is not `(num_shards, index)` with `0 <= index < num_shards <=
                len(self)`.

        Example:

        >>> import numpy as np
        >>> from tltf.data import load_arrays
        >>> x = np.random.randint(0, 255, (6, 32, 32, 3), dtype="uint8")
        >>> data = load_arrays(x, np.array([0, 1, 2] * 2))
        >>> ds = data.prepare(training=False, batch_size=4, one_hot=True)
        >>> [tuple(y.shape) for _, y in ds]
        [(4, 3), (2, 3)]
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(
                f"Expected `batch_size` to be a positive int. Received: batch_size={batch_size!r}"
            )
        if cache is not None and not isinstance(cache, (str, os.PathLike)):
            raise ValueError(
                "Expected `cache` to be 'auto', 'memory', 'disk', a file path prefix or None. "
                f"Received: cache={cache!r}"
            )
        if augment is not None and augment != "none" and not training:
            raise ValueError(
                "Augmentation only applies to training batches; pass `augment=None` with "
                f"`training=False`. Received: augment={augment!r}, training={training}"
            )
        num_shards, index = _shares.check_shard(shard, len(self))
        size, _ = _shares.share(self, batch_size, num_shards)  # elements this process prepares
        augmenter = batch_augmenter(augment, seed, one_hot=one_hot) if training else None
        shuffle = training if shuffle is None else shuffle
        if deterministic is None:
            deterministic = seed is not None or not training
        if cache == "auto":
            h, w = self.image_size
            cache = choose_cache(size * self._image_bytes, cache_dir,
                                 f"{size:,} images at {h}x{w}")
        elif cache == "disk":
            cache = os.fspath(new_cache_prefix(
                Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir())))
        elif cache not in (None, "memory") and num_shards > 1:
            cache = f"{os.fspath(cache)}.shard-{index}-of-{num_shards}"

        ds = self._records
        if num_shards > 1:
            # Before decoding: this worker reads only its own files (the record files, when
            # there are enough to go round, else its elements of the records). In a fixed
            # order, so that every epoch (and the cache) holds the same share.
            by_file = _shares.files_of_shard(self, num_shards, index)
            ds = (self._read_records([f for f, _ in by_file]) if by_file is not None
                  else ds.shard(num_shards, index))
            ds = ds.repeat().take(size)
        if shuffle:
            # Shuffling file names is cheap. Without a cache this is the per-epoch shuffle;
            # with one it mixes the (class-sorted) order once, so that the bounded buffer of
            # decoded images after the cache never serves batches of a single class.
            window = size if not self._record_bytes else _SHUFFLE_BYTES // self._record_bytes
            ds = ds.shuffle(max(1, min(size, window)), seed=seed,
                            reshuffle_each_iteration=cache is None)
        ds = ds.map(self._decode, num_parallel_calls=_AUTOTUNE, deterministic=deterministic)
        # Last resort for a file broken after the validation pass: drop the (image, label)
        # pair with a logged warning, keep the epoch. Images and labels stay paired; code that
        # reports per file (evaluate, predict) reads through `_batches_in_order` instead,
        # which never drops and names the file.
        ds = ds.ignore_errors(log_warning=True)
        if cache is not None:
            if cache == "memory":
                ds = ds.cache()
            else:
                Path(cache).parent.mkdir(parents=True, exist_ok=True)
                ds = ds.cache(os.fspath(cache))
            if shuffle:
                buffer = max(1, min(size, _SHUFFLE_IMAGE_BYTES // self._image_bytes))
                ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(
            batch_size,
            drop_remainder=drop_remainder,
            num_parallel_calls=_AUTOTUNE,
            deterministic=deterministic,
        )
        num_classes = self.num_classes

        def to_model_inputs(images, labels):
            labels = (
                tf.one_hot(labels, num_classes, dtype=tf.float32)
                if one_hot
                else tf.cast(labels, tf.int32)
            )
            images = tf.cast(images, tf.float32)
            if augmenter is not None:  # one map: no extra hand-over between tf.data stages
                return augmenter(images, labels)
            return images, labels

        ds = ds.map(to_model_inputs, num_parallel_calls=_AUTOTUNE, deterministic=deterministic)
        options = tf.data.Options()
        # The maps above say `deterministic` themselves; this sets the ops that do not. A
        # share must be cut from the same order on every worker, so under `shard` the
        # records' own ops (the parallel parse of TFRecords) keep their order.
        options.deterministic = deterministic or num_shards > 1
        if num_shards > 1:  # sharded already: tf.distribute must not drop elements again
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.OFF)
        return ds.with_options(options).prefetch(_AUTOTUNE)


def _batches_in_order(data: ImageDataset, batch_size: int):
    """Yields (float32 images, labels) of every element in order; never drops one.

    For results reported per file (evaluation, prediction): a file that cannot be decoded
    any more (changed after the validation pass) raises a ValueError naming it, instead of
    being left out and shifting every later file onto the wrong result.
    """
    ds = data.dataset.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y))
    done = 0
    try:
        for images, labels in ds.prefetch(_AUTOTUNE):
            yield images, labels
            done += int(labels.shape[0])
    except tf.errors.OpError as error:
        for i, record in enumerate(data._records.skip(done).take(batch_size), start=done):
            try:
                data._decode(*record)
            except tf.errors.OpError:
                name = data.files[i] if data.files is not None else f"element {i}"
                reason = str(error.message).strip().splitlines()[0][:200]
                raise ValueError(
                    f"Cannot decode {name} although it passed the check when the data was "
                    f"loaded (did it change since?): {reason}. Load the data again to check it "
                    f"again, or remove the file. Received: file={name!r}"
                ) from None
        raise

