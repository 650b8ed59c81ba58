"""The fidelity gate: run a `.tflite` file with LiteRT next to the Keras model and compare.

A converted model can differ from the Keras one it came from (float16 rounding, int8
calibration, an op lowered differently). `verify_tflite` measures how much, on the user's own
labelled images, so that a quantized model that silently loses accuracy is caught before it
ships. `tltf.export.selection.export_best` uses it to pick the smallest variant within a budget.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tltf._backend import check_backend
from tltf._progress import Progress
from tltf.data._batches import batches
from tltf.data._class_names import resolve_class_names

check_backend()  # Keras must run on TensorFlow before this module builds anything

__all__ = ["VerificationReport", "comparison_markdown", "verify_tflite"]


@dataclass
class VerificationReport:
    """How a `.tflite` file compares with the Keras model it was exported from.

    Probabilities are compared after the head's activation (a logits model is compared
    through softmax, or sigmoid for multi-label). Accuracies are fractions in [0, 1]; for a
    multi-label model they are per-label binary accuracies at a 0.5 threshold.

    Attributes:
        path: str. The `.tflite` file.
        name: str. A label for the variant (e.g. the quantization mode).
        num_samples: int. Images compared.
        top1_agreement: float. Fraction of images where both give the same top class.
        max_abs_diff: float. Largest absolute difference of any probability.
        mean_abs_diff: float. Mean absolute difference of the probabilities.
        keras_accuracy: float or None. Accuracy of the Keras model (None without labels).
        tflite_accuracy: float or None. Accuracy of the `.tflite` file.
        accuracy_drop: float or None. `keras_accuracy - tflite_accuracy`.
        per_class_accuracy_change: dict. Class name -> tflite minus Keras accuracy on
            that class's images.
        file_size_bytes: int. Size of the file.
        median_latency_ms: float. Median time of one single-image `invoke()` on this CPU.
        num_threads: int or None. Interpreter threads (None: LiteRT's default).
        input_dtype: str. The file's input tensor type.
        output_dtype: str. The file's output tensor type.
    """

    path: str
    name: str
    num_samples: int
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    keras_accuracy: float | None
    tflite_accuracy: float | None
    accuracy_drop: float | None
    per_class_accuracy_change: dict[str, float] = field(default_factory=dict)
    file_size_bytes: int = 0
    median_latency_ms: float = 0.0
    num_threads: int | None = None
    input_dtype: str = "float32"
    output_dtype: str = "float32"

    def __str__(self) -> str:
        accuracy = ("" if self.keras_accuracy is None else
                    f", accuracy Keras {self.keras_accuracy:.2%} / TFLite "
                    f"{self.tflite_accuracy:.2%} (drop {100 * self.accuracy_drop:+.2f} points)")
        return (f"{self.name}: {self.num_samples} images, top-1 agreement "
                f"{self.top1_agreement:.2%}, max prob diff {self.max_abs_diff:.2e}{accuracy}, "
                f"{self.file_size_bytes / 1e6:.2f} MB, {self.median_latency_ms:.2f} ms/image")

    def to_dict(self) -> dict:
        """Returns the report as a JSON-serialisable dict."""
        return asdict(self)

    def to_markdown(self) -> str:
        """Returns the report as a markdown table (one row), per-class changes below it."""
        text = comparison_markdown([self])
        if self.per_class_accuracy_change:
            text += "\n\n| class | accuracy change (points) |\n|---|---:|\n"
            text += "\n".join(
                f"| {name} | {100 * change:+.2f} |"
                for name, change in self.per_class_accuracy_change.items()
            )
        return text + "\n"


def comparison_markdown(reports: Sequence[VerificationReport], *, chosen: str | None = None) -> str:
    """Formats several reports as one markdown table, one row per variant.

    Args:
        reports: sequence of `VerificationReport`.
        chosen: str or None. Name of the variant to mark as kept. Defaults to None.

    Returns:
        str. A markdown table.

    Example:

    >>> r = VerificationReport("m.tflite", "float32", 10, 1.0, 0.0, 0.0, 0.9, 0.9, 0.0)
    >>> print(comparison_markdown([r]).splitlines()[0])
    | variant | size (KB) | latency (ms) | top-1 agreement | max abs diff | Keras acc | TFLite acc | drop (points) |
    """
    lines = [
        "| variant | size (KB) | latency (ms) | top-1 agreement | max abs diff | Keras acc "
        "| TFLite acc | drop (points) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def pct(value):
        return "n/a" if value is None else f"{100 * value:.2f}%"

    for r in reports:
        drop = "n/a" if r.accuracy_drop is None else f"{100 * r.accuracy_drop:+.2f}"
        mark = " (kept)" if chosen is not None and r.name == chosen else ""
        lines.append(
            f"| {r.name}{mark} | {r.file_size_bytes / 1024:.1f} | {r.median_latency_ms:.2f} "
            f"| {pct(r.top1_agreement)} | {r.max_abs_diff:.2e} | {pct(r.keras_accuracy)} "
            f"| {pct(r.tflite_accuracy)} | {drop} |"
        )
    return "\n".join(lines)


def verify_tflite(
    path: str | os.PathLike,
    model: keras.Model,
    data,
    *,
    class_names: Sequence[str] | None = None,
    max_samples: int | None = 1000,
    num_threads: int | None = None,
    name: str | None = None,
    verbose: int | str = 0,
) -> VerificationReport:
    """Runs a `.tflite` file with LiteRT next to the Keras model on real images and compares.

    Each image goes through the file alone (batch of one, as on a phone), so the median
    latency is that of one `invoke()` on this CPU. Raw pixels in [0, 255] are fed as the file
    expects them: float32, uint8, or quantized int8 using the file's own scale. When the file
    takes uint8 bytes, the Keras model gets the same rounded pixels, so only the file differs.

    Args:
        path: str or path. The `.tflite` file (from `tltf.export_tflite`).
        model: keras.Model. The Keras model it was exported from.
        data: the images: an `ImageDataset` (its `prepare(training=False)` is used), a batched
            `tf.data.Dataset` of `(images, labels)` or of images, a tuple `(images, labels)`
            of arrays, an array of images, or a generator of any of these. Without labels,
            accuracies are None.
        class_names: sequence of str or None. Names of the labels, in label order, for the
            per-class table. Defaults to the data's `class_names`; the rule of
            docs/concepts.md ("Class names") applies, and a list of the wrong length raises.
        max_samples: int or None. Compare at most this many images. Defaults to `1000`.
        num_threads: int or None. LiteRT interpreter threads. Defaults to None (LiteRT's
            default).
        name: str or None. Label of this variant in reports. Defaults to the file name.
        verbose: 0 (silent), 1 (a progress bar), 2 (a few plain lines) or `"auto"` (the bar
            on a terminal, lines in a file or CI log). Defaults to `0`.

    Returns:
        A `VerificationReport`.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if `data` holds no images, or their size does not match the file's input.

    Example:

    >>> import numpy as np, tempfile, os
    >>> from tltf import build_classifier
    >>> from tltf.export.tflite import export_tflite
    >>> model = build_classifier("mobilenet_v2", 2, image_size=32, weights=None)
    >>> path = os.path.join(tempfile.mkdtemp(), "m.tflite")
    >>> _ = export_tflite(model, path, class_names=["cat", "dog"])
    >>> images = np.random.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    >>> verify_tflite(path, model, (images, np.array([0, 1, 0, 1]))).top1_agreement
    1.0
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No .tflite file at {path}; export one first with `tltf.export_tflite`. "
            f"Received: path={str(path)!r}"
        )
    from tltf.models.parts import head_or_none

    head = head_or_none(model)
    interpreter = _interpreter(path, num_threads)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    expected = tuple(int(d) for d in inp["shape"][1:])

    keras_probs, tflite_probs, labels, latencies = [], [], [], []
    total = _count(data)
    if total is not None and max_samples is not None:
        total = min(total, max_samples)
    bar = Progress(total, f"verifying {path.name}", verbose, unit="images")
    for images, batch_labels in iterate_images(data, max_samples=max_samples):
        if tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"The images are {tuple(images.shape[1:])} but {path.name} takes {expected}; "
                "load the data at the model's image size. "
                f"Received: data with images of shape {images.shape}"
            )
        if np.dtype(inp["dtype"]) == np.uint8 and not inp["quantization"][0]:
            # The file takes bytes: compare both on the same rounded pixels.
            images = np.clip(np.round(images), 0, 255)
        keras_probs.append(np.asarray(model(images, training=False), dtype="float64"))
        for image in images:
            interpreter.set_tensor(inp["index"], _to_input(image[None], inp))
            start = time.perf_counter()
            interpreter.invoke()
            latencies.append(time.perf_counter() - start)
            tflite_probs.append(_from_output(interpreter.get_tensor(out["index"]), out))
        bar.update(len(images))
        if batch_labels is not None:
            labels.append(batch_labels)
    bar.close()
    if not keras_probs:
        raise ValueError(f"`data` yielded no images. Received: data={data!r}")

    keras_p = _as_probabilities(np.concatenate(keras_probs), head)
    tflite_p = _as_probabilities(np.concatenate(tflite_probs), head)
    multi_label = bool(head is not None and head.multi_label)
    y = np.concatenate(labels) if labels and len(labels) == len(keras_probs) else None
    resolved = resolve_class_names(keras_p.shape[-1], given=class_names,
                                   data=getattr(data, "class_names", None),
                                   head=None if head is None else head.class_names)
    names, y = resolved.names, resolved.relabel(y)
    keras_acc, tflite_acc, per_class = _accuracies(keras_p, tflite_p, y, multi_label, names)
    return VerificationReport(
        path=str(path),
        name=name or path.stem,
        num_samples=int(keras_p.shape[0]),
        top1_agreement=float(np.mean(keras_p.argmax(-1) == tflite_p.argmax(-1))),
        max_abs_diff=float(np.max(np.abs(keras_p - tflite_p))),
        mean_abs_diff=float(np.mean(np.abs(keras_p - tflite_p))),
        keras_accuracy=keras_acc,
        tflite_accuracy=tflite_acc,
        accuracy_drop=None if keras_acc is None else keras_acc - tflite_acc,
        per_class_accuracy_change=per_class,
        file_size_bytes=path.stat().st_size,
        median_latency_ms=float(np.median(latencies[1:] or latencies) * 1000.0),
        num_threads=num_threads,
        input_dtype=np.dtype(inp["dtype"]).name,
        output_dtype=np.dtype(out["dtype"]).name,
    )


