"""Augmentation policies built from Keras 3 preprocessing layers.

The same policy runs in one of two places:

- inside `tf.data` (`ImageDataset.prepare(training=True, augment=...)`), on the CPU while
  the accelerator trains on the previous batch; this also handles the batch-level MixUp and
  CutMix, which need the labels;
- inside the model (`build_classifier(..., augment=...)` places `augmentation_layer(...)`
  after the input), where it runs on the GPU. Keras preprocessing layers do nothing when
  called with `training=False`, and `tltf.models.parts.inference_model` drops the layer before
  export, so augmentation never reaches inference.

`default_placement()` says which is faster where the code runs. Images are float32 pixels in
[0, 255] in both places.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from tltf._backend import check_backend

check_backend()  # Keras must run on TensorFlow before this module builds anything

__all__ = [
    "OPS",
    "POLICIES",
    "augmentation_layer",
    "augmentation_layers",
    "batch_augmenter",
    "default_placement",
]

POLICIES = ("none", "light", "medium", "heavy")

# op name -> (Keras layer class name, default keyword arguments)
_OPS: dict[str, tuple[str, dict]] = {
    "flip": ("RandomFlip", {"mode": "horizontal"}),
    "vertical_flip": ("RandomFlip", {"mode": "vertical"}),
    "rotation": ("RandomRotation", {"factor": 0.1}),
    "zoom": ("RandomZoom", {"height_factor": 0.2}),
    "translation": ("RandomTranslation", {"height_factor": 0.1, "width_factor": 0.1}),
    "contrast": ("RandomContrast", {"factor": 0.2, "value_range": (0, 255)}),
    "brightness": ("RandomBrightness", {"factor": 0.2, "value_range": (0, 255)}),
    "hue": ("RandomHue", {"factor": 0.1, "value_range": (0, 255)}),
    "saturation": ("RandomSaturation", {"factor": 0.2, "value_range": (0, 255)}),
    "color_jitter": (
        "RandomColorJitter",
        {
            "value_range": (0, 255),
            "brightness_factor": 0.2,
            "contrast_factor": 0.2,
            "saturation_factor": 0.2,
            "hue_factor": 0.05,
        },
    ),
    "randaugment": ("RandAugment", {"value_range": (0, 255), "num_ops": 2, "factor": 0.5}),
    "erasing": ("RandomErasing", {"factor": 0.5, "value_range": (0, 255)}),
    "mixup": ("MixUp", {"alpha": 0.2}),
    "cutmix": ("CutMix", {"factor": 1.0}),
}
OPS = tuple(_OPS)
_BATCH_OPS = ("mixup", "cutmix")
_POLICY_OPS = {
    "none": [],
    "light": ["flip", "rotation"],
    "medium": ["flip", "rotation", "zoom", "translation", "contrast", "brightness"],
    "heavy": ["flip", "zoom", "randaugment", "erasing"],
}

Policy = str | Sequence[Any] | keras.layers.Layer | None


def _layer_for(op: Any, index: int, seed: int | None) -> tuple[str, keras.layers.Layer]:
    if isinstance(op, keras.layers.Layer):
        return type(op).__name__, op
    name, kwargs = op, {}
    if isinstance(op, (tuple, list)) and len(op) == 2 and isinstance(op[1], dict):
        name, kwargs = op
    if not isinstance(name, str) or name not in _OPS:
        raise ValueError(
            "Expected each augmentation op to be a Keras layer, an op name or a (name, kwargs) "
            f"tuple, with names among {OPS}. Received: op={op!r}"
        )
    class_name, defaults = _OPS[name]
    args = {**defaults, **kwargs}
    if seed is not None:
        args["seed"] = seed + index
    return name, getattr(keras.layers, class_name)(**args)


def _ops_of(policy: Policy) -> list:
    if policy is None:
        return []
    if isinstance(policy, str):
        if policy in _POLICY_OPS:
            return list(_POLICY_OPS[policy])
        if policy in _OPS:
            return [policy]
        raise ValueError(
            f"Expected `augment` to be one of {POLICIES}, an op name among {OPS}, a list of ops "
            f"or a Keras layer. Received: augment={policy!r}"
        )
    if isinstance(policy, keras.layers.Layer):
        return [policy]
    if isinstance(policy, Sequence):
        return list(policy)
    raise TypeError(
        "Expected `augment` to be a policy name, a list of ops or a Keras layer. "
        f"Received: augment={policy!r} of type {type(policy).__name__}"
    )


def augmentation_layers(policy: Policy, seed: int | None = None) -> list[keras.layers.Layer]:
    """The Keras preprocessing layers of an augmentation policy, in order.

    Args:
        policy: `"none"`, `"light"` (horizontal flip, small rotation), `"medium"` (flip,
            rotation, zoom, translation, contrast, brightness), `"heavy"` (flip, zoom,
            RandAugment, random erasing), a single op name, or a list whose items are op
            names from `OPS`, `(name, kwargs)` tuples overriding the defaults, or Keras
            layers. `None` means no augmentation.
        seed: int or `None`. Base seed; layer `i` gets `seed + i`, so a seeded policy gives
            the same augmentations run after run. Defaults to `None` (unseeded).

    Returns:
        A list of Keras layers (empty for `"none"`).

    Raises:
        ValueError: if a policy or op name is unknown.
        TypeError: if `policy` is of an unsupported type.

    Example:

    >>> [type(l).__name__ for l in augmentation_layers(["flip", ("rotation", {"factor": 0.2})])]
    ['RandomFlip', 'RandomRotation']
    """
    return [_layer_for(op, i, seed)[1] for i, op in enumerate(_ops_of(policy))]


def _is_batch_op(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, (keras.layers.MixUp, keras.layers.CutMix))


def augmentation_layer(policy: Policy, seed: int | None = None) -> keras.layers.Layer | None:
    """One serializable layer named `"augmentation"` for use inside a model.

    Keras preprocessing layers are active only when the model is called with
    `training=True` (as `fit` does); in `predict`, `evaluate` and export they pass images
    through unchanged. MixUp and CutMix need the labels and so cannot live in the model; pass
    them to `ImageDataset.prepare(augment=...)` instead.

    Args:
        policy: a policy as accepted by `augmentation_layers`, or `None`.
        seed: int or `None`. Base seed. Defaults to `None`.

    Returns:
        A `keras.Sequential` named `"augmentation"`, or `None` for `None`/`"none"`.

    Raises:
        ValueError: if the policy holds MixUp or CutMix, or a name is unknown.

    Example:

    >>> import numpy as np
    >>> layer = augmentation_layer("light", seed=1)
    >>> x = np.random.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    >>> bool(np.allclose(layer(x, training=False), x))
    True
    """
    layers = augmentation_layers(policy, seed)
    if not layers:
        return None
    batch_ops = [type(layer).__name__ for layer in layers if _is_batch_op(layer)]
    if batch_ops:
        raise ValueError(
            f"{', '.join(batch_ops)} mixes images and labels of a batch, so it cannot run inside "
            "the model. Pass it to `ImageDataset.prepare(training=True, augment=..., "
            f"one_hot=True)` instead. Received: policy={policy!r}"
        )
    return keras.Sequential(layers, name="augmentation")


def batch_augmenter(
    policy: Policy, seed: int | None = None, *, one_hot: bool = False
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]] | None:
    """A function `(images, labels) -> (images, labels)` for `tf.data.Dataset.map` on batches.

    Args:
        policy: a policy as accepted by `augmentation_layers`, or `None`.
        seed: int or `None`. Base seed. Defaults to `None`.
        one_hot: bool. Whether the labels are one-hot float vectors. MixUp and CutMix mix the
            labels into soft labels and need them one-hot. Defaults to `False`.

    Returns:
        The mapping function, or `None` when the policy has no op.

    Raises:
        ValueError: if the policy holds MixUp or CutMix and `one_hot` is `False`.

    Example:

    >>> import numpy as np
    >>> fn = batch_augmenter(["flip", "mixup"], seed=0, one_hot=True)
    >>> x = np.random.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    >>> y = np.eye(2, dtype="float32")[[0, 1, 0, 1]]
    >>> images, labels = fn(x, y)
    >>> tuple(labels.shape)
    (4, 2)
    """
    layers = augmentation_layers(policy, seed)
    if not layers:
        return None
    if not one_hot and any(_is_batch_op(layer) for layer in layers):
        raise ValueError(
            "MixUp and CutMix turn labels into soft (mixed one-hot) labels; call "
            "`prepare(..., one_hot=True)` and compile the model for one-hot labels "
            f"(`compile_classifier(model, label_format='one_hot')`). Received: augment={policy!r}"
        )

    def augment(images, labels):
        for layer in layers:
            if _is_batch_op(layer):
                out = layer({"images": images, "labels": labels}, training=True)
                images, labels = out["images"], out["labels"]
            else:
                images = layer(images, training=True)
        return images, labels

    return augment


def default_placement() -> str:
    """Where augmentation is fastest here: `"model"` with a GPU, else `"data"`.

    On a GPU the preprocessing layers run beside the training step at almost no cost; on a
    CPU-only machine `tf.data` runs them in parallel with the training step instead of
    adding them to it.

    Returns:
        `"model"` or `"data"`.

    Example:

    >>> default_placement() in ("model", "data")
    True
    """
    return "model" if tf.config.list_logical_devices("GPU") else "data"
