"""The parts of a tltf model, found by layer name: its head, backbone, spec, inference graph.

Every tltf model is `image -> [augmentation] -> preprocessing -> backbone -> head` with those
layer names (`tltf.models.classifier.build_classifier`). Code that trains, freezes, evaluates
or exports a model asks these functions for the part it needs, so the rule for finding a part
lives in one place.
"""

from __future__ import annotations

import keras

from tltf.backbones.registry import BackboneSpec, get_backbone, spec_from_data
from tltf.models.heads import ClassificationHead
from tltf.models.preprocessing import Preprocessing

__all__ = ["backbone_of", "head_of", "head_or_none", "inference_model", "spec_of"]


def head_of(model: keras.Model) -> ClassificationHead:
    """Returns the `ClassificationHead` of a tltf model.

    Raises:
        ValueError: if the model has no layer named `"head"` (not built by tltf).

    Example:

    >>> from tltf.models import build_classifier
    >>> model = build_classifier("mobilenet_v2", 2, image_size=96, weights=None,
    ...                          class_names=["cat", "dog"])
    >>> head_of(model).class_names
    ['cat', 'dog']
    """
    return _layer(model, "head", ClassificationHead)


def head_or_none(model: keras.Model) -> ClassificationHead | None:
    """Returns the `ClassificationHead` of a tltf model, or None for any other model.

    For code that also serves plain Keras classifiers (evaluation, export, the CLI); code
    that needs a tltf model calls `head_of`, which raises.

    Example:

    >>> import keras
    >>> plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> head_or_none(plain) is None
    True
    """
    try:
        return head_of(model)
    except ValueError:
        return None


def backbone_of(model: keras.Model) -> keras.Model:
    """Returns the nested backbone model (layer `"backbone"`) of a tltf model.

    Example:

    >>> from tltf.models import build_classifier
    >>> model = build_classifier("mobilenet_v2", 2, image_size=96, weights=None)
    >>> backbone_of(model).trainable
    False
    """
    return _layer(model, "backbone", keras.Model)


def spec_of(model: keras.Model) -> BackboneSpec | None:
    """Returns the `BackboneSpec` a tltf model was built on (`None` for a user model).

    The model carries its spec's data in its config, so this works for any spec, registered
    or not (hub ones included), without a registry lookup or loading anything. Models saved
    by tltf 0.1 carry only the name, which is looked up in the registry.

    Example:

    >>> from tltf.models import build_classifier
    >>> model = build_classifier("mobilenet_v2", 2, image_size=96, weights=None)
    >>> spec_of(model).name
    'mobilenet_v2'
    """
    layer = _layer(model, "preprocessing", Preprocessing)
    if layer.backbone_spec:
        return spec_from_data(layer.backbone_spec)
    return get_backbone(layer.backbone_name) if layer.backbone_name else None


def inference_model(model: keras.Model) -> keras.Model:
    """Returns the model without its `"augmentation"` layer, sharing all weights.

    Augmentation never belongs in an exported or served model; exporters call this.

    Example:

    >>> from tltf.models import build_classifier
    >>> model = build_classifier("mobilenet_v2", 2, image_size=96, weights=None)
    >>> inference_model(model) is model
    True
    """
    names = [layer.name for layer in model.layers]
    if "augmentation" not in names:
        return model
    inputs = keras.Input(model.input_shape[1:], name="image", dtype=model.inputs[0].dtype)
    x = model.get_layer("preprocessing")(inputs)
    x = backbone_of(model)(x, training=False)
    outputs = head_of(model)(x)
    return keras.Model(inputs, outputs, name=model.name)


def _layer(model, name, kind):
    try:
        layer = model.get_layer(name)
    except (ValueError, AttributeError):  # no such layer; not a keras.Model at all
        layer = None
    if not isinstance(layer, kind):
        raise ValueError(
            f"The model '{getattr(model, 'name', model)}' has no {kind.__name__} layer named "
            f"'{name}'; it was not built by `tltf.build_classifier`. Received: model={model!r}"
        )
    return layer
