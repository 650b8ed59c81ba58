"""One `.tflite` file from a Keras model, the work behind `export_tflite` and `export_best`.

The options are checked before anything is converted, the float32 inference graph
(`tltf.export.saved_model.exportable_model`) goes through the TFLite converter, and the file is
run once by LiteRT before it replaces anything. `tltf.export.tflite.export_tflite` writes one
such file; `tltf.export.selection.export_best` writes one per quantization mode and keeps one.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from tltf._io import atomic_write
from tltf._quiet import quiet
from tltf._warn import warn
from tltf.data._class_names import resolve_class_names
from tltf.export.metadata import _schema, labels_text, metadata_available, write_metadata
from tltf.export.saved_model import _write_saved_model, exportable_model
from tltf.export.verify import VerificationReport, _interpreter, iterate_images
from tltf.models.parts import head_or_none

__all__ = ["ExportResult", "write_tflite"]

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8", "int8_io")
_INPUT_DTYPES = ("auto", "float32", "uint8", "int8")


@dataclass
class ExportResult:
    """What `export_tflite` / `export_best` wrote.

    Attributes:
        path: Path. The `.tflite` file.
        quantization: str. Its quantization mode.
        size_bytes: int. Its size.
        input_dtype: str. Type of its input tensor (`"float32"`, `"uint8"` or `"int8"`).
        output_dtype: str. Type of its output tensor.
        labels_path: Path or None. The labels file written beside it, `<stem>.labels.txt`
            (one class name per line).
        has_metadata: bool. Whether TFLite metadata (normalization, labels) is embedded.
        report: `VerificationReport` or None. The fidelity check of the kept file.
        comparison: list of `VerificationReport`. Every variant measured (`export_best`).
        comparison_paths: tuple of Path. The comparison as JSON and markdown.
    """

    path: Path
    quantization: str
    size_bytes: int
    input_dtype: str
    output_dtype: str
    labels_path: Path | None = None
    has_metadata: bool = False
    report: VerificationReport | None = None
    comparison: list[VerificationReport] = field(default_factory=list)
    comparison_paths: tuple[Path, ...] = ()


def write_tflite(model, path, *, quantization, representative_data, num_calibration_samples,
                 input_dtype="auto", allow_select_tf_ops=False, metadata="auto", class_names=None,
                 validation_data=None, overwrite=False) -> ExportResult:
    """Writes one `.tflite` file in one quantization mode: `export_tflite` without `verify`."""
    _check_quantization(quantization)
    path = _tflite_path(path)
    labels_path = _labels_path(path)
    _refuse_existing([path, labels_path], overwrite)
    io_dtype = _resolve_input_dtype(input_dtype, quantization)
    if quantization in ("int8", "int8_io") and representative_data is None:
        raise ValueError(
            f"quantization={quantization!r} calibrates activation ranges on real images: pass "
            "`representative_data=` (your training ImageDataset or a tf.data set), or choose "
            "'dynamic' or 'float16'. Received: representative_data=None"
        )
    if not isinstance(num_calibration_samples, int) or num_calibration_samples < 1:
        raise ValueError(
            "`num_calibration_samples` must be a positive integer. "
            f"Received: num_calibration_samples={num_calibration_samples!r}"
        )
    embed_metadata = _resolve_metadata(metadata)
    graph = exportable_model(model)
    names = _resolve_class_names(class_names, graph, representative_data, validation_data)

    content = _convert(graph, quantization, io_dtype, representative_data,
                       num_calibration_samples, allow_select_tf_ops)
    if embed_metadata:
        content = write_metadata(content, names, name=graph.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, content, check=lambda p: _check_runs(p, allow_select_tf_ops))
    atomic_write(labels_path, labels_text(names).encode("utf-8"))
    details = _io_details(path)
    return ExportResult(path=path, quantization=quantization, size_bytes=path.stat().st_size,
                        input_dtype=details[0], output_dtype=details[1],
                        labels_path=labels_path, has_metadata=embed_metadata)


# ----------------------------------------------------------------------------- conversion


def _convert(graph, quantization, io_dtype, representative_data, num_samples, allow_select):
    with tempfile.TemporaryDirectory(prefix="tltf-export-") as tmp:
        # The graph input is uint8 when the file should take bytes: the cast is in the graph.
        _write_saved_model(graph, Path(tmp), "uint8" if io_dtype == "uint8" else "float32")
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization in ("int8", "int8_io"):
            converter.representative_dataset = _representative(
                representative_data, num_samples, as_uint8=io_dtype == "uint8")
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if quantization == "int8_io":
            converter.inference_input_type = tf.uint8 if io_dtype == "uint8" else tf.int8
            converter.inference_output_type = tf.uint8 if io_dtype == "uint8" else tf.int8
        if allow_select:
            ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
        converter.target_spec.supported_ops = ops
        try:
            with quiet():  # its C++ prints `fully_quantize: 0, ...` lines on descriptor 2
                return converter.convert()
        except Exception as error:  # the converter raises ConverterError and others
            raise _conversion_error(error, quantization, allow_select) from error



def _representative(data, num_samples, *, as_uint8):
    first = next(iter(iterate_images(data, max_samples=1, name="representative_data")), None)
    if first is None:
        raise ValueError(
            f"`representative_data` yielded no images. Received: representative_data={data!r}"
        )

    def images():
        for batch, _ in iterate_images(data, max_samples=num_samples, shuffle=True,
                                       name="representative_data"):
            for image in batch:
                x = image[None]
                yield [np.clip(np.round(x), 0, 255).astype("uint8") if as_uint8 else x]

    return images


def _conversion_error(error, quantization, allow_select):
    text = str(error)
    ops = sorted(set(re.findall(r"\btf\.([A-Z]\w*)\(", text)))
    if not allow_select and (ops or "Select" in text or "not supported by the native" in text):
        names = ", ".join(ops) or "(see the converter message below)"
        return ValueError(
            f"TFLite has no built-in kernel for these TensorFlow ops: {names}. Replace them "
            "with built-in ones, or pass `allow_select_tf_ops=True` (the file then needs the "
            "Flex delegate at run time, which MediaPipe and most runtimes lack). "
            f"Received: allow_select_tf_ops=False. Converter said: {text[-1500:]}"
        )
    return ValueError(
        f"The TFLite converter failed for quantization={quantization!r}: {text[-2000:]}"
    )


# ----------------------------------------------------------------------------- files


def _check_runs(path: Path, allow_select: bool) -> None:
    """Loads the file in LiteRT and runs it once on a blank image before it replaces anything."""
    try:
        interpreter = _interpreter(path)
    except RuntimeError as error:
        if allow_select and "Flex" in str(error):
            return  # needs the Flex delegate, which this LiteRT build lacks: nothing to run
        raise
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()


def _io_details(path: Path) -> tuple[str, str]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))  # not allocated: reads the types only
    return (np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
            np.dtype(interpreter.get_output_details()[0]["dtype"]).name)


# ----------------------------------------------------------------------------- options


def _tflite_path(path) -> Path:
    path = Path(path)
    if path.suffix != ".tflite":
        raise ValueError(f"`path` must end in '.tflite'. Received: path={str(path)!r}")
    if path.is_dir():
        raise ValueError(f"`path` {path} is a folder; name the .tflite file to write inside "
                         f"it. Received: path={str(path)!r}")
    return path


def _labels_path(path: Path) -> Path:
    """`model.tflite` -> `model.labels.txt`: each model's labels under its own stem."""
    return path.with_name(f"{path.stem}.labels.txt")


