"""`export_saved_model`, and the float32 inference graph every export is made from.

Each export starts from `exportable_model`: augmentation dropped, preprocessing kept (the
graph takes raw pixels), a mixed-precision model rebuilt under float32. That graph is written
as a SavedModel whose `serving_default` signature takes `images`; the `.tflite` converter
(`tltf.export.tflite`) reads the same SavedModel.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from tltf.models.parts import head_or_none, inference_model

__all__ = ["export_saved_model", "exportable_model"]


def export_saved_model(model: keras.Model, directory: str | os.PathLike, *,
                       input_dtype: str = "float32", overwrite: bool = False) -> Path:
    """Writes a TensorFlow SavedModel whose `serving_default` signature takes raw images.

    The signature takes `images` of shape `(batch, height, width, 3)`, raw pixels in
    [0, 255] (float32, or uint8 with `input_dtype="uint8"`), and returns
    `{"probabilities": ...}` (or `{"logits": ...}` for a logits head). Augmentation is dropped
    and a mixed-precision model is rebuilt under float32. The directory is written under a
    temporary name and then moved into place.

    Args:
        model: keras.Model. The classifier.
        directory: str or path. The SavedModel directory to write.
        input_dtype: str. `"float32"` or `"uint8"`. Defaults to `"float32"`.
        overwrite: bool. Replace `directory` if it holds a SavedModel. Anything else there
            (a file, a folder that is not a SavedModel) is never replaced. Defaults to
            `False`: an existing `directory` is refused.

    Returns:
        Path. The directory.

    Raises:
        FileExistsError: `directory` exists and `overwrite` is False, or it exists and is
            not a SavedModel.
        ValueError: bad `input_dtype`; a model without a fixed input size.

    Example:

    >>> import numpy as np, tempfile, os, tensorflow as tf
    >>> from tltf import build_classifier
    >>> model = build_classifier("mobilenet_v2", 2, image_size=32, weights=None)
    >>> out = export_saved_model(model, os.path.join(tempfile.mkdtemp(), "serving"))
    >>> serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    >>> serve(images=tf.zeros((1, 32, 32, 3)))["probabilities"].shape
    TensorShape([1, 2])
    """
    if input_dtype not in ("float32", "uint8"):
        raise ValueError(
            f"`input_dtype` must be 'float32' or 'uint8'. Received: input_dtype={input_dtype!r}"
        )
    directory = Path(directory)
    if os.path.lexists(directory):
        if not overwrite or directory.is_symlink() or not (directory / "saved_model.pb").is_file():
            what = "a SavedModel" if (directory / "saved_model.pb").is_file() else \
                "not a SavedModel, so it is never replaced"
            raise FileExistsError(
                f"{directory} already exists ({what}). Choose another directory"
                + (", or pass overwrite=True" if "never" not in what else "")
                + f". Received: directory={str(directory)!r}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    graph = exportable_model(model)
    tmp = directory.parent / f".{directory.name}.{secrets.token_hex(6)}.tmp"
    tmp.mkdir(mode=0o777)  # umask permissions, unlike mkdtemp's private 0700
    try:
        _write_saved_model(graph, tmp, input_dtype)
        tf.saved_model.load(str(tmp))  # refuse to replace a good export with an unloadable one
        old = None
        if directory.exists():
            old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.old-"))
            os.replace(directory, old / directory.name)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def exportable_model(model: keras.Model) -> keras.Model:
    """Returns the float32 inference graph of `model`: no augmentation, no mixed precision.

    A model built or trained under `mixed_float16`/`mixed_bfloat16` is rebuilt under
    `float32` (`tltf.training.runtime.rebuild_with_policy`) and its weights copied, so the exported
    graph holds no float16/bfloat16 casts. The caller's model is not modified.

    Example:

    >>> from tltf import build_classifier
    >>> model = build_classifier("mobilenet_v2", 2, image_size=32, weights=None,
    ...                          dtype_policy="mixed_bfloat16")
    >>> exportable_model(model).get_layer("backbone").compute_dtype
    'float32'
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={type(model).__name__}")
    graph = inference_model(model)  # the same model if it has no "augmentation" layer
    if any(layer.compute_dtype in ("float16", "bfloat16") for layer in _all_layers(graph)):
        from tltf.training.runtime import rebuild_with_policy

        graph = rebuild_with_policy(graph, "float32")
    return graph


def _write_saved_model(graph: keras.Model, directory: Path, input_dtype: str) -> None:
    size = tuple(graph.input_shape[1:])
    if len(size) != 3 or any(d is None for d in size):
        raise ValueError(
            "Exporting needs a fixed input size (height, width, channels); build the model "
            "with `image_size=`. Received: model.input_shape="
            f"{graph.input_shape}"
        )
    key = _output_key(graph)
    dtype = tf.uint8 if input_dtype == "uint8" else tf.float32

    @tf.function(input_signature=[tf.TensorSpec((None, *size), dtype, name="images")])
    def serve(images):
        return {key: graph(tf.cast(images, tf.float32), training=False)}

    archive = keras.export.ExportArchive()
    archive.track(graph)
    archive.add_endpoint("serve", serve)
    archive.write_out(str(directory), verbose=False)


def _output_key(graph) -> str:
    head = head_or_none(graph)
    return "logits" if head is not None and head.output_type == "logits" else "probabilities"


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
