"""`export_tflite`: from a trained tltf model to a `.tflite` file a phone runs.

The exported graph is the inference graph of the model: augmentation dropped, preprocessing
kept (the file takes raw pixels), a mixed-precision model rebuilt under float32 first, and only
built-in TFLite ops unless asked otherwise. Files are written atomically: a failed export
leaves an existing file untouched. With `verify=True` or several quantization modes the call
is `tltf.export.selection.export_best`, which keeps the smallest variant within an
accuracy-drop budget.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras

from tltf.export._conversion import ExportResult, write_tflite
from tltf.export.selection import export_best

__all__ = ["ExportResult", "export_tflite"]


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    quantization: str | Sequence[str] = "float32",
    representative_data=None,
    num_calibration_samples: int = 200,
    input_dtype: str = "auto",
    allow_select_tf_ops: bool = False,
    metadata: bool | str = "auto",
    class_names: Sequence[str] | None = None,
    verify: bool = False,
    validation_data=None,
    max_accuracy_drop: float = 0.01,
    overwrite: bool = False,
) -> ExportResult:
    """Converts a classifier to a `.tflite` file that takes raw pixels, atomically.

    Augmentation is dropped (`tltf.models.parts.inference_model`), preprocessing stays in the graph
    (the file takes RGB pixels in [0, 255]), a model trained under a mixed-precision policy is
    rebuilt under float32 with its weights, and only built-in TFLite ops are allowed unless
    `allow_select_tf_ops=True`. The file is written to a temporary name, loaded and run once by
    LiteRT, then moved over `path`, so a failure never leaves a broken or half-written file.

    Quantization modes:
    - `"float32"`: no quantization, the reference.
    - `"float16"`: float16 weights (half the size, float compute on CPU).
    - `"dynamic"`: int8 weights, activations quantized on the fly.
    - `"int8"`: full integer weights and activations, float input and output; needs
      `representative_data` for calibration.
    - `"int8_io"`: full integer including the input and output tensors (uint8 by default,
      or int8 with `input_dtype="int8"`), for microcontrollers and integer accelerators.

    Args:
        model: keras.Model. A classifier taking raw pixels, e.g. from `build_classifier`.
        path: str or path. The `.tflite` file to write; its labels go beside it under the
            same stem (`model.tflite` -> `model.labels.txt`), so two models exported to one
            folder never share or overwrite a labels file.
        quantization: str, or a sequence of them to try several (see `export_best`).
            Defaults to `"float32"`.
        representative_data: calibration images for `"int8"`/`"int8_io"`: an `ImageDataset`
            (prepared with `training=False`, so no augmentation, and shuffled so that every
            class is seen), a batched `tf.data.Dataset` of `(images, labels)` or images, an
            array, or a generator. Defaults to None.
        num_calibration_samples: int. Calibrate on at most this many images. Defaults to
            `200`.
        input_dtype: str. `"float32"` (raw pixels as floats), `"uint8"` (raw pixels as
            bytes, at the model's size: what a camera frame is), `"int8"` (quantized input,
            `"int8_io"` only) or `"auto"` (`"uint8"` for `"int8_io"`, else `"float32"`).
            Defaults to `"auto"`.
        allow_select_tf_ops: bool. Allow TensorFlow ops that TFLite lacks (the file then
            needs the Flex delegate, which most runtimes lack). Defaults to `False`.
        metadata: bool or `"auto"`. Embed TFLite metadata (input normalization, image
            properties, labels) for MediaPipe Tasks and Android; needs `mediapipe`
            (`pip install tltf[mediapipe]`). `"auto"` embeds it when `mediapipe` is
            installed and warns otherwise. Defaults to `"auto"`.
        class_names: sequence of str or None. The names written with the file, by the rule
            of docs/concepts.md ("Class names"): the model head's names when it has them
            (`class_names=` and the data's names must then be the same classes), else
            `class_names=`, else those of `validation_data`/`representative_data`, else the
            class indices (with a warning). A list of the wrong length raises.
        verify: bool. Measure the file against the Keras model on `validation_data` and
            refuse (raise, leaving `path` untouched) if accuracy drops more than
            `max_accuracy_drop`; with several quantizations, keep the smallest within the
            budget. Defaults to `False`.
        validation_data: labelled images for `verify` (same forms as
            `representative_data`). Defaults to None.
        max_accuracy_drop: float. Largest accepted accuracy drop, as a fraction (`0.01` is
            one point). Defaults to `0.01`.
        overwrite: bool. Replace `path` and its labels file if they exist. Without it an
            existing file is never touched: the call refuses before converting anything.
            Defaults to `False`.

    Returns:
        An `ExportResult`.

    Raises:
        FileExistsError: `path` or its labels file exists and `overwrite` is False.
        ValueError: unknown `quantization` or `input_dtype`; an int8 mode without
            `representative_data`; a model without a fixed input size; a conversion that
            needs TensorFlow ops (the message names them); `verify` without
            `validation_data`, or no variant within `max_accuracy_drop`.
        ImportError: `metadata=True` without `mediapipe` installed.

    Example:

    >>> import numpy as np, tempfile, os
    >>> from tltf import build_classifier
    >>> model = build_classifier("mobilenet_v2", 2, image_size=32, weights=None,
    ...                          class_names=["cat", "dog"])
    >>> path = os.path.join(tempfile.mkdtemp(), "model.tflite")
    >>> result = export_tflite(model, path, quantization="dynamic")
    >>> result.input_dtype, result.path.name
    ('float32', 'model.tflite')
    """
    if verify or not isinstance(quantization, str):
        modes = [quantization] if isinstance(quantization, str) else list(quantization)
        return export_best(
            model, path, validation_data, quantizations=modes,
            max_accuracy_drop=max_accuracy_drop, representative_data=representative_data,
            num_calibration_samples=num_calibration_samples, input_dtype=input_dtype,
            allow_select_tf_ops=allow_select_tf_ops, metadata=metadata, class_names=class_names,
            overwrite=overwrite,
        )
    return write_tflite(
        model, path, quantization=quantization, representative_data=representative_data,
        num_calibration_samples=num_calibration_samples, input_dtype=input_dtype,
        allow_select_tf_ops=allow_select_tf_ops, metadata=metadata, class_names=class_names,
        validation_data=validation_data, overwrite=overwrite,
    )
