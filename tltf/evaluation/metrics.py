"""Evaluation of a trained classifier: metrics, calibration, confident mistakes, prediction.

`evaluate` runs a model over labelled data once and returns an `EvaluationReport` (accuracy,
top-k accuracy, per-class precision/recall/F1, confusion matrix, expected calibration error
and the most confident mistakes). `calibrate` fits a softmax temperature on validation data
and returns a model that carries it as a layer, so prediction, saving and TFLite export all
use the calibrated scores. `predict` labels new images or image files.
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
from tltf.data._batches import batches
from tltf.data._class_names import resolve_class_names
from tltf.models.heads import TemperatureScaling

__all__ = [
    "Calibration",
    "EvaluationReport",
    "Mistake",
    "Prediction",
    "Predictions",
    "TemperatureScaling",
    "calibrate",
    "evaluate",
    "expected_calibration_error",
    "predict",
]

_EPS = 1e-7
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


@dataclass
class Calibration:
    """The result of `calibrate`.

    Attributes:
        model: keras.Model. The input model followed by a `TemperatureScaling` layer named
            `"temperature"`; shares every weight with the input model.
        temperature: float. The fitted temperature.
        ece_before: float. ECE on the calibration data before scaling.
        ece_after: float. ECE on the calibration data after scaling.
        nll_before: float. Mean negative log-likelihood before scaling.
        nll_after: float. Mean negative log-likelihood after scaling.
    """

    model: keras.Model
    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float


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
        data: a `tltf.data.folder.ImageDataset` (read in order, without shuffling), a batched
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
    head = _head_config(model)
    if head.get("multi_label"):
        raise ValueError(
            "`evaluate` measures single-label classifiers (one softmax over the classes), but "
            "this model's head is multi-label. Evaluate each label as a binary problem "
            "instead. Received: multi_label=True"
        )
    batches = _as_batches(data, batch_size)
    resolved = resolve_class_names(int(model.outputs[0].shape[-1]), given=class_names,
                                   data=batches.class_names, head=head.get("class_names"))
    names, files = resolved.names, batches.files

    y_true, y_prob, heap, calibrated = [], [], [], _temperature_of(model)
    seen = 0
    for images, labels in progress(batches, "evaluating", verbose, total=batches.num_batches,
                                   unit="batches"):
        probs = _to_probabilities(model(images, training=False), head)
        labels = resolved.relabel(_int_labels(labels))
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
        raw = _softmax(np.log(np.maximum(y_prob, _EPS)) * calibrated)
        report.calibration = {"temperature": calibrated,
                              "ece_before": expected_calibration_error(y_true, raw),
                              "ece_after": report.ece}
    return report


def calibrate(model: keras.Model, data, *, batch_size: int = 32,
              verbose: int | str = 0) -> Calibration:
    """Fits a softmax temperature on held-out data (temperature scaling).

    Finds the temperature T > 0 minimising the negative log-likelihood of
    `softmax(logits / T)` on `data` (use validation data, never the training set), then
    returns a model that ends in a `TemperatureScaling` layer holding T. Accuracy is
    unchanged; confidence becomes honest. The returned model saves to `.keras`, predicts
    and exports to TFLite with the temperature built in.

    Args:
        model: keras.Model. A single-label classifier (probabilities or logits).
        data: validation data, as for `evaluate`.
        batch_size: int. Batch size for an `ImageDataset` or arrays. Defaults to `32`.
        verbose: 0, 1, 2 or `"auto"`: progress of the pass over `data`, as in `evaluate`.
            Defaults to `0`.

    Returns:
        A `Calibration` with the calibrated `model`, the `temperature` and the ECE and
        negative log-likelihood before and after.

    Raises:
        ValueError: if the model is multi-label or already calibrated, or `data` is empty.

    Example:

    >>> import numpy as np, keras
    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.GlobalAveragePooling2D()(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    >>> images = np.random.rand(16, 8, 8, 3).astype("float32") * 255
    >>> result = calibrate(model, (images, np.arange(16) % 2))
    >>> result.temperature > 0
    True
    """
    from scipy.optimize import minimize_scalar

    head = _head_config(model)
    if head.get("multi_label"):
        raise ValueError("`calibrate` supports single-label (softmax) classifiers only. "
                         "Received: multi_label=True")
    if _temperature_of(model) is not None:
        raise ValueError(
            "This model already ends in a TemperatureScaling layer; calibrate the original "
            "model instead. Received: model with a 'temperature' layer"
        )
    batches = _as_batches(data, batch_size)
    y_true, logits = [], []
    for images, labels in progress(batches, "calibrating", verbose, total=batches.num_batches,
                                   unit="batches"):
        scores = keras.ops.convert_to_numpy(model(images, training=False)).astype("float64")
        if head.get("output") != "logits":
            scores = np.log(np.maximum(scores, _EPS))
        logits.append(scores)
        y_true.append(_int_labels(labels))
    if not logits:
        raise ValueError("`data` is empty: cannot fit a temperature. Received: 0 examples")
    y_true, logits = np.concatenate(y_true), np.concatenate(logits)

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-log_p[np.arange(len(y_true)), y_true].mean())

    best = minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded")
    temperature = float(np.exp(best.x))
    layer = TemperatureScaling(temperature, from_logits=head.get("output") == "logits",
                               name="temperature")
    # Built on the inference model (augmentation dropped), so exporters keep the temperature.
    base = _inference_model(model)
    calibrated = keras.Model(base.inputs[0], layer(base.outputs[0]), name=base.name)
    return Calibration(
        model=calibrated, temperature=temperature,
        ece_before=expected_calibration_error(y_true, _softmax(logits)),
        ece_after=expected_calibration_error(y_true, _softmax(logits / temperature)),
        nll_before=nll(0.0), nll_after=nll(best.x),
    )


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
    head = _head_config(model)
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
        probs = _to_probabilities(model(chunk, training=False), head)
        for row in probs:
            best = np.argsort(-row, kind="stable")[:top_k]
            results.append(Prediction(labels=[names[b] for b in best],
                                      scores=[float(row[b]) for b in best],
                                      file=files[len(results)] if files else None))
    return results


# ----------------------------------------------------------------------------- helpers


def _head_config(model) -> dict:
    """The head's config (`output`, `multi_label`, `class_names`), or {} for other models."""
    from tltf.models.parts import head_or_none

    head = head_or_none(model)
    return {} if head is None else head.get_config()


def _inference_model(model):
    try:
        from tltf.models.parts import inference_model

        return inference_model(model)
    except ValueError:  # not built by tltf: nothing to drop
        return model


def _temperature_of(model) -> float | None:
    for layer in getattr(model, "layers", []):
        if isinstance(layer, TemperatureScaling):
            return float(keras.ops.convert_to_numpy(layer.temperature))
    return None


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _to_probabilities(scores, head: dict) -> np.ndarray:
    scores = keras.ops.convert_to_numpy(scores).astype("float64")
    if head.get("output") == "logits":
        return _softmax(scores)
    return scores


def _int_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2:  # one-hot
        labels = labels.argmax(axis=1)
    return labels.reshape(-1).astype(int)


def _as_batches(data, batch_size):
    """Labelled batches of `data`; an `ImageDataset` is read in order, none dropped."""
    return batches(data, "data", batch_size=batch_size, in_order=True)


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
    from tltf.data.dataset import _batches_in_order, _files_dataset
    from tltf.data.decode import check_files

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
    from tltf.data.decode import list_image_files

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
