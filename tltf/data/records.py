"""TFRecord shards of a checked image folder, for folders too large to list every run.

`write_records` stores the bytes of every image that passed the check pass (the original
file, or its PNG re-encoding), its label and its stored size in sharded TFRecord files, with
a `records.json` manifest (class names, counts, shards) and the labels; `load_records` reads
them back as an `ImageDataset` without listing, stat-ing or checking a single file, through
`tf.io.gfile`, so the shards may sit on `gs://` or `s3://`. Decoding is the one decode path
(`tltf.data.decode.decode_image_bytes`), JPEG DCT scaling included, so a model sees the same
pixels as from the folder.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from tltf._io import atomic_path, atomic_write, load_arrays, save_arrays
from tltf._progress import progress
from tltf.data.checks import check_files
from tltf.data.dataset import ImageDataset
from tltf.data.decode import (
    _check_resize,
    _decode_ratio,
    _image_size,
    decode_image_bytes,
    resize_image,
)

__all__ = ["load_records", "write_records"]

_MANIFEST = "records.json"
_LABELS = "labels.npz"
_VERSION = 1
_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "height": tf.io.FixedLenFeature([], tf.int64),
    "width": tf.io.FixedLenFeature([], tf.int64),
    "jpeg": tf.io.FixedLenFeature([], tf.int64),
}


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def write_records(
    data: ImageDataset,
    folder: str | os.PathLike,
    *,
    shard_size: int = 2000,
    cache_dir: str | os.PathLike | None = None,
    verbose: int | str = 0,
) -> Path:
    """Writes a folder-loaded `ImageDataset` to sharded TFRecord files, once.

    Every file of `data` is looked up in the check cache (give the `cache_dir` the data was
    loaded with, and no image is checked again), and its bytes are stored as they are: a
    JPEG stays a JPEG. Each shard is written atomically; `records.json` is written last,
    so a folder without it is an interrupted write.

    Args:
        data: an `ImageDataset` from `load_image_folder` or `load_csv` (with `files`).
        folder: str or path. A local folder for the shards (created; copy it to `gs://`
            or `s3://` afterwards if the training machines read from there).
        shard_size: int. Images per shard. Defaults to `2000` (about 30 MB of JPEGs).
        cache_dir: str, path or `None`. The check cache; see `tltf.data.checks.check_files`.
        verbose: 0, 1, 2 or `"auto"`: progress over the images written. Defaults to `0`.

    Returns:
        The folder, as a `Path`.

    Raises:
        ValueError: if `data` has no files (in-memory data), or `shard_size` is not a
            positive int, or a file changed since it was loaded and no longer passes.

    Example:

    >>> import tempfile, pathlib, numpy as np
    >>> from PIL import Image
    >>> from tltf.data import load_image_folder
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ["cat", "dog"]:
    ...     (root / name).mkdir()
    ...     for i in range(3):
    ...         Image.fromarray(np.full((40, 50, 3), 40 * i, "uint8")).save(root / name / f"{i}.jpg")
    >>> data = load_image_folder(root, image_size=32, cache_dir=root / ".c")
    >>> shards = write_records(data, root / "records", shard_size=4, cache_dir=root / ".c")
    >>> sorted(p.name for p in shards.iterdir())
    ['images-00000-of-00002.tfrecord', 'images-00001-of-00002.tfrecord', 'labels.npz', 'records.json']
    """
    if data.files is None:
        raise ValueError(
            "`write_records` stores the files an ImageDataset was loaded from, but this one has "
            "none (in-memory data); load it with load_image_folder or load_csv. "
            f"Received: data={data!r}"
        )
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(
            f"Expected `shard_size` to be a positive int. Received: shard_size={shard_size!r}"
        )
    checks = check_files(data.files, cache_dir=cache_dir)
    bad = [(c.path, c.reason) for c in checks if not c.ok]
    if bad:
        raise ValueError(
            f"{len(bad)} file(s) changed since the data was loaded and no longer pass the check, "
            f"e.g. {bad[0][0]}: {bad[0][1]}. Load the folder again. Received: file={bad[0][0]!r}"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = -(-len(checks) // shard_size)
    names = [f"images-{i:05d}-of-{count:05d}.tfrecord" for i in range(count)]
    total_bytes, counts = 0, []
    with progress(len(checks), "writing records", verbose, unit="images") as bar:
        for i, name in enumerate(names):
            part = range(i * shard_size, min(len(checks), (i + 1) * shard_size))
            counts.append(len(part))
            with atomic_path(folder / name) as tmp, tf.io.TFRecordWriter(os.fspath(tmp)) as out:
                for j in part:
                    check = checks[j]
                    with tf.io.gfile.GFile(check.decoded_path, "rb") as f:
                        image = f.read()
                    total_bytes += len(image)
                    example = tf.train.Example(features=tf.train.Features(feature={
                        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
                        "label": _int(data.labels[j]),
                        "height": _int(check.height),
                        "width": _int(check.width),
                        "jpeg": _int(check.is_jpeg),
                    }))
                    out.write(example.SerializeToString())
                    bar.update()
    save_arrays(folder / _LABELS, [np.asarray(data.labels, np.int64)])
    atomic_write(folder / _MANIFEST, json.dumps({
        "version": _VERSION, "class_names": data.class_names, "count": len(checks),
        "shards": names, "shard_counts": counts, "mean_bytes": total_bytes // max(1, len(checks)),
    }, indent=1))
    return folder


def load_records(
    folder: str | os.PathLike,
    *,
    image_size: int | Sequence[int] = 224,
    resize: str = "stretch",
) -> ImageDataset:
    """Reads the shards of `write_records` as an `ImageDataset`, listing no image file.

    Args:
        folder: str or path. The folder `write_records` wrote (local, or a `gs://` / `s3://`
            / `ram://` URL).
        image_size: int or (height, width). Size of the output images. Defaults to `224`.
        resize: `"stretch"`, `"crop"` or `"pad"`, as in `load_image_folder`. Defaults to
            `"stretch"`.

    Returns:
        An `ImageDataset` (`files` is `None`). Training batches are shuffled within a window
        of about 512 MB of encoded images, then again after the cache.

    Raises:
        FileNotFoundError: if `folder` holds no `records.json` (not written, or interrupted).
        ValueError: if the manifest is of another version, or a bad argument.

    Example:

    >>> import tempfile, pathlib, numpy as np
    >>> from PIL import Image
    >>> from tltf.data import load_image_folder
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for i in range(4):  # classes a and b, two PNGs each
    ...     (root / "ab"[i % 2]).mkdir(exist_ok=True)
    ...     Image.fromarray(np.full((20, 30, 3), 60 * i, "uint8")).save(root / "ab"[i % 2] / f"{i}.png")
    >>> folder = load_image_folder(root, image_size=16, cache_dir=root / ".c")
    >>> _ = write_records(folder, root / "r", cache_dir=root / ".c")
    >>> again = load_records(root / "r", image_size=16)
    >>> again.class_counts, tuple(next(iter(again.dataset))[0].shape)
    ({'a': 2, 'b': 2}, (16, 16, 3))
    """
    size = _image_size(image_size)
    _check_resize(resize)
    base = os.fspath(folder).rstrip("/")
    manifest_path = f"{base}/{_MANIFEST}"
    if not tf.io.gfile.exists(manifest_path):
        raise FileNotFoundError(
            f"Expected TFRecord shards written by write_records in {base}, but it holds no "
            f"{_MANIFEST} (never written, or the write was interrupted: write it again). "
            f"Received: folder={base!r}"
        )
    with tf.io.gfile.GFile(manifest_path, "r") as f:
        manifest = json.loads(f.read())
    if manifest.get("version") != _VERSION:
        raise ValueError(
            f"{manifest_path} is of version {manifest.get('version')!r}; this tltf reads version "
            f"{_VERSION}. Write the records again. Received: folder={base!r}"
        )
    labels = _read_labels(f"{base}/{_LABELS}")
    files = [f"{base}/{name}" for name in manifest["shards"]]

    def parse(serialized):
        e = tf.io.parse_single_example(serialized, _FEATURES)
        return e["image"], tf.cast(e["label"], tf.int32), e["height"], e["width"], e["jpeg"]

    def decode(image, label, height, width, jpeg):
        ratio = _decode_ratio(height, width, jpeg > 0, size, resize)
        return resize_image(decode_image_bytes(image, ratio), size, resize), label

    def read(names):
        return tf.data.TFRecordDataset(names).map(parse, num_parallel_calls=tf.data.AUTOTUNE)

    records = read(files).apply(tf.data.experimental.assert_cardinality(int(manifest["count"])))
    counts = manifest.get("shard_counts")  # absent from records written by tltf 0.1
    if counts is not None and (
            not isinstance(counts, list) or len(counts) != len(files)
            or not all(isinstance(n, int) and n >= 0 for n in counts)
            or sum(counts) != int(manifest["count"])):
        raise ValueError(
            f"{manifest_path} is damaged: `shard_counts` must give the images of each of its "
            f"{len(files)} shards, {manifest['count']} in all. Write the records again. "
            f"Received: shard_counts={str(counts)[:200]}")
    return ImageDataset(records, decode, class_names=manifest["class_names"], labels=labels,
                        image_size=size, record_bytes=int(manifest.get("mean_bytes", 0)) or None,
                        record_files=list(zip(files, counts, strict=True)) if counts else None,
                        read_records=read)


def _read_labels(path: str) -> np.ndarray:
    with tf.io.gfile.GFile(path, "rb") as f:  # local or remote alike
        return load_arrays(io.BytesIO(f.read()))[0]
