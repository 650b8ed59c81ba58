"""Temperature scaling: one softmax temperature fitted on held-out data, carried in the model.

`calibrate` fits the temperature on validation data and returns a model that ends in a
`TemperatureScaling` layer, so prediction, saving and TFLite export all use the calibrated
scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from tltf._progress import progress
from tltf.evaluation._scores import (
    EPS,
    head_config,
    int_labels,
    labelled_batches,
    softmax,
    temperature_of,
)
from tltf.evaluation.metrics import expected_calibration_error
from tltf.models.heads import TemperatureScaling

__all__ = ["Calibration", "TemperatureScaling", "calibrate"]


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

    head = head_config(model)
    if head.get("multi_label"):
        raise ValueError("`calibrate` supports single-label (softmax) classifiers only. "
                         "Received: multi_label=True")
    if temperature_of(model) is not None:
        raise ValueError(
            "This model already ends in a TemperatureScaling layer; calibrate the original "
            "model instead. Received: model with a 'temperature' layer"
        )
    batches = labelled_batches(data, batch_size)
    y_true, logits = [], []
    for images, labels in progress(batches, "calibrating", verbose, total=batches.num_batches,
                                   unit="batches"):
        scores = keras.ops.convert_to_numpy(model(images, training=False)).astype("float64")
        if head.get("output") != "logits":
            scores = np.log(np.maximum(scores, EPS))
        logits.append(scores)
        y_true.append(int_labels(labels))
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
        ece_before=expected_calibration_error(y_true, softmax(logits)),
        ece_after=expected_calibration_error(y_true, softmax(logits / temperature)),
        nll_before=nll(0.0), nll_after=nll(best.x),
    )


def _inference_model(model):
    try:
        from tltf.models.parts import inference_model

        return inference_model(model)
    except ValueError:  # not built by tltf: nothing to drop
        return model
