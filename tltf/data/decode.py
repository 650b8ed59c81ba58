"""The one decode path: an image file or array to a uint8 image of the size asked for.

Every loader and `evaluate`/`predict` read files through `decode_image_file` and
`resize_image`, after the check pass of `tltf.data.checks` has chosen which bytes to read
(the file, or its PNG re-encoding) and how far a JPEG may be scaled down while decoding.
The checks of the two arguments every loader takes, `image_size` and `resize`, live here too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

__all__ = ["RESIZE_MODES", "decode_image_bytes", "decode_image_file", "resize_image"]

RESIZE_MODES = ("stretch", "crop", "pad")
_MAX_IMAGE_SIZE = 4096  # a side above this is a typo (100000 would need 30 GB per image)
_RATIO_INDEX = [0, 1, 2, 0, 3, 0, 0, 0, 4]  # a decode ratio 0-8 -> its decoder below (0: any format)


def _image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """The one check of an `image_size` argument (data loaders, `build_classifier`, the CLI)."""
    given = image_size
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (
        not isinstance(image_size, Sequence)
        or len(image_size) != 2
        or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 1 <= v <= _MAX_IMAGE_SIZE
            for v in image_size
        )
    ):
        raise ValueError(
            "`image_size` must be an int or a (height, width) pair of ints, between 1 and "
            f"{_MAX_IMAGE_SIZE} pixels per side. Received: image_size={given!r}"
        )
    return int(image_size[0]), int(image_size[1])


def _check_resize(resize: str) -> None:
    """The one check of a `resize` argument (the loaders and `resize_image`)."""
    if resize not in RESIZE_MODES:
        raise ValueError(
            f"Expected `resize` to be one of {RESIZE_MODES}. Received: resize={resize!r}"
        )


def _decode_ratio(height, width, jpeg, image_size: Sequence[int], resize: str) -> tf.Tensor:
    """Largest JPEG DCT scale (1, 2, 4 or 8) that still leaves enough pixels for `resize`,
    0 where the file is not a JPEG, elementwise: for every checked file of a folder at once
    (ints or arrays) and for one record inside a `tf.data` graph (tensors) alike."""
    th, tw = image_size
    h, w = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    spare = (tf.maximum if resize == "pad" else tf.minimum)(h / th, w / tw)
    ratio = tf.where(spare >= 8, 8, tf.where(spare >= 4, 4, tf.where(spare >= 2, 2, 1)))
    return tf.where(tf.cast(jpeg, tf.bool), ratio, 0)


def decode_image_file(path: tf.Tensor, ratio: tf.Tensor | int = 0) -> tf.Tensor:
    """Reads and decodes one image file to a uint8 (H, W, 3) tensor with `tf.io`.

    Works inside `tf.data` (graph mode). Any format `tf.io.decode_image` reads is accepted;
    the first frame of a GIF is used.

    Args:
        path: scalar string tensor. The file to read.
        ratio: scalar int tensor or int. 0 to decode with `tf.io.decode_image`; 1, 2, 4 or 8
            to decode a JPEG with libjpeg's DCT scaling by that factor (much faster when the
            image is larger than needed).

    Returns:
        uint8 tensor of shape (height, width, 3).

    Example:

    >>> import tempfile, os, numpy as np
    >>> from PIL import Image
    >>> f = os.path.join(tempfile.mkdtemp(), "x.png")
    >>> Image.fromarray(np.zeros((8, 6), "uint8")).save(f)
    >>> tuple(decode_image_file(tf.constant(f)).shape)
    (8, 6, 3)
    """
    return decode_image_bytes(tf.io.read_file(path), ratio)


def decode_image_bytes(contents: tf.Tensor, ratio: tf.Tensor | int = 0) -> tf.Tensor:
    """Decodes the bytes of one image file (as `decode_image_file` reads them) to uint8 (H, W, 3).

    The same decoding for a file read from disk and for bytes stored in a TFRecord
    (`tltf.data.records`).

    Args:
        contents: scalar string tensor. The encoded image (JPEG, PNG, GIF, BMP, WebP).
        ratio: scalar int tensor or int. See `decode_image_file`.

    Returns:
        uint8 tensor of shape (height, width, 3).

    Example:

    >>> import io, numpy as np
    >>> from PIL import Image
    >>> buffer = io.BytesIO()
    >>> Image.fromarray(np.zeros((16, 24, 3), "uint8")).save(buffer, "JPEG")
    >>> tuple(decode_image_bytes(tf.constant(buffer.getvalue()), 2).shape)
    (8, 12, 3)
    """
    def jpeg(r):
        return lambda: tf.io.decode_jpeg(contents, channels=3, ratio=r)

    def generic():
        return tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False)

    decoders = [generic, jpeg(1), jpeg(2), jpeg(4), jpeg(8)]
    if isinstance(ratio, (int, np.integer)):  # known when the pipeline is built: no branch
        image = decoders[_RATIO_INDEX[min(max(int(ratio), 0), 8)]]()
    else:
        index = tf.gather(tf.constant(_RATIO_INDEX), tf.clip_by_value(
            tf.convert_to_tensor(ratio, tf.int32), 0, 8))
        image = tf.switch_case(index, decoders)
    image.set_shape([None, None, 3])
    return image


def resize_image(image: tf.Tensor, size: Sequence[int], mode: str = "stretch") -> tf.Tensor:
    """Resizes an (H, W, C) image to `size` without aliasing, returning uint8.

    Where both sides shrink by 2x or less, the filter is bilinear (Keras' own, which still
    weighs every source pixel there); where both shrink and one by more than 2x, pixels are
    averaged over their areas (a box filter); where a side grows, antialiased bilinear.

    Args:
        image: tensor (H, W, C), any numeric dtype with values in [0, 255].
        size: (height, width). Output size.
        mode: str. `"stretch"` (ignore the aspect ratio), `"crop"` (center-crop to the target
            aspect ratio, then resize) or `"pad"` (fit inside and pad with black).
            Defaults to `"stretch"`.

    Returns:
        uint8 tensor of shape (height, width, C).

    Raises:
        ValueError: if `mode` is not one of `RESIZE_MODES`.

    Example:

    >>> x = tf.zeros((30, 60, 3), tf.uint8)
    >>> tuple(resize_image(x, (16, 16), "pad").shape)
    (16, 16, 3)
    """
    _check_resize(mode)
    th, tw = int(size[0]), int(size[1])
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    if image.dtype not in (tf.uint8, tf.float32):  # the resizes read these two as they are
        image = tf.cast(image, tf.float32)
    if mode == "crop":
        scale = tf.minimum(h / th, w / tw)
        ch = tf.cast(tf.round(th * scale), tf.int32)
        cw = tf.cast(tf.round(tw * scale), tf.int32)
        top = (shape[0] - ch) // 2
        left = (shape[1] - cw) // 2
        image = image[top : top + ch, left : left + cw]
        image = _resize_by_shrink(image, (th, tw))
    elif mode == "pad":
        scale = tf.minimum(th / h, tw / w)
        nh = tf.clip_by_value(tf.cast(tf.round(h * scale), tf.int32), 1, th)
        nw = tf.clip_by_value(tf.cast(tf.round(w * scale), tf.int32), 1, tw)
        image = tf.image.resize(image, tf.stack([nh, nw]), antialias=True)
        image = tf.image.pad_to_bounding_box(image, (th - nh) // 2, (tw - nw) // 2, th, tw)
    else:
        image = _resize_by_shrink(image, (th, tw))
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    return tf.ensure_shape(image, [th, tw, None])


def _as_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """(N, H, W[, 1|3|4]) numeric array in [0, 255] -> (N, H, W, 3) uint8."""
    if array.ndim == 3:
        array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
        array = array[..., :3]
    if array.dtype != np.uint8:
        array = np.clip(np.round(array), 0, 255).astype(np.uint8)
    return array


def _resize_by_shrink(image: tf.Tensor, size) -> tf.Tensor:
    """uint8 or float32 `image` resized to the static `size`, as float32, with the filter
    for its shrink, chosen when the graph is built if `image`'s size is known then, else per
    image:

    - both sides shrink by 2x or less (the rest after a JPEG's DCT scaling, or a photo a
      little larger than asked): bilinear, Keras' filter. Its taps are at most 2 pixels
      apart there, so every source pixel is weighed (at exactly 2x each tap is the mean of
      two pixels: the box filter's own result); it is the cheapest filter;
    - both sides shrink, one by more than 2x: area averaging (a box filter);
    - a side grows: antialiased bilinear.
    """
    def bilinear():
        return tf.image.resize(image, size)

    def area():
        return tf.image.resize(image, size, method="area")

    def antialiased():
        return tf.image.resize(image, size, antialias=True)

    th, tw = size
    h, w = image.shape[0], image.shape[1]
    if h is None or w is None:  # known only per image
        h, w = tf.shape(image)[0], tf.shape(image)[1]
    shrinks = (h >= th) & (w >= tw)  # bools when the size is static, tensors otherwise
    slightly = (h <= 2 * th) & (w <= 2 * tw)
    if isinstance(shrinks, bool):
        return (bilinear if slightly else area)() if shrinks else antialiased()
    return tf.cond(shrinks, lambda: tf.cond(slightly, bilinear, area), antialiased)
