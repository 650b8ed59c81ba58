"""A checked list of files as an `ImageDataset`: its records and the decode of one record.

`load_image_folder`, `load_csv` and `predict` on files build their data sets here, from the
verdicts of the check pass (`tltf.data.checks`): which bytes to read, at which JPEG scale.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from tltf.data.dataset import ImageDataset
from tltf.data.decode import _decode_ratio, decode_image_file, resize_image


def _files_dataset(files, checks, labels, class_names, image_size, resize, skipped) -> ImageDataset:
    # Bytes, not str: a name that is not UTF-8 (b"caf\xe9.jpg", surrogate-escaped by
    # os.walk) reaches tf.io.read_file exactly as the file system spells it.
    decoded = [os.fsencode(c.decoded_path) for c in checks]
    ratios = _decode_ratio([c.height for c in checks], [c.width for c in checks],
                           [c.is_jpeg for c in checks], image_size, resize).numpy().tolist()
    decode_one = _uniform_decoder(checks, ratios)
    records = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant(decoded, tf.string),
            tf.constant(labels, tf.int32),
            tf.constant(ratios, tf.int32),
        )
    )

    def decode(path, label, ratio):
        return resize_image(decode_one(path, ratio), image_size, resize), label

    return ImageDataset(
        records,
        decode,
        class_names=class_names,
        labels=np.asarray(labels, np.int64),
        image_size=image_size,
        files=files,
        skipped=skipped,
    )


def _uniform_decoder(checks, ratios):
    """The decode of one file, fixed when the pipeline is built where the check pass says
    every file is a JPEG of the same size read at the same ratio (a camera's or a
    generator's folder): the decoder and the resize filter are then chosen once, not per
    image, which is a tenth of the decode's CPU time. A file that no longer has that size
    fails its shape check like any file broken after the check pass."""
    first = checks[0] if checks else None
    uniform = first is not None and ratios[0] >= 1 and all(
        r == ratios[0] and c.is_jpeg and (c.height, c.width) == (first.height, first.width)
        for c, r in zip(checks, ratios, strict=True))
    if not uniform:
        return decode_image_file
    ratio = ratios[0]
    shape = [-(-first.height // ratio), -(-first.width // ratio), 3]  # libjpeg rounds up

    def decode(path, _ratio):
        return tf.ensure_shape(decode_image_file(path, ratio), shape)

    return decode
