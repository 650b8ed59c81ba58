"""A classifier's scores as numbers: its head's settings, its temperature, probabilities.

The few steps `evaluate`, `calibrate` and `predict` share: read the head's config, find a
`TemperatureScaling` layer, turn logits into probabilities and one-hot labels into
integers, and read labelled data in order.
"""

from __future__ import annotations

import keras
import numpy as np

from tltf.data._batches import batches
from tltf.models.heads import TemperatureScaling

EPS = 1e-7


def head_config(model) -> dict:
    """The head's config (`output`, `multi_label`, `class_names`), or {} for other models."""
    from tltf.models.parts import head_or_none

    head = head_or_none(model)
    return {} if head is None else head.get_config()


def temperature_of(model) -> float | None:
    for layer in getattr(model, "layers", []):
        if isinstance(layer, TemperatureScaling):
            return float(keras.ops.convert_to_numpy(layer.temperature))
    return None


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def to_probabilities(scores, head: dict) -> np.ndarray:
    scores = keras.ops.convert_to_numpy(scores).astype("float64")
    if head.get("output") == "logits":
        return softmax(scores)
    return scores


def int_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2:  # one-hot
        labels = labels.argmax(axis=1)
    return labels.reshape(-1).astype(int)


def labelled_batches(data, batch_size):
    """Labelled batches of `data`; an `ImageDataset` is read in order, none dropped."""
    return batches(data, "data", batch_size=batch_size, in_order=True)
