"""From a trained tltf model to a `.tflite` file a phone runs, and a SavedModel for serving.

The exported graph is the inference graph of the model: augmentation dropped, preprocessing
kept (the file takes raw pixels), a mixed-precision model rebuilt under float32 first, and only
built-in TFLite ops unless asked otherwise. Files are written atomically: a failed export
leaves an existing file untouched. `export_best` converts several quantization variants,
measures each against the Keras model with `tltf.export.verify.verify_tflite`, and keeps the smallest
within an accuracy-drop budget.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tltf._io import atomic_write
from tltf._quiet import quiet
from tltf._warn import warn
from tltf.export.verify import VerificationReport, iterate_images, verify_tflite, write_comparison

__all__ = ["ExportResult", "export_best", "export_saved_model", "export_tflite"]

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

    Augmentation is dropped (`tltf.models.classifier.inference_model`), preprocessing stays in the graph
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
    write_metadata = _resolve_metadata(metadata)
    graph = exportable_model(model)
    names = _resolve_class_names(class_names, graph, representative_data, validation_data)

    content = _convert(graph, quantization, io_dtype, representative_data,
                       num_calibration_samples, allow_select_tf_ops)
    if write_metadata:
        from tltf.export.metadata import write_metadata as embed

        content = embed(content, names, name=graph.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, content, check=lambda p: _check_runs(p, allow_select_tf_ops))
    from tltf.export.metadata import labels_text

    atomic_write(labels_path, labels_text(names).encode("utf-8"))
    details = _io_details(path)
    return ExportResult(path=path, quantization=quantization, size_bytes=path.stat().st_size,
                        input_dtype=details[0], output_dtype=details[1],
                        labels_path=labels_path, has_metadata=write_metadata)


def export_best(
    model: keras.Model,
    path: str | os.PathLike,
    validation_data,
    *,
    quantizations: Sequence[str] = ("float32", "float16", "dynamic", "int8"),
    max_accuracy_drop: float = 0.01,
    representative_data=None,
    num_calibration_samples: int = 200,
    max_samples: int | None = 1000,
    keep_variants: bool = False,
    overwrite: bool = False,
    **export_kwargs,
) -> ExportResult:
    """Exports several quantization variants, verifies each, keeps the smallest within budget.

    Every variant is measured with `verify_tflite` against the Keras model on
    `validation_data`; the smallest file whose accuracy is at most `max_accuracy_drop` below
    the Keras model's is moved to `path`. The comparison of all variants is written beside it
    as `<name>.comparison.json` and `<name>.comparison.md`, also when none qualifies.

    Args:
        model: keras.Model. The classifier.
        path: str or path. Where the kept `.tflite` goes.
        validation_data: labelled images (an `ImageDataset`, a batched `tf.data.Dataset` of
            `(images, labels)`, a tuple of arrays, or a generator). Use held-out images,
            not the calibration ones.
        quantizations: sequence of str. Modes to try (see `export_tflite`). Defaults to
            `("float32", "float16", "dynamic", "int8")`; int8 modes are skipped with a
            warning if no `representative_data` is given.
        max_accuracy_drop: float. Largest accepted drop, as a fraction (`0.01` = 1 point).
            Defaults to `0.01`.
        representative_data: calibration images for the int8 modes. Defaults to None.
        num_calibration_samples: int. Defaults to `200`.
        max_samples: int or None. Verify on at most this many images. Defaults to `1000`.
        keep_variants: bool. Keep every variant as `<name>.<mode>.tflite` beside `path`.
            Defaults to `False`.
        overwrite: bool. Replace the files this call writes (`path`, its labels file, the
            comparison files, the kept variants) if they exist; without it the call refuses
            before converting anything. Defaults to `False`.
        **export_kwargs: `input_dtype`, `allow_select_tf_ops`, `metadata`, `class_names`,
            passed to `export_tflite`.

    Returns:
        An `ExportResult` of the kept file, with `report`, `comparison` and
        `comparison_paths` filled in.

    Raises:
        FileExistsError: a file this call would write exists and `overwrite` is False.
        ValueError: `validation_data` is None or has no labels; an unknown mode; no
            variant within `max_accuracy_drop` (the comparison files are still written and
            `path` is left untouched).

    Example:

    >>> import numpy as np, tempfile, os
    >>> from tltf import build_classifier
    >>> model = build_classifier("mobilenet_v2", 2, image_size=32, weights=None)
    >>> images = np.random.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    >>> labels = np.argmax(model.predict(images, verbose=0), -1)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.tflite")
    >>> export_best(model, path, (images, labels), quantizations=["float32", "float16"],
    ...             max_accuracy_drop=0.5).quantization
    'float16'
    """
    if validation_data is None:
        raise ValueError(
            "Verifying an export needs labelled held-out images: pass `validation_data=` "
            "(e.g. your validation ImageDataset). Received: validation_data=None"
        )
    if not 0.0 <= max_accuracy_drop <= 1.0:
        raise ValueError(
            "`max_accuracy_drop` is a fraction in [0, 1] (0.01 is one point). "
            f"Received: max_accuracy_drop={max_accuracy_drop!r}"
        )
    modes = list(quantizations)
    if not modes:
        raise ValueError("`quantizations` is empty: name at least one of "
                         f"{list(QUANTIZATIONS)}. Received: quantizations={quantizations!r}")
    for mode in modes:
        _check_quantization(mode)
    if representative_data is None and any(m in ("int8", "int8_io") for m in modes):
        if all(m in ("int8", "int8_io") for m in modes):
            raise ValueError(
                f"Every mode asked for ({modes}) is an int8 mode, and int8 calibrates on real "
                "images: pass `representative_data=` or add 'float32', 'float16' or 'dynamic'. "
                "Received: representative_data=None"
            )
        warn("Skipping the int8 variants: no `representative_data` to calibrate them.")
        modes = [m for m in modes if m not in ("int8", "int8_io")]
    path = _tflite_path(path)
    json_path = path.with_suffix(".comparison.json")
    md_path = path.with_suffix(".comparison.md")
    written = [path, _labels_path(path), json_path, md_path]
    if keep_variants:
        written += [path.with_suffix(f".{mode}.tflite") for mode in modes]
    _refuse_existing(written, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = exportable_model(model)

    results, reports = {}, []
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.variants-") as tmp:
        for mode in modes:
            variant = Path(tmp) / f"{path.stem}.{mode}.tflite"
            results[mode] = export_tflite(
                graph, variant, quantization=mode, representative_data=representative_data,
                num_calibration_samples=num_calibration_samples, **export_kwargs)
            report = verify_tflite(variant, graph, validation_data, max_samples=max_samples,
                                   class_names=export_kwargs.get("class_names"), name=mode)
            if report.accuracy_drop is None:
                raise ValueError(
                    "`validation_data` has no labels, so accuracy cannot be compared; pass "
                    f"(images, labels). Received: validation_data={validation_data!r}"
                )
            reports.append(report)
        within = [r for r in reports if r.accuracy_drop <= max_accuracy_drop + 1e-12]
        # The smallest; on a tie, the first listed (the less quantized one, by convention).
        chosen = min(within, key=lambda r: r.file_size_bytes).name if within else None
        write_comparison(reports, json_path, md_path, chosen=chosen, budget=max_accuracy_drop)
        if chosen is None:
            raise ValueError(
                f"No variant stays within max_accuracy_drop={max_accuracy_drop} of the Keras "
                f"model (see {md_path}); {path} was left untouched. Raise the budget, add "
                f"calibration data, or try other modes. Received: quantizations={modes!r}"
            )
        if keep_variants:
            for mode in modes:
                shutil.copyfile(Path(tmp) / f"{path.stem}.{mode}.tflite",
                                path.with_suffix(f".{mode}.tflite"))
        chosen_file = Path(tmp) / f"{path.stem}.{chosen}.tflite"
        os.replace(_labels_path(chosen_file), _labels_path(path))
        os.replace(chosen_file, path)
    kept = results[chosen]
    report = next(r for r in reports if r.name == chosen)
    report.path = str(path)
    for r in reports:
        if r.name != chosen:
            r.path = str(path.with_suffix(f".{r.name}.tflite")) if keep_variants else ""
    write_comparison(reports, json_path, md_path, chosen=chosen, budget=max_accuracy_drop)
    return ExportResult(path=path, quantization=chosen, size_bytes=path.stat().st_size,
                        input_dtype=kept.input_dtype, output_dtype=kept.output_dtype,
                        labels_path=_labels_path(path),
                        has_metadata=kept.has_metadata, report=report, comparison=reports,
                        comparison_paths=(json_path, md_path))


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
    from tltf.models.classifier import inference_model

    graph = inference_model(model)  # the same model if it has no "augmentation" layer
    if any(layer.compute_dtype in ("float16", "bfloat16") for layer in _all_layers(graph)):
        from tltf.training.runtime import rebuild_with_policy

        graph = rebuild_with_policy(graph, "float32")
    return graph


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
    from tltf.export.verify import _interpreter

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
    from tltf.export.metadata import metadata_available

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
        from tltf.export.metadata import _schema

        _schema()  # raises ImportError with the fix if mediapipe is missing
    return bool(metadata)


def _resolve_class_names(class_names, graph, representative_data, validation_data) -> list[str]:
    """The names of the model's outputs, by the one rule of `tltf.data._class_names`."""
    from tltf.data._class_names import resolve_class_names
    from tltf.models.classifier import head_or_none

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


def _output_key(graph) -> str:
    from tltf.models.classifier import head_or_none

    head = head_or_none(graph)
    return "logits" if head is not None and head.output_type == "logits" else "probabilities"


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