def write_comparison(reports: Sequence[VerificationReport], json_path: Path, md_path: Path,
                     *, chosen: str | None, budget: float | None) -> None:
    """Writes the comparison of several variants as JSON and markdown (used by export_best)."""
    payload = {"chosen": chosen, "max_accuracy_drop": budget,
               "variants": [r.to_dict() for r in reports]}
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    header = "# TFLite export comparison\n\n"
    note = (f"Accuracy-drop budget: {100 * budget:.2f} points. " if budget is not None else "")
    note += f"Kept: {chosen}.\n\n" if chosen else "No variant was within the budget.\n\n"
    md_path.write_text(header + note + comparison_markdown(reports, chosen=chosen) + "\n")


# ----------------------------------------------------------------------------- data


def iterate_images(data, *, max_samples: int | None = None, batch_size: int = 32,
                   shuffle: bool = False, seed: int = 0,
                   name: str = "data") -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yields `(float32 images [B, H, W, 3], labels or None)` batches from any accepted source.

    An `ImageDataset` is prepared with `training=False` (no augmentation); `shuffle` applies
    to it only (calibration wants a mix of classes, not the first folder). Stops after
    `max_samples` images. The forms accepted are those of `tltf.data._batches.batches` with
    `labels=False`; `name` is the argument's name in its errors.
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"`max_samples` must be a positive integer or None. Received: max_samples={max_samples!r}")
    remaining = max_samples
    source = batches(data, name, batch_size=batch_size, seed=seed, labels=False,
                     shuffle=shuffle, cache=None)
    for images, labels in source:
        if remaining is not None:
            images, labels = images[:remaining], None if labels is None else labels[:remaining]
            remaining -= len(images)
        if len(images):
            yield images, labels
        if remaining is not None and remaining <= 0:
            return


