"""Freezing and unfreezing the backbone of a tltf classifier, with BatchNorm kept in inference mode.

The two fine-tuning rules of Keras, enforced here rather than left to memory:

1. BatchNormalization layers stay `trainable=False` whenever the backbone is unfrozen (unless
   `train_bn=True`). Under Keras 3, `fit` calls the model with `training=True`, which overrides
   a nested `backbone(x, training=False)` (keras-team/keras#20285); a *non-trainable* Keras 3
   BatchNormalization layer, however, always runs in inference mode, so its moving statistics
   are used and never updated.
2. The model must be recompiled after any change of `trainable` (`fine_tune` does it).
"""

from __future__ import annotations

import difflib
import math

import keras

from tltf._backend import check_backend
from tltf._warn import warn
from tltf.training.runtime import _walk_layers

check_backend()  # Keras must run on TensorFlow before this module builds anything

__all__ = ["freeze_backbone", "unfreeze", "parse_unfreeze"]

_FORMS = '"top_blocks:N", "fraction:F", "from:<layer name>" or "all"'


def _backbone(model: keras.Model) -> keras.Layer:
    from tltf.models.parts import backbone_of

    return backbone_of(model)


def _is_batch_norm(layer: keras.Layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def freeze_backbone(model: keras.Model) -> None:
    """Freezes the whole backbone of a classifier and leaves the head trainable.

    This is phase 1 of fine-tuning: only the head learns. Recompile the model afterwards
    (`fine_tune` does it for you).

    Args:
        model: keras.Model. A classifier from `tltf.build_classifier` (it has layers named
            `"backbone"` and `"head"`).

    Raises:
        ValueError: if the model has no backbone (see `tltf.models.parts.backbone_of`).

    Example:

    ```python
    model = tltf.build_classifier("mobilenet_v2", 3, image_size=96, weights=None)
    tltf.freeze_backbone(model)
    assert not tltf.models.parts.backbone_of(model).trainable
    ```
    """
    from tltf.models.parts import head_of

    backbone = _backbone(model)
    backbone.trainable = False
    head_of(model).trainable = True


def parse_unfreeze(how: str) -> tuple[str, str | int | float | None]:
    """Parses an unfreeze specification into `(kind, value)`.

    Args:
        how: str. One of `"top_blocks:N"` (N >= 1), `"fraction:F"` (0 < F <= 1),
            `"from:<layer name>"` or `"all"`.

    Returns:
        A tuple `(kind, value)`: `("top_blocks", N)`, `("fraction", F)`, `("from", name)` or
        `("all", None)`.

    Raises:
        TypeError: if `how` is not a string.
        ValueError: if `how` has none of the forms above or its value is out of range.

    Example:

    ```python
    assert tltf.training.freeze.parse_unfreeze("top_blocks:2") == ("top_blocks", 2)
    ```
    """
    if not isinstance(how, str):
        raise TypeError(
            f"`unfreeze` must be a string: {_FORMS}. Received: unfreeze={how!r}"
        )
    if how == "all":
        return "all", None
    kind, sep, value = how.partition(":")
    if not sep or kind not in ("top_blocks", "fraction", "from") or not value:
        raise ValueError(
            f"`unfreeze` must be one of {_FORMS}. Received: unfreeze={how!r}"
        )
    if kind == "from":
        return kind, value
    if kind == "top_blocks":
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1 or str(n) != value.strip():
            raise ValueError(
                "`unfreeze=\"top_blocks:N\"` needs an integer N >= 1 (the number of blocks "
                f"to unfreeze from the top). Received: unfreeze={how!r}"
            )
        return kind, n
    try:
        f = float(value)
    except ValueError:
        f = -1.0
    if not 0.0 < f <= 1.0:
        raise ValueError(
            "`unfreeze=\"fraction:F\"` needs 0 < F <= 1 (the fraction of the backbone's "
            f"layers with weights to unfreeze, from the top). Received: unfreeze={how!r}"
        )
    return kind, f


def _start_index(model: keras.Model, backbone: keras.Layer, how: str) -> int:
    """Index in `backbone.layers` of the first layer to unfreeze."""
    kind, value = parse_unfreeze(how)
    layers = list(getattr(backbone, "layers", [backbone]))
    if kind == "all":
        return 0
    if kind == "from":
        names = [layer.name for layer in layers]
        if value not in names:
            close = difflib.get_close_matches(str(value), names, n=3)
            hint = f" Close matches: {close}." if close else ""
            raise ValueError(
                f"`unfreeze=\"from:<layer name>\"` names no layer of the backbone.{hint} "
                "See `[l.name for l in tltf.models.parts.backbone_of(model).layers]`. "
                f"Received: unfreeze={how!r}"
            )
        return names.index(value)
    if kind == "fraction":
        weighted = [i for i, layer in enumerate(layers) if layer.weights]
        if not weighted:
            return 0
        count = max(1, math.ceil(value * len(weighted)))
        return weighted[len(weighted) - count]
    # top_blocks
    from tltf.backbones.registry import block_start_indices
    from tltf.models.parts import spec_of

    spec = spec_of(model)
    if spec is None:
        raise ValueError(
            "`unfreeze=\"top_blocks:N\"` needs the block boundaries of a tltf backbone spec, "
            "but this model was not built from one. Use \"fraction:F\", "
            f"\"from:<layer name>\" or \"all\" instead. Received: unfreeze={how!r}"
        )
    starts = list(block_start_indices(spec, backbone))
    if value > len(starts):
        warn(
            f"unfreeze={how!r} asks for {value} blocks but the backbone "
            f"{spec.name!r} has only {len(starts)}; unfreezing all of it."
        )
        return 0
    return starts[-value]


# `fine_tune(unfreeze="auto")`: the top four blocks when validation data keeps the best epoch
# and stops a phase that no longer improves, else two. With validation data, four ended above
# two on all of cats vs dogs and on flowers; without it, four was no better on average and
# less steady over seeds (docs/training.md, "What to unfreeze").
UNFREEZE_VALIDATED = "top_blocks:4"
UNFREEZE_BLIND = "top_blocks:2"


def resolve_unfreeze(how: str, *, validated: bool) -> str:
    """`fine_tune`'s `unfreeze` as `unfreeze` reads it: `"auto"` resolved by whether the run
    has validation data, anything else checked by `parse_unfreeze` and returned as it is."""
    if how == "auto":
        return UNFREEZE_VALIDATED if validated else UNFREEZE_BLIND
    parse_unfreeze(how)
    return how


def unfreeze(model: keras.Model, how: str = "top_blocks:2", *, train_bn: bool = False) -> list[str]:
    """Unfreezes the top of the backbone; BatchNorm layers stay frozen unless `train_bn=True`.

    Layers below the chosen point stay frozen, the head stays trainable. With the default
    `train_bn=False` every BatchNormalization layer keeps `trainable=False`, so it runs in
    inference mode (its stored moving mean and variance are used and never updated) even when
    `fit` calls the model with `training=True`. Recompile the model afterwards (`fine_tune`
    does it for you).

    Args:
        model: keras.Model. A classifier from `tltf.build_classifier`.
        how: str. What to unfreeze: `"top_blocks:N"` the top N blocks from the backbone
            registry's block boundaries (more blocks than exist warns and unfreezes all),
            `"fraction:F"` the top fraction F of the backbone's layers with weights,
            `"from:<layer name>"` that layer of the backbone and everything above it, or
            `"all"`. Defaults to `"top_blocks:2"`.
        train_bn: bool. Also make BatchNormalization layers trainable, so `fit` trains them
            in training mode (batch statistics, moving averages updated). Defaults to `False`.

    Returns:
        The names of the backbone's top-level layers that are now trainable, bottom to top.

    Raises:
        TypeError: if `how` is not a string.
        ValueError: if `how` is malformed, names an unknown layer, or asks for blocks of a
            backbone that is not in the registry.

    Example:

    ```python
    model = tltf.build_classifier("mobilenet_v2", 3, image_size=96, weights=None)
    names = tltf.unfreeze(model, "fraction:0.1")
    assert names and not any(
        layer.trainable for layer in tltf.models.parts.backbone_of(model).layers
        if isinstance(layer, keras.layers.BatchNormalization))
    ```
    """
    from tltf.models.parts import head_of

    backbone = _backbone(model)
    start = _start_index(model, backbone, how)
    backbone.trainable = True
    layers = list(getattr(backbone, "layers", [backbone]))
    for i, layer in enumerate(layers):
        layer.trainable = i >= start
    if not train_bn:
        for layer in _walk_layers(backbone):
            if _is_batch_norm(layer):
                layer.trainable = False
    head_of(model).trainable = True
    return [layer.name for layer in layers[start:] if layer.trainable]
