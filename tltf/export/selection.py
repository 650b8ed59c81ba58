"""`export_best`: several quantization variants, each verified, the smallest within budget kept.

Every variant is converted into a temporary folder beside the target, measured against the
Keras model with `tltf.export.verify.verify_tflite`, and compared in
`<name>.comparison.json`/`.md`; only the kept one is moved to the target path, so a failed
selection leaves an existing file untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import keras

from tltf._warn import warn
from tltf.export._conversion import (
    QUANTIZATIONS,
    ExportResult,
    _check_quantization,
    _labels_path,
    _refuse_existing,
    _tflite_path,
    write_tflite,
)
from tltf.export.saved_model import exportable_model
from tltf.export.verify import verify_tflite, write_comparison

__all__ = ["export_best"]


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
            results[mode] = write_tflite(
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
