"""In-memory and listed sources as `ImageDataset`: arrays, CSV / DataFrame, TFDS."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from tltf.data._checked_files import _files_dataset
from tltf.data._splits import check_split_sizes, split_fractions, stratified_split
from tltf.data.checks import _validated
from tltf.data.dataset import ImageDataset
from tltf.data.decode import _as_rgb_uint8, _check_resize, _image_size, resize_image

__all__ = ["load_arrays", "load_csv", "load_tfds"]


def load_csv(
    source: Any,
    *,
    path_column: str = "path",
    label_column: str = "label",
    root: str | os.PathLike | None = None,
    image_size: int | Sequence[int] = 224,
    validation_split: float | None = None,
    seed: int = 0,
    resize: str = "stretch",
    class_names: Sequence[str] | None = None,
    strict: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> ImageDataset | tuple[ImageDataset, ImageDataset]:
    """Loads images listed in a CSV file or a pandas DataFrame (one row: path, label).

    Args:
        source: str/path of a CSV file, or a `pandas.DataFrame`.
        path_column: str. Column of image paths. Defaults to `"path"`.
        label_column: str. Column of labels: class names (str) or ints. Defaults to
            `"label"`.
        root: folder that relative paths are relative to. Defaults to the CSV file's folder
            (the current directory for a DataFrame).
        image_size: int or (height, width). Defaults to `224`.
        validation_split: float in (0, 1) or `None`. Stratified, seeded. Defaults to `None`.
        seed: int. Seed of the split. Defaults to `0`.
        resize: `"stretch"`, `"crop"` or `"pad"`. Defaults to `"stretch"`.
        class_names: list of str or `None`. Label order. Defaults to the sorted distinct
            labels (or `"0"`, `"1"`, ... for int labels).
        strict: bool. Raise on unusable files. Defaults to `False`.
        cache_dir: where the validation cache goes. Defaults to
            `tltf.data.checks.default_cache_dir()`.

    Returns:
        An `ImageDataset`, or `(train, validation)` with `validation_split`.

    Raises:
        FileNotFoundError: if the CSV file does not exist.
        ValueError: if a column is missing, a label is not among `class_names`, or there are
            fewer than two classes.

    Example:

    >>> import tempfile, pathlib, numpy as np, pandas as pd
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for i in range(4):
    ...     Image.fromarray(np.random.randint(0, 255, (20, 20, 3), "uint8")).save(d / f"{i}.png")
    >>> df = pd.DataFrame({"path": [f"{i}.png" for i in range(4)], "label": ["a", "b"] * 2})
    >>> load_csv(df, root=d, image_size=16, cache_dir=d / "c").class_counts
    {'a': 2, 'b': 2}
    """
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        frame, base = source, Path(root) if root is not None else Path.cwd()
    else:
        csv = Path(source)
        if not csv.is_file():
            raise FileNotFoundError(
                f"Expected a CSV file, but {csv} does not exist. Received: source={str(source)!r}"
            )
        frame, base = pd.read_csv(csv), Path(root) if root is not None else csv.parent
    for column, arg in ((path_column, "path_column"), (label_column, "label_column")):
        if column not in frame.columns:
            raise ValueError(
                f"Expected a column {column!r} in the table; it has {list(frame.columns)}. Received: {arg}={column!r}"
            )
    size = _image_size(image_size)
    _check_resize(resize)
    fractions = split_fractions(validation_split, None)
    raw = frame[label_column].tolist()
    if class_names is None:
        if all(isinstance(v, (int, np.integer)) for v in raw):
            class_names = [str(i) for i in range(int(max(raw)) + 1)] if raw else []
        else:
            class_names = sorted({str(v) for v in raw})
    names = [str(c) for c in class_names]
    if len(names) < 2:
        raise ValueError(
            f"A classifier needs at least two classes. Received: class_names={names!r}"
        )
    index = {n: i for i, n in enumerate(names)}
    labels = []
    for v in raw:
        key = str(v)
        if (
            isinstance(v, (int, np.integer))
            and not isinstance(v, bool)
            and key not in index
            and 0 <= v < len(names)
        ):
            labels.append(int(v))
        elif key in index:
            labels.append(index[key])
        else:
            raise ValueError(
                f"Label {v!r} is not among the class names {names}. Received: label={v!r}"
            )
    files = [str(p if os.path.isabs(p) else base / p) for p in frame[path_column].astype(str)]
    files, checks, labels, bad = _validated(
        files, labels, strict=strict, cache_dir=cache_dir, what="the table"
    )
    if not files:
        raise ValueError(
            f"The table lists no usable image ({len(bad)} file(s) left out, see the warning); "
            f"there is nothing to train on. Received: source with {len(frame)} row(s)"
        )
    if not fractions:
        return _files_dataset(files, checks, labels, names, size, resize, bad)
    check_split_sizes(labels, names, fractions, "the table",
                      f"validation_split={validation_split!r}")
    train, val = stratified_split(np.asarray(labels), fractions, seed)
    return tuple(
        _files_dataset(
            [files[i] for i in p],
            [checks[i] for i in p],
            [labels[i] for i in p],
            names,
            size,
            resize,
            bad if p is train else [],
        )
        for p in (train, val)
    )


def load_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    image_size: int | Sequence[int] | None = None,
    resize: str = "stretch",
    validation_split: float | None = None,
    seed: int = 0,
) -> ImageDataset | tuple[ImageDataset, ImageDataset]:
    """Wraps in-memory images and labels as an `ImageDataset`.

    Args:
        x: array (N, H, W), (N, H, W, 1), (N, H, W, 3) or (N, H, W, 4) of pixels in
            [0, 255] (uint8 or float). Gray is repeated to RGB; alpha is dropped.
        y: int labels (N,) or one-hot (N, num_classes).
        class_names: list of str or `None`. Defaults to `"0"`, `"1"`, ... up to the
            largest label (or the one-hot width).
        image_size: int, (height, width) or `None` to keep the arrays' size. Defaults to
            `None`.
        resize: `"stretch"`, `"crop"` or `"pad"`. Defaults to `"stretch"`.
        validation_split: float in (0, 1) or `None`. Defaults to `None`.
        seed: int. Seed of the split. Defaults to `0`.

    Returns:
        An `ImageDataset`, or `(train, validation)` with `validation_split`.

    Raises:
        ValueError: if shapes do not match, a label is out of range or there are fewer than
            two classes.

    Example:

    >>> import numpy as np
    >>> data = load_arrays(np.zeros((4, 28, 28), "uint8"), np.array([0, 1, 1, 0]), image_size=32)
    >>> data.image_size, data.num_classes
    ((32, 32), 2)
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3, 4)):
        raise ValueError(f"Expected `x` of shape (N, H, W[, 1|3|4]). Received: x.shape={x.shape}")
    if y.ndim == 2:
        width = y.shape[1]
        y = np.argmax(y, axis=1)
    else:
        width = int(y.max()) + 1 if y.size else 0
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"Expected one label per image. Received: x.shape={x.shape}, y.shape={y.shape}"
        )
    if not len(x):
        raise ValueError(
            f"Expected at least one image; the arrays are empty. Received: x.shape={x.shape}"
        )
    names = (
        [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(width)]
    )
    if y.size and (y.min() < 0 or y.max() >= len(names)):
        raise ValueError(
            f"Expected labels in [0, {len(names)}). Received: y with range [{y.min()}, {y.max()}]"
        )
    if len(names) < 2:
        raise ValueError(
            f"A classifier needs at least two classes. Received: class_names={names!r}"
        )
    _check_resize(resize)
    fractions = split_fractions(validation_split, None)
    x = _as_rgb_uint8(x)
    size = _image_size(image_size) if image_size is not None else (x.shape[1], x.shape[2])
    same = size == (x.shape[1], x.shape[2])

    def decode(image, label):
        return (image if same else resize_image(image, size, resize)), label

    def make(idx):
        records = tf.data.Dataset.from_tensor_slices((x[idx], y[idx].astype(np.int32)))
        return ImageDataset(records, decode, class_names=names, labels=y[idx], image_size=size)

    if not fractions:
        return make(np.arange(len(x)))
    check_split_sizes(y, names, fractions, "the arrays", f"validation_split={validation_split!r}")
    return tuple(make(p) for p in stratified_split(y, fractions, seed))


