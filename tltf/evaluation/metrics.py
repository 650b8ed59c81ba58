"""Measuring a trained classifier: metrics, expected calibration error, confident mistakes.

`evaluate` runs a model over labelled data once and returns an `EvaluationReport` (accuracy,
top-k accuracy, per-class precision/recall/F1, confusion matrix, expected calibration error
and the most confident mistakes). Fitting a temperature lives in
`tltf.evaluation.calibration`, labelling new images in `tltf.evaluation.prediction`.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tltf._progress import progress
from tltf.data._class_names import resolve_class_names
from tltf.evaluation._scores import (
    EPS,
    head_config,
    int_labels,
    labelled_batches,
    softmax,
    temperature_of,
    to_probabilities,
)

__all__ = [
    "EvaluationReport",
    "Mistake",
    "evaluate",
    "expected_calibration_error",
]

_THUMB = 96  # side of the thumbnails kept for the mistakes grid


@dataclass
class Mistake:
    """One misclassified example: where it is, what it is, what the model said.

    Attributes:
        index: int. Position of the example in the evaluated data.
        true_label: str. The correct class name.
        predicted_label: str. The class the model chose.
        confidence: float. The probability the model gave its (wrong) choice.
        file: str or `None`. The image file, when the data records file paths.
        image: uint8 array `(h, w, 3)` or `None`. A small thumbnail for the report grid.
    """

    index: int
    true_label: str
    predicted_label: str
    confidence: float
    file: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON-friendly fields (without the thumbnail)."""
        return {"index": self.index, "file": self.file, "true_label": self.true_label,
                "predicted_label": self.predicted_label, "confidence": self.confidence}


