"""Labelling new images or image files with a classifier's top classes.

`predict` reads files through the same pipeline training uses and returns `Predictions`,
a list of `Prediction` that also names the files it could not read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from tltf._progress import progress
from tltf.data._class_names import resolve_class_names
from tltf.evaluation._scores import head_config, to_probabilities

__all__ = ["Prediction", "Predictions", "predict"]


@dataclass
class Prediction:
    """The top classes `predict` found for one image.

    Attributes:
        labels: list of str. The `top_k` class names, most likely first.
        scores: list of float. Their probabilities.
        file: str or `None`. The image file, when the input was a path.
    """

    labels: list[str]
    scores: list[float]
    file: str | None = None

    @property
    def label(self) -> str:
        """The most likely class name."""
        return self.labels[0]

    @property
    def score(self) -> float:
        """The probability of the most likely class."""
        return self.scores[0]


class Predictions(list):
    """The list of `Prediction` that `predict` returns, with the files it could not read.

    A plain list of `Prediction` (one per readable image, in input order) that also
    carries `skipped`, so one bad file never costs the predictions of the others.

    Attributes:
        skipped: list of (path, reason) of the files left out (corrupt, empty, too large,
            not a regular file, ...), in input order.

    Example:

    >>> out = Predictions([Prediction(["cat"], [0.9], "a.jpg")], skipped=[("b.jpg", "empty")])
    >>> [p.file for p in out], out.skipped
    (['a.jpg'], [('b.jpg', 'empty')])
    """

    def __init__(self, predictions=(), *, skipped: Sequence[tuple[str, str]] = ()):
        super().__init__(predictions)
        self.skipped = list(skipped)


def predict(model: keras.Model, images_or_paths, *, top_k: int = 1,
            class_names: Sequence[str] | None = None, batch_size: int = 32,
            resize: str = "stretch", verbose: int | str = 0) -> Predictions:
    """Labels images or image files with the model's top classes.

    Files go through the very pipeline training reads them with (`tltf.data.decode`: validated,
    EXIF orientation applied, the same JPEG DCT scale and resize), so the model sees the
    same pixels for a file here as in `load_image_folder`; arrays are passed as they are
    (raw pixels in [0, 255]). Files that cannot be read are left out with a warning and
    listed in the result's `skipped`; the others are still predicted.

    Args:
        model: keras.Model. A single-label classifier taking raw pixels.
        images_or_paths: a path (str or `Path`) to an image file or a folder of images, a
            list of paths, or an array of images `(N, H, W, 3)` / one image `(H, W, 3)`.
        top_k: int. How many classes to return per image. Defaults to `1`.
        class_names: list of str or `None`. Defaults to the names the model's head records,
            then `"0"`, `"1"`, ...
        batch_size: int. Images per forward pass. Defaults to `32`.
        resize: str. How files are fitted to the input size, as when the data was loaded:
            `"stretch"`, `"crop"` or `"pad"`. Defaults to `"stretch"`.
        verbose: 0, 1, 2 or `"auto"`: progress of checking the files and of predicting, as
            in `evaluate`. Defaults to `0`.

    Returns:
        A `Predictions` list of `Prediction` (one per readable image, in input order; files
        of a folder in sorted order) whose `skipped` lists (path, reason) of the others.

    Raises:
        FileNotFoundError: if a path does not exist.
        ValueError: if no file is a readable image, `top_k` is not in [1, num_classes] or
            an array has the wrong shape.

    Example:

    >>> import numpy as np, keras
    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.GlobalAveragePooling2D()(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    >>> out = predict(model, np.random.rand(2, 8, 8, 3) * 255, top_k=2, class_names="abc")
    >>> len(out), len(out[0].labels)
    (2, 2)
    """
    head = head_config(model)
    num_classes = int(model.outputs[0].shape[-1])
    if not isinstance(top_k, int) or not 1 <= top_k <= num_classes:
        raise ValueError(
            f"`top_k` must be an integer between 1 and the number of classes ({num_classes}). "
            f"Received: top_k={top_k!r}"
        )
    names = resolve_class_names(num_classes, given=class_names,
                                head=head.get("class_names")).names
    files, batches, skipped = _read_inputs(model, images_or_paths, resize, batch_size, verbose)
    results = Predictions(skipped=skipped)
    count = len(files) if files is not None else sum(len(chunk) for chunk in batches)  # a list
    total = -(-count // batch_size)  # batches
    for chunk in progress(batches, "predicting", verbose, total=total, unit="batches"):
        probs = to_probabilities(model(chunk, training=False), head)
        for row in probs:
            best = np.argsort(-row, kind="stable")[:top_k]
            results.append(Prediction(labels=[names[b] for b in best],
                                      scores=[float(row[b]) for b in best],
                                      file=files[len(results)] if files else None))
    return results


# ----------------------------------------------------------------------------- helpers


def _read_inputs(model, images_or_paths, resize, batch_size, verbose=0):
    """Returns (files or None, iterable of float32 image batches, skipped (path, reason))."""
    if isinstance(images_or_paths, (str, os.PathLike)):
        images_or_paths = [images_or_paths]
    if isinstance(images_or_paths, (list, tuple)) and images_or_paths and all(
            isinstance(p, (str, os.PathLike)) for p in images_or_paths):
        size = tuple(model.inputs[0].shape[1:3])
        if None in size:
            raise ValueError(
                "The model accepts any input size, so files cannot be resized for it; pass "
                f"image arrays instead. Received: input shape {tuple(model.inputs[0].shape)}"
            )
        return _read_files(_expand_paths(images_or_paths), size, resize, batch_size, verbose)
    images = np.asarray(images_or_paths, dtype="float32")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            "`images_or_paths` must be image files, or images of shape (N, H, W, 3) or "
            f"(H, W, 3). Received: array of shape {images.shape}"
        )
    return None, [images[i:i + batch_size] for i in range(0, len(images), batch_size)], []


def _read_files(files, size, resize, batch_size=32, verbose=0):
    """Returns (readable files, generator of their float32 batches, (path, reason) skipped).

    One decode path: the files become an `ImageDataset` exactly as `load_image_folder`
    builds it (same check, same JPEG DCT scale, same resize), read in order, none dropped.
    Unreadable files are left out with a warning; if none is readable, ValueError.
    """
    import tempfile

    from tltf._warn import warn
    from tltf.data._checked_files import _files_dataset
    from tltf.data.checks import check_files
    from tltf.data.dataset import _batches_in_order

    # Re-encoded odd files (EXIF-rotated JPEGs, TIFF) live only as long as the reading.
    tmp = tempfile.TemporaryDirectory(prefix="tltf-predict-")
    checks = check_files(files, cache_dir=tmp.name, verbose=verbose)
    bad = [(c.path, c.reason) for c in checks if not c.ok]
    good = [(f, c) for f, c in zip(files, checks, strict=True) if c.ok]
    if bad:
        listing = "; ".join(f"{p}: {r}" for p, r in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        if not good:
            tmp.cleanup()
            raise ValueError(
                f"None of the {len(files)} file(s) is a readable image: {listing}{more}. "
                f"Received: path={bad[0][0]!r}"
            )
        warn(f"Left out {len(bad)} unreadable file(s): {listing}{more}")
    data = _files_dataset([f for f, _ in good], [c for _, c in good], [0] * len(good), ["0"],
                          size, resize, bad)

    def batches():
        try:
            for images, _ in _batches_in_order(data, batch_size):
                yield images
        finally:
            tmp.cleanup()

    return data.files, batches(), bad


def _expand_paths(paths) -> list[str]:
    from tltf.data.layout import list_image_files

    files = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = list_image_files(p)
            if not found:
                raise FileNotFoundError(f"No image files in folder {p}. Received: path={str(p)!r}")
            files.extend(found)
        elif p.exists():  # a FIFO or device given by name: refused by the check, by name
            files.append(str(p))
        else:
            raise FileNotFoundError(f"Image file or folder not found: {p}. Received: path={str(p)!r}")
    return files