def _tfds_keys(features, image_key, label_key):
    import tensorflow_datasets as tfds

    def pick(kind, given, arg):
        if given is not None:
            if given not in features or not isinstance(features[given], kind):
                raise ValueError(
                    f"Expected `{arg}` to name a {kind.__name__} feature among {list(features)}. Received: {arg}={given!r}"
                )
            return given
        keys = [k for k in features if isinstance(features[k], kind)]
        if not keys:
            raise ValueError(
                f"The data set has no {kind.__name__} feature (features: {list(features)}); pass `{arg}`. Received: {arg}=None"
            )
        return keys[0]

    return pick(tfds.features.Image, image_key, "image_key"), pick(
        tfds.features.ClassLabel, label_key, "label_key"
    )


def load_tfds(
    name: str,
    *,
    split: str | Sequence[str] = "train",
    data_dir: str | os.PathLike | None = None,
    image_size: int | Sequence[int] = 224,
    resize: str = "stretch",
    image_key: str | None = None,
    label_key: str | None = None,
    download: bool = True,
) -> ImageDataset | tuple[ImageDataset, ...]:
    """Loads a TensorFlow Datasets image classification data set.

    The image and label features are found from the data set's features (the first
    `Image` and `ClassLabel`), and class names come from the label feature. The labels are
    read once (without decoding images) to count the classes.

    Args:
        name: str. TFDS name, e.g. `"tf_flowers"` or `"cifar10:3.0.2"`.
        split: str or list of str. TFDS split(s), e.g. `"train[:80%]"`. A list returns a
            tuple. Defaults to `"train"`.
        data_dir: where TFDS keeps its data. Defaults to TFDS's default.
        image_size: int or (height, width). Defaults to `224`.
        resize: `"stretch"`, `"crop"` or `"pad"`. Defaults to `"stretch"`.
        image_key: str or `None`. Image feature name. Defaults to the first Image feature.
        label_key: str or `None`. Label feature name. Defaults to the first ClassLabel.
        download: bool. Download and prepare the data set if needed. Defaults to `True`.

    Returns:
        An `ImageDataset`, or a tuple of them when `split` is a list.

    Raises:
        ValueError: if the data set has no image or class label feature.

    Example:

    >>> import tensorflow_datasets as tfds
    >>> with tfds.testing.mock_data(num_examples=4):
    ...     data = load_tfds("mnist", image_size=32)
    >>> data.num_classes, data.image_size
    (10, (32, 32))
    """
    import tensorflow_datasets as tfds

    size = _image_size(image_size)
    _check_resize(resize)
    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    features = builder.info.features
    ikey, lkey = _tfds_keys(features, image_key, label_key)
    names = list(features[lkey].names)
    if len(names) < 2:
        raise ValueError(
            f"A classifier needs at least two classes; {name} has {names}. Received: name={name!r}"
        )

    def decode(image, label):
        image = tf.cond(
            tf.shape(image)[-1] == 1, lambda: tf.tile(image, [1, 1, 3]), lambda: image[..., :3]
        )
        image.set_shape([None, None, 3])
        return resize_image(image, size, resize), tf.cast(label, tf.int32)

    def make(one_split):
        lab = builder.as_dataset(
            split=one_split, shuffle_files=False, decoders={ikey: tfds.decode.SkipDecoding()}
        )
        labels = np.fromiter(lab.map(lambda ex: ex[lkey]).as_numpy_iterator(), dtype=np.int64)
        records = builder.as_dataset(split=one_split, shuffle_files=False).map(
            lambda ex: (ex[ikey], ex[lkey])
        )
        return ImageDataset(records, decode, class_names=names, labels=labels, image_size=size)

    if isinstance(split, str):
        return make(split)
    return tuple(make(s) for s in split)
