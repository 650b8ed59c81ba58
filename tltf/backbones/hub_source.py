"""The `hub:` backbone source: a TF Hub handle or SavedModel directory as a `BackboneSpec`.

`hub_backbone` describes any handle; importing this module (which `tltf.backbones` does)
registers it as the source of `"hub:<handle>"` names and registers the well-known tfhub.dev
backbones of `tltf.backbones._hub_handles` as `hub:<name>`. Every spec builds its backbone
around a `HubLayer`.
"""

from __future__ import annotations

import os

import keras

from tltf.backbones._hub_handles import KNOWN_HUB_BACKBONES
from tltf.backbones.hub import HubLayer
from tltf.backbones.registry import BackboneSpec, register_backbone, register_source

__all__ = ["hub_backbone"]

_LAYER_NAME = "hub_savedmodel"  # the backbone's one block: the whole hub model


def hub_backbone(
    handle: str,
    *,
    image_size: int | None = None,
    signature: str | None = None,
    output_key: str | None = None,
    name: str | None = None,
) -> BackboneSpec:
    """Describes a TF Hub image model as a `BackboneSpec`, for `build_classifier`.

    `build_classifier("hub:<handle>", ...)` calls this for you; call it directly to pass
    options. The model is loaded once here to read its input size and feature width, and
    again (fresh weights) every time the spec's constructor builds a backbone.

    Args:
        handle: str. A tfhub.dev or Kaggle Models URL (downloaded and cached by
            `tensorflow_hub`, see `TFHUB_CACHE_DIR`) or a local SavedModel directory.
        image_size: int or `None`. Default input size for a model that takes any size.
            Defaults to `None`: the model's fixed size, else 224.
        signature: str or `None`. See `HubLayer`.
        output_key: str or `None`. See `HubLayer`.
        name: str or `None`. Spec name. Defaults to `"hub:<handle>"`, which
            `get_backbone` resolves again (e.g. when a saved model is inspected).

    Returns:
        A `BackboneSpec` with `preprocessing="unit"` (hub image models take [0, 1]) and one
        block (the whole hub model), so `unfreeze("top_blocks:1")` unfreezes all of it.

    Raises:
        FileNotFoundError: the handle cannot be resolved (see `HubLayer`).
        ValueError: `image_size` disagrees with a fixed-size model, or see `HubLayer`.

    Example:

    >>> import numpy as np, tensorflow as tf, tempfile
    >>> class Net(tf.Module):
    ...     def __init__(self):
    ...         self.w = tf.Variable(tf.ones([3, 4]))
    ...     @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3])])
    ...     def __call__(self, x):
    ...         return tf.reduce_mean(x, [1, 2]) @ self.w
    >>> path = tempfile.mkdtemp()
    >>> tf.saved_model.save(Net(), path)
    >>> spec = hub_backbone(path)
    >>> spec.feature_dim, spec.preprocessing
    (4, 'unit')
    >>> spec.constructor(input_shape=(32, 32, 3)).output_shape
    (None, 4)
    """
    probe = HubLayer(handle, signature=signature, output_key=output_key)
    fixed = probe.input_size
    if fixed is not None and image_size is not None and (image_size, image_size) != fixed:
        raise ValueError(
            f"The hub model '{handle}' takes {fixed[0]}x{fixed[1]} images only. Pass "
            f"image_size={fixed[0]} or None. Received: image_size={image_size!r}"
        )
    return _hub_spec(
        name or f"hub:{handle}", handle, size=fixed[0] if fixed else (image_size or 224),
        feature_dim=probe.feature_dim, fixed=fixed is not None, tf1=probe._is_tf1,
        signature=signature, output_key=output_key)


def _hub_spec(name, handle, *, size, feature_dim, fixed, tf1, signature=None, output_key=None):
    """The spec of one hub model, whether described by `hub_backbone` or by the table."""
    return BackboneSpec(
        name=name,
        constructor=_constructor(handle, feature_dim, signature=signature,
                                 output_key=output_key),
        default_size=size,
        pretrained_sizes=(size,) if fixed else None,
        preprocessing="unit",
        feature_dim=feature_dim,
        blocks=(_LAYER_NAME,),
        family="hub",
        min_size=size if fixed else min(32, size),
        description=f"TF Hub {'TF1 module (inference only)' if tf1 else 'SavedModel'}: {handle}",
    )


def _constructor(handle, feature_dim, *, signature=None, output_key=None):
    """Builds the backbone model of a hub spec, checking the spec against the loaded model."""

    def construct(input_shape, weights="imagenet", pooling="avg"):
        if weights is None:
            raise ValueError(
                f"A hub backbone always carries the weights of its SavedModel ('{handle}'); "
                "there is no random initialisation. Pass weights='imagenet' (the hub "
                f"model's own weights) or a Keras weights file. Received: weights={weights!r}"
            )
        layer = HubLayer(handle, signature=signature, output_key=output_key, pooling=pooling,
                         name=_LAYER_NAME)
        size = tuple(input_shape[:2])
        if layer.input_size is not None and size != layer.input_size:
            raise ValueError(
                f"The hub model '{handle}' takes {layer.input_size[0]}x{layer.input_size[1]} "
                f"images only. Pass image_size={layer.input_size[0]}. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        if layer.feature_dim != feature_dim:
            raise ValueError(
                f"The hub model '{handle}' returns {layer.feature_dim}-dim features but its "
                f"spec says {feature_dim}. Fix the spec's feature_dim. "
                f"Received: feature_dim={feature_dim}"
            )
        inputs = keras.Input(tuple(input_shape), name="hub_input")
        model = keras.Model(inputs, layer(inputs), name="hub_backbone")
        if weights not in ("imagenet", "hub"):
            model.load_weights(os.fspath(weights))
        return model

    construct.__name__ = construct.__qualname__ = f"hub_backbone({handle!r})"
    construct.handle = handle
    return construct


def _register_known() -> None:
    for short, handle, size, dim, fixed in KNOWN_HUB_BACKBONES:
        register_backbone(_hub_spec(f"hub:{short}", handle, size=size, feature_dim=dim,
                                    fixed=fixed, tf1=short.endswith("_tf1")))


_register_known()
register_source("hub", hub_backbone)