@dataclass
class EvaluationReport:
    """Everything `evaluate` measured, in the label order of the data's class names.

    Attributes:
        class_names: list of str. Class names; index `i` is label `i` everywhere below.
        num_samples: int. Number of evaluated examples.
        accuracy: float. Fraction of examples whose top-1 class is right.
        top_k_accuracy: dict mapping k to the fraction whose true class is among the top k.
        per_class: dict mapping class name to `{"precision", "recall", "f1", "support"}`.
        macro_avg: dict. Unweighted mean of precision, recall and F1 over classes.
        weighted_avg: dict. Mean of precision, recall and F1 weighted by support.
        confusion_matrix: int array `(C, C)`; rows are true classes, columns predictions.
        ece: float. Expected calibration error (15 equal-width confidence bins).
        mistakes: list of `Mistake`, the most confident wrong predictions first.
        calibration: dict or `None`. When the model carries a `TemperatureScaling` layer:
            its `temperature` and the ECE on this data without (`ece_before`) and with it
            (`ece_after`).
        history: dict of lists or `None`. Training curves (with a `"phase"` list) to plot.
        y_true: int array. True labels. y_prob: float array `(N, C)`. Predicted probabilities.
    """

    class_names: list[str]
    num_samples: int
    accuracy: float
    top_k_accuracy: dict[int, float]
    per_class: dict[str, dict[str, float]]
    macro_avg: dict[str, float]
    weighted_avg: dict[str, float]
    confusion_matrix: np.ndarray
    ece: float
    mistakes: list[Mistake]
    calibration: dict[str, float] | None = None
    history: dict[str, list] | None = None
    y_true: np.ndarray = field(default=None, repr=False)
    y_prob: np.ndarray = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Returns every metric as plain JSON-serialisable Python values."""
        return {
            "class_names": list(self.class_names),
            "num_samples": self.num_samples,
            "accuracy": self.accuracy,
            "top_k_accuracy": {str(k): v for k, v in self.top_k_accuracy.items()},
            "per_class": self.per_class,
            "macro_avg": self.macro_avg,
            "weighted_avg": self.weighted_avg,
            "confusion_matrix": self.confusion_matrix.tolist(),
            "ece": self.ece,
            "calibration": self.calibration,
            "mistakes": [m.to_dict() for m in self.mistakes],
            "history": self.history,
        }

    def summary(self) -> str:
        """Returns a short plain-text table of the headline numbers and per-class scores."""
        width = max(12, *(len(c) for c in self.class_names))
        lines = [f"samples: {self.num_samples}   accuracy: {self.accuracy:.4f}   "
                 + "   ".join(f"top-{k}: {v:.4f}" for k, v in self.top_k_accuracy.items() if k > 1)
                 + f"   ECE: {self.ece:.4f}"]
        if self.calibration:
            lines.append("temperature: {temperature:.3f}   ECE before: {ece_before:.4f}   "
                         "ECE after: {ece_after:.4f}".format(**self.calibration))
        lines.append(f"{'class':<{width}}  precision  recall     f1  support")
        rows = list(self.per_class.items()) + [("macro avg", self.macro_avg),
                                                ("weighted avg", self.weighted_avg)]
        for name, m in rows:
            support = m.get("support", self.num_samples)
            lines.append(f"{name:<{width}}  {m['precision']:9.4f}  {m['recall']:6.4f}  "
                         f"{m['f1']:5.4f}  {support:7d}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def save(self, directory: str | os.PathLike) -> Path:
        """Writes `report.json`, the PNG figures and a self-contained `report.html`.

        Args:
            directory: str or path. Folder to write into (created if missing).

        Returns:
            The path of `report.html`.
        """
        from tltf.evaluation.report import save_report

        return save_report(self, directory)


def expected_calibration_error(y_true, y_prob, *, num_bins: int = 15) -> float:
    """Expected calibration error of top-1 predictions over equal-width confidence bins.

    ECE = sum over bins of (bin size / N) * |accuracy in bin - mean confidence in bin|.

    Args:
        y_true: int array `(N,)`. True labels.
        y_prob: float array `(N, C)`. Predicted probabilities.
        num_bins: int. Number of bins over [0, 1]. Defaults to `15`.

    Returns:
        The ECE, a float in [0, 1].

    Raises:
        ValueError: if the shapes disagree or `num_bins` is not positive.

    Example:

    >>> import numpy as np
    >>> expected_calibration_error(np.array([0, 1]), np.array([[0.9, 0.1], [0.8, 0.2]]))
    0.45
    """
    y_true = np.asarray(y_true).astype(int).reshape(-1)
    y_prob = np.asarray(y_prob, dtype="float64")
    if y_prob.ndim != 2 or y_prob.shape[0] != y_true.shape[0]:
        raise ValueError(
            "`y_prob` must have shape (N, num_classes) with N the length of `y_true`. "
            f"Received: y_true.shape={y_true.shape}, y_prob.shape={y_prob.shape}"
        )
    if not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"`num_bins` must be a positive integer. Received: num_bins={num_bins!r}")
    if len(y_true) == 0:
        return 0.0
    confidence = y_prob.max(axis=1)
    correct = (y_prob.argmax(axis=1) == y_true).astype("float64")
    # Bin i holds confidences in (i/B, (i+1)/B]; confidence 0 goes to the first bin.
    bins = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
    ece = 0.0
    for b in range(num_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return round(float(ece), 12)


def evaluate(model: keras.Model, data, *, class_names: Sequence[str] | None = None,
             top_k: int = 5, batch_size: int = 32, num_mistakes: int = 16,
             history=None, verbose: int | str = 0) -> EvaluationReport:
    """Measures a single-label classifier on labelled data.

    Class names follow the rule of docs/concepts.md ("Class names"): when the model's head
    records the data's classes in another order, the labels are re-ordered to the head's
    order (and the report lists the head's order), so a shuffled class order can never pair
    the wrong names with the wrong scores; other classes raise. Metrics come from
    scikit-learn.

    Args:
        model: keras.Model. A classifier taking raw pixels and returning class
            probabilities or logits (as recorded by its head, see `tltf.models.parts.head_of`).
        data: a `tltf.ImageDataset` (read in order, without shuffling), a batched
            `tf.data.Dataset` of `(images, labels)`, a tuple `(images, labels)` of arrays,
            or a generator (or a function returning one) of `(images, labels)` batches.
            Labels are integers or one-hot vectors.
        class_names: list of str or `None`. Names of the labels, in label order. Defaults to
            the data's `class_names`; the model head's names, when it has them, must be the
            same classes.
        top_k: int. k for the top-k accuracy (capped at `num_classes - 1`, above which it
            is trivially 1). Top-1 is always reported. Defaults to `5`.
        batch_size: int. Batch size when `data` is an `ImageDataset` or arrays.
            Defaults to `32`.
        num_mistakes: int. How many of the most confident mistakes to keep. Defaults to `16`.
        history: training history to plot in the saved report: the result of
            `tltf.fine_tune` (its `.history`), a `keras.callbacks.History`, a dict of lists
            or a list of per-epoch dicts. Defaults to `None`.
        verbose: 0 (silent), 1 (a progress bar), 2 (a few plain lines) or `"auto"` (the bar
            on a terminal, lines in a file or CI log). Defaults to `0`.

    Returns:
        An `EvaluationReport`.

    Raises:
        ValueError: if the model is multi-label, the data is empty, a label is out of range,
            or the class names of the model and the data disagree.
        TypeError: if `data` is none of the accepted types.

    Example:

    >>> import numpy as np, keras
    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.GlobalAveragePooling2D()(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    >>> images = np.random.rand(10, 8, 8, 3).astype("float32") * 255
    >>> report = evaluate(model, (images, np.arange(10) % 3), class_names=["a", "b", "c"])
    >>> report.confusion_matrix.shape
    (3, 3)
    """
    from sklearn import metrics

    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive integer. Received: top_k={top_k!r}")
    head = head_config(model)
    if head.get("multi_label"):
        raise ValueError(
            "`evaluate` measures single-label classifiers (one softmax over the classes), but "
            "this model's head is multi-label. Evaluate each label as a binary problem "
            "instead. Received: multi_label=True"
        )
    batches = labelled_batches(data, batch_size)
    resolved = resolve_class_names(int(model.outputs[0].shape[-1]), given=class_names,
                                   data=batches.class_names, head=head.get("class_names"))
    names, files = resolved.names, batches.files

    y_true, y_prob, heap, calibrated = [], [], [], temperature_of(model)
    seen = 0
    for images, labels in progress(batches, "evaluating", verbose, total=batches.num_batches,
                                   unit="batches"):
        probs = to_probabilities(model(images, training=False), head)
        labels = resolved.relabel(int_labels(labels))
        y_true.append(labels)
        y_prob.append(probs)
        _keep_mistakes(heap, num_mistakes, images, labels, probs, seen)
        seen += len(labels)
    if not seen:
        raise ValueError("`data` is empty: there is nothing to evaluate. Received: 0 examples")
    y_true = np.concatenate(y_true)
    y_prob = np.concatenate(y_prob).astype("float64")
    num_classes = y_prob.shape[1]
    if y_true.min() < 0 or y_true.max() >= num_classes:
        raise ValueError(
            f"Labels must be in [0, {num_classes - 1}] for a {num_classes}-class model. "
            f"Received: labels in [{y_true.min()}, {y_true.max()}]"
        )

    labels_range = list(range(num_classes))
    y_pred = y_prob.argmax(axis=1)
    p, r, f, s = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels_range, zero_division=0)
    per_class = {n: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                     "support": int(s[i])} for i, n in enumerate(names)}
    averages = {}
    for average in ("macro", "weighted"):
        ap, ar, af, _ = metrics.precision_recall_fscore_support(
            y_true, y_pred, labels=labels_range, average=average, zero_division=0)
        averages[average] = {"precision": float(ap), "recall": float(ar), "f1": float(af)}
    accuracy = float(metrics.accuracy_score(y_true, y_pred))
    top = {1: accuracy}
    k = min(top_k, num_classes - 1)  # k >= num_classes is trivially 1.0
    if k > 1:
        top[k] = float(metrics.top_k_accuracy_score(y_true, y_prob, k=k, labels=labels_range))
    mistakes = [
        Mistake(index=i, true_label=names[t], predicted_label=names[pr], confidence=float(c),
                file=files[i] if files is not None and i < len(files) else None, image=img)
        for c, i, t, pr, img in sorted(heap, key=lambda m: (-m[0], m[1]))
    ]
    report = EvaluationReport(
        class_names=list(names), num_samples=int(len(y_true)),
        accuracy=accuracy, top_k_accuracy=top,
        per_class=per_class, macro_avg=averages["macro"], weighted_avg=averages["weighted"],
        confusion_matrix=metrics.confusion_matrix(y_true, y_pred, labels=labels_range),
        ece=expected_calibration_error(y_true, y_prob), mistakes=mistakes,
        history=_normalize_history(history), y_true=y_true, y_prob=y_prob,
    )
    if calibrated is not None:
        raw = softmax(np.log(np.maximum(y_prob, EPS)) * calibrated)
        report.calibration = {"temperature": calibrated,
                              "ece_before": expected_calibration_error(y_true, raw),
                              "ece_after": report.ece}
    return report


# ----------------------------------------------------------------------------- helpers


def _keep_mistakes(heap, limit, images, labels, probs, offset):
    """Keeps the `limit` most confident mistakes (with small thumbnails) in a min-heap."""
    if limit <= 0:
        return
    pred = probs.argmax(axis=1)
    wrong = np.nonzero(pred != labels)[0]
    if not len(wrong):
        return
    images = np.asarray(images)
    for i in wrong:
        item = (float(probs[i, pred[i]]), offset + int(i), int(labels[i]), int(pred[i]))
        if len(heap) >= limit and item[0] <= heap[0][0]:
            continue
        thumb = _thumbnail(images[i])
        if len(heap) < limit:
            heapq.heappush(heap, (*item, thumb))
        else:
            heapq.heapreplace(heap, (*item, thumb))


def _thumbnail(image) -> np.ndarray | None:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        return None
    h, w = image.shape[:2]
    scale = _THUMB / max(h, w)
    if scale < 1:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        image = tf.image.resize(image, size, antialias=True).numpy()
    return np.clip(image, 0, 255).astype("uint8")


def _normalize_history(history) -> dict[str, list] | None:
    """Turns a fine_tune result, a Keras History, records or a DataFrame into a dict of lists."""
    if history is None:
        return None
    if hasattr(history, "to_dict") and hasattr(history, "columns"):  # pandas DataFrame
        history = history.to_dict(orient="list")
    elif hasattr(history, "history") and not isinstance(history, dict):
        history = history.history
        if hasattr(history, "columns"):
            history = history.to_dict(orient="list")
    if isinstance(history, list):
        keys = sorted({k for row in history for k in row}, key=str)
        history = {k: [row.get(k) for row in history] for k in keys}
    if not isinstance(history, dict):
        raise TypeError(
            "`history` must be a fine_tune result, a keras History, a dict of lists or a list "
            f"of per-epoch dicts. Received: history of type {type(history).__name__}"
        )
    return {str(k): [_plain(v) for v in values] for k, values in history.items()}


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return value