def _count(data) -> int | None:
    """How many images `data` holds, when that is known without reading it."""
    if isinstance(data, tuple) and len(data) == 2 and not callable(data[0]):
        data = data[0]
    if isinstance(data, tf.data.Dataset):
        return None  # batches, not images
    try:
        return len(data)
    except TypeError:
        return None


# ----------------------------------------------------------------------------- LiteRT


def _interpreter(path: Path, num_threads: int | None = None):
    """The one way tltf opens a `.tflite` file: LiteRT, batch 1, its start-up line hidden."""
    from ai_edge_litert.interpreter import Interpreter

    from tltf._quiet import quiet

    with quiet():  # "INFO: Created TensorFlow Lite XNNPACK delegate" unless logs are asked for
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        inp = interpreter.get_input_details()[0]
        if int(inp["shape"][0]) != 1:
            interpreter.resize_tensor_input(inp["index"], [1, *inp["shape"][1:]])
        interpreter.allocate_tensors()
    return interpreter


def _to_input(images: np.ndarray, detail: dict) -> np.ndarray:
    """Raw pixels -> what the file takes (float32, uint8 pixels, or quantized integers)."""
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return images.astype("float32")
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    values = images / scale + zero_point if scale else images
    return np.clip(np.round(values), info.min, info.max).astype(dtype)


def _from_output(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    values = values.astype("float64")
    return (values - zero_point) * scale if scale else values


def _as_probabilities(scores: np.ndarray, head) -> np.ndarray:
    if head is None or head.output_type != "logits":
        return scores
    if head.multi_label:
        return 1.0 / (1.0 + np.exp(-scores))
    shifted = np.exp(scores - scores.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def _accuracies(keras_p, tflite_p, y, multi_label, names):
    if y is None:
        return None, None, {}
    if multi_label:
        truth = y.reshape(keras_p.shape) > 0.5
        k_ok, t_ok = (keras_p > 0.5) == truth, (tflite_p > 0.5) == truth
        per_class = {n: float(t_ok[:, i].mean() - k_ok[:, i].mean()) for i, n in enumerate(names)}
        return float(k_ok.mean()), float(t_ok.mean()), per_class
    truth = y.argmax(-1) if y.ndim == 2 else y.astype("int64").reshape(-1)
    k_ok, t_ok = keras_p.argmax(-1) == truth, tflite_p.argmax(-1) == truth
    per_class = {}
    for i, n in enumerate(names):
        mask = truth == i
        if mask.any():
            per_class[n] = float(t_ok[mask].mean() - k_ok[mask].mean())
    return float(k_ok.mean()), float(t_ok.mean()), per_class