def _refuse_existing(paths, overwrite: bool) -> None:
    if overwrite:
        return
    existing = [str(p) for p in paths if os.path.lexists(p)]
    if existing:
        raise FileExistsError(
            f"{existing[0]} already exists"
            + (f" (and {len(existing) - 1} more file(s) this export writes)" if len(existing) > 1
               else "")
            + "; an export never replaces a file unless asked. Choose another path, or pass "
            f"overwrite=True (`--overwrite` on the command line). Received: path={existing[0]!r}"
        )


def _check_quantization(quantization):
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be one of {QUANTIZATIONS}. Received: quantization={quantization!r}"
        )


def _resolve_input_dtype(input_dtype, quantization):
    if input_dtype not in _INPUT_DTYPES:
        raise ValueError(
            f"`input_dtype` must be one of {_INPUT_DTYPES}. Received: input_dtype={input_dtype!r}"
        )
    if input_dtype == "auto":
        return "uint8" if quantization == "int8_io" else "float32"
    if input_dtype == "int8" and quantization != "int8_io":
        raise ValueError(
            "An int8 input tensor only exists in a fully integer model: use "
            "quantization='int8_io' with input_dtype='int8', or input_dtype='uint8' for raw "
            f"bytes. Received: input_dtype='int8', quantization={quantization!r}"
        )
    if input_dtype == "float32" and quantization == "int8_io":
        raise ValueError(
            "quantization='int8_io' has integer input and output tensors; use 'uint8' (raw "
            "pixels) or 'int8' input, or quantization='int8' for float input and output. "
            "Received: input_dtype='float32'"
        )
    return input_dtype


def _resolve_metadata(metadata) -> bool:
    if metadata not in (True, False, "auto"):
        raise ValueError(f"`metadata` must be True, False or 'auto'. Received: metadata={metadata!r}")
    if metadata == "auto":
        if metadata_available():
            return True
        warn(
            "Exporting without TFLite metadata because `mediapipe` is not installed; "
            "`pip install tltf[mediapipe]` to embed labels and normalization for MediaPipe."
        )
        return False
    if metadata:
        _schema()  # raises ImportError with the fix if mediapipe is missing
    return bool(metadata)


def _resolve_class_names(class_names, graph, representative_data, validation_data) -> list[str]:
    """The names of the model's outputs, by the one rule of `tltf.data._class_names`."""
    head = head_or_none(graph)
    head_names = None if head is None else head.class_names
    # Labelled held-out data takes part in the rule; calibration images only lend their
    # names when nothing else has any (only their pixels matter, their folders may differ).
    resolved = resolve_class_names(int(graph.output_shape[-1]), given=class_names,
                                   data=getattr(validation_data, "class_names", None),
                                   head=head_names)
    if resolved.source == "index":
        names = getattr(representative_data, "class_names", None)
        if names is not None and len(names) == int(graph.output_shape[-1]):
            resolved = resolve_class_names(int(graph.output_shape[-1]), data=names)
    if resolved.source == "index":
        warn("No class names (not in the model head, the data or `class_names=`): the labels "
             "will be the class indices.")
    return resolved.names
