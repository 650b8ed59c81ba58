"""`build_classifier` and `compile_classifier`: a model on a backbone, and the loss it needs.

The model takes raw pixels in [0, 255] and does its own preprocessing
(`tltf.models.preprocessing.Preprocessing`), so training, evaluation, the saved `.keras` file
and the exported `.tflite` all agree. The backbone is called with `training=False`; tltf's
freezing code keeps its BatchNormalization layers non-trainable so they stay in inference mode
even when `fit` passes `training=True`. `compile_classifier` picks the loss and metrics the
head and the labels call for.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import keras

from tltf import _compat
from tltf.backbones.registry import BackboneSpec, get_backbone, spec_data
from tltf.data.decode import _image_size
from tltf.models.heads import ClassificationHead
from tltf.models.losses import SparseCategoricalCrossentropy
from tltf.models.parts import head_of
from tltf.models.precision import dtype_policy_scope, resolve_jit_compile
from tltf.models.preprocessing import Preprocessing

__all__ = ["build_classifier", "compile_classifier"]

LABEL_FORMATS = ("auto", "int", "one_hot", "multi_hot")


def build_classifier(
    backbone: str | BackboneSpec | keras.Model,
    num_classes: int,
    *,
    image_size: int | tuple[int, int] | None = None,
    weights: str | os.PathLike | None = "imagenet",
    pooling: str = "avg",
    dropout: float = 0.2,
    hidden_units: int | None = None,
    multi_label: bool = False,
    output: str = "probabilities",
    class_names: list[str] | None = None,
    augment=None,
    allow_other_size: bool = False,
    dtype_policy: str | None = None,
    seed: int | None = None,
    name: str | None = None,
) -> keras.Model:
    """Builds an image classifier on a pretrained backbone, taking raw pixels in [0, 255].

    The model is `image -> [augmentation] -> preprocessing -> backbone(training=False) ->
    head`, with those layer names. The backbone starts frozen (`trainable=False`):
    `tltf.fine_tune` trains the head first and then unfreezes the top blocks.

    Args:
        backbone: str, `BackboneSpec` or `keras.Model`. A registry name (see
            `tltf.list_backbones()`), `"hub:<handle or path>"` for a TF Hub model, a spec,
            or your own Keras model (its output is pooled if it is a feature map; it gets
            no preprocessing, so it must take pixels in [0, 255] or preprocess itself).
        num_classes: int. Number of classes.
        image_size: int, `(height, width)` or `None`. Input size; `None` means the
            backbone's default size. Defaults to `None`.
        weights: `"imagenet"`, a path to a weights file, or `None` (random initialisation).
            `"imagenet"` goes through Keras' own download-and-cache path
            (`$KERAS_HOME/models/`). Defaults to `"imagenet"`.
        pooling: str. `"avg"` or `"max"` pooling of the last feature map. Defaults to
            `"avg"`.
        dropout: float. Dropout before the last layer. Defaults to `0.2`.
        hidden_units: int or `None`. Optional hidden layer in the head. Defaults to `None`.
        multi_label: bool. Sigmoid outputs for several labels per image. Defaults to
            `False`.
        output: str. `"probabilities"` or `"logits"`. Defaults to `"probabilities"`.
        class_names: list of str or `None`. Stored in the model (and later in the
            exported `.tflite`). Defaults to `None`.
        augment: augmentation policy name, list of ops or layer for in-model augmentation
            (active only in training, never exported), or `None`. Defaults to `None`.
        allow_other_size: bool. Backbones such as MobileNetV2 have ImageNet weights only
            for some sizes; asking for another size raises unless this is `True`, in which
            case Keras loads the weights of the backbone's default size (224 for MobileNetV2,
            not the nearest size) into the network built at your size, on purpose. Defaults
            to `False`.
        dtype_policy: str or `None`. A Keras dtype policy to build under, e.g.
            `"mixed_bfloat16"`; the global policy is restored afterwards. Defaults to `None`
            (the current global policy).
        seed: int or `None`. Makes the build repeatable: Keras' global random seed is set
            to it (`keras.utils.set_random_seed`) before any layer is created, so the same seed
            gives the same initial head (and backbone, with `weights=None`), dropout and
            in-model augmentation. Pass the same seed to `fine_tune` and two runs give the
            same history. Defaults to `None` (fresh random weights each time).
        name: str or `None`. Model name. Defaults to `"<backbone>_classifier"`.

    Returns:
        A `keras.Model`, not compiled (see `compile_classifier`).

    Raises:
        ValueError: unknown backbone, bad size for the backbone or its weights, bad
            argument values.
        FileNotFoundError: a weights file that does not exist, or ImageNet weights that
            are not cached and cannot be downloaded (the message names the file and
            the folder to put it in).

    Example:

    >>> import numpy as np
    >>> model = build_classifier("mobilenet_v2", 3, image_size=96, weights=None)
    >>> model.predict(np.random.uniform(0, 255, (2, 96, 96, 3)), verbose=0).shape
    (2, 3)
    """
    if pooling not in ("avg", "max"):
        raise ValueError(f"`pooling` must be 'avg' or 'max'. Received: pooling={pooling!r}")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError("`seed` must be a non-negative int (or None for random initial "
                             f"weights). Received: seed={seed!r}")
        keras.utils.set_random_seed(seed)
    with dtype_policy_scope(dtype_policy):
        if isinstance(backbone, keras.Model):
            spec = None
            size = _check_size_for_model(backbone, image_size)
            net = _user_backbone(backbone, pooling)
            mode = "none"
        else:
            spec = get_backbone(backbone)
            size = _resolve_size(spec, image_size, weights, allow_other_size)
            weights = _resolve_weights(weights)
            net = _construct(spec, size, weights, pooling, allow_other_size)
            mode = spec.preprocessing
        net.name = "backbone"
        net.trainable = False
        head = ClassificationHead(
            num_classes,
            dropout=dropout,
            hidden_units=hidden_units,
            multi_label=multi_label,
            output=output,
            class_names=class_names,
            name="head",
        )

        inputs = keras.Input((*size, 3), name="image")
        x = inputs
        if augment is not None:
            from tltf.data.augment import augmentation_layer

            layer = augmentation_layer(augment, seed=seed)
            if layer is not None:
                x = layer(x)
        x = Preprocessing(mode, backbone_name=spec.name if spec else None,
                          backbone_spec=spec_data(spec) if spec else None,
                          name="preprocessing")(x)
        features = net(x, training=False)
        outputs = head(features)
        default_name = re.sub(r"[^0-9A-Za-z_]", "_", spec.name if spec else backbone.name)
        return keras.Model(inputs, outputs, name=name or f"{default_name}_classifier")


def compile_classifier(
    model: keras.Model,
    optimizer: str | keras.optimizers.Optimizer = "adam",
    *,
    learning_rate: float = 1e-3,
    label_format: str = "auto",
    label_smoothing: float = 0.0,
    metrics="auto",
    jit_compile: bool | str = "auto",
    **compile_kwargs,
) -> keras.Model:
    """Compiles a tltf classifier with the loss and metrics its head and labels call for.

    The loss follows the head: `from_logits` matches whether the head emits logits, a
    multi-label head gets binary cross-entropy, and integer labels keep working with
    label smoothing. A loss passed in `compile_kwargs` that disagrees raises.

    Args:
        model: `keras.Model` from `build_classifier`.
        optimizer: str or optimizer instance. A string is built with `learning_rate`.
            Defaults to `"adam"`.
        learning_rate: float or schedule. Used when `optimizer` is a string. Defaults to
            `1e-3`.
        label_format: str. `"int"` (class indices), `"one_hot"` (also soft labels such as
            MixUp's), `"multi_hot"` (multi-label) or `"auto"` (multi-hot for a
            multi-label head, else int). Defaults to `"auto"`.
        label_smoothing: float in [0, 1). Defaults to `0.0`.
        metrics: `"auto"` (accuracy matching the label format, plus top-5 accuracy when
            there are more than 5 classes) or a list passed to Keras. Defaults to `"auto"`.
        jit_compile: bool or `"auto"`: XLA or not, as `tltf.models.precision.resolve_jit_compile`
            decides (on a single GPU without op determinism; off on CPU and under
            `tf.distribute`). Defaults to `"auto"`.
        **compile_kwargs: more `keras.Model.compile` arguments.

    Returns:
        The same model, compiled.

    Raises:
        ValueError: the label format does not fit the head, or a given loss disagrees with
            the head's output.

    Example:

    >>> model = build_classifier("mobilenet_v2", 3, image_size=96, weights=None)
    >>> model = compile_classifier(model, learning_rate=1e-3, label_smoothing=0.1)
    >>> model.loss.label_smoothing
    0.1
    """
    head = head_of(model)
    from_logits = head.output_type == "logits"
    if label_format not in LABEL_FORMATS:
        raise ValueError(
            f"`label_format` must be one of {LABEL_FORMATS}. Received: label_format={label_format!r}"
        )
    if label_format == "auto":
        label_format = "multi_hot" if head.multi_label else "int"
    if head.multi_label != (label_format == "multi_hot"):
        raise ValueError(
            f"The head is {'multi-label (sigmoid)' if head.multi_label else 'single-label (softmax)'} "
            f"but the labels are '{label_format}'; use label_format='multi_hot' exactly when "
            f"the model was built with multi_label=True. Received: label_format={label_format!r}"
        )
    if label_format == "multi_hot":
        loss = keras.losses.BinaryCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)
        accuracy = keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0 if from_logits else 0.5)
    elif label_format == "one_hot":
        loss = keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss = SparseCategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    given = compile_kwargs.pop("loss", None)
    if given is not None:
        _check_loss(given, from_logits)
        loss = given
    if metrics == "auto":
        metrics = [accuracy]
        if head.num_classes > 5 and label_format != "multi_hot":
            top5 = (keras.metrics.SparseTopKCategoricalAccuracy if label_format == "int"
                    else keras.metrics.TopKCategoricalAccuracy)
            metrics.append(top5(k=5, name="top5_accuracy"))
    if isinstance(optimizer, str):
        optimizer = keras.optimizers.get({"class_name": optimizer, "config": {"learning_rate": learning_rate}})
    jit_compile = resolve_jit_compile(jit_compile)
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile,
                  **compile_kwargs)
    return model


def _resolve_size(spec, image_size, weights, allow_other_size) -> tuple[int, int]:
    size = _image_size(spec.default_size if image_size is None else image_size)
    if min(size) < spec.min_size:
        raise ValueError(
            f"Backbone '{spec.name}' needs images of at least {spec.min_size}x{spec.min_size} "
            f"pixels. Received: image_size={image_size!r}"
        )
    if weights == "imagenet" and spec.pretrained_sizes and not allow_other_size:
        if size[0] != size[1] or size[0] not in spec.pretrained_sizes:
            nearest = min(spec.pretrained_sizes, key=lambda s: abs(s - max(size)))
            raise ValueError(
                f"Backbone '{spec.name}' has ImageNet weights only for square sizes "
                f"{list(spec.pretrained_sizes)}. Pass image_size={nearest} (the nearest), or "
                "allow_other_size=True to load the weights of the default size "
                f"({spec.default_size}) at this size on purpose, "
                f"or weights=None. Received: image_size={image_size!r}"
            )
    return size


def _resolve_weights(weights):
    if weights is None or weights == "imagenet":
        return weights
    if isinstance(weights, (str, os.PathLike)):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"The weights file '{path}' does not exist. Pass an existing Keras weights "
                f"file, 'imagenet' or None. Received: weights={str(weights)!r}"
            )
        return str(path)
    raise ValueError(
        f"`weights` must be 'imagenet', a weights file path or None. Received: weights={weights!r}"
    )


def _construct(spec, size, weights, pooling, allow_other_size):
    kwargs = dict(input_shape=(*size, 3), weights=weights, pooling=pooling)
    try:
        if weights == "imagenet" and spec.pretrained_sizes and allow_other_size:
            # Keras itself substitutes the default-size weights for other sizes, with only
            # a log line; here the user asked for it, so silence is fine.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return spec.constructor(**kwargs)
        return spec.constructor(**kwargs)
    except Exception as error:  # Keras raises a bare Exception when a download fails.
        match = re.search(r"URL fetch failure on (\S+?)(?::\s|$)", str(error))
        if weights != "imagenet" or not match:
            raise
        url = match.group(1)
        folder = Path(_compat.keras_home()) / "models"
        raise FileNotFoundError(
            f"The ImageNet weights of backbone '{spec.name}' are not in the Keras cache and "
            f"could not be downloaded ({error}). Download '{url}' on a machine with network "
            f"access and put it in '{folder}' as '{url.rsplit('/', 1)[-1]}' (or set KERAS_HOME), "
            f"or pass weights=None. Received: weights='imagenet'"
        ) from error


def _check_size_for_model(model, image_size) -> tuple[int, int]:
    shape = model.input_shape
    if isinstance(shape, list) or len(shape) != 4 or shape[-1] != 3:
        raise ValueError(
            "A custom backbone must take one image input of shape (batch, height, width, 3). "
            f"Received: input_shape={shape}"
        )
    fixed = shape[1:3]
    if image_size is None:
        if None in fixed:
            raise ValueError(
                "The custom backbone accepts any size, so `image_size` must be given. "
                "Received: image_size=None"
            )
        return (int(fixed[0]), int(fixed[1]))
    size = _image_size(image_size)
    if None not in fixed and tuple(fixed) != size:
        raise ValueError(
            f"The custom backbone takes {fixed[0]}x{fixed[1]} images, not the requested size. "
            f"Received: image_size={image_size!r}"
        )
    return size


def _user_backbone(model, pooling):
    out_shape = model.output_shape
    if isinstance(out_shape, list):
        raise ValueError(
            f"A custom backbone must have one output. Received: output_shape={out_shape}"
        )
    if len(out_shape) == 2:
        return model
    if len(out_shape) != 4:
        raise ValueError(
            "A custom backbone must output a feature map (batch, h, w, c) or a feature vector "
            f"(batch, c). Received: output_shape={out_shape}"
        )
    pool = (keras.layers.GlobalAveragePooling2D if pooling == "avg"
            else keras.layers.GlobalMaxPooling2D)(name="pool")
    return keras.Model(model.inputs, pool(model.outputs[0]), name=model.name)


def _check_loss(loss, from_logits):
    given = getattr(loss, "from_logits", None)
    if given is None and hasattr(loss, "get_config"):
        given = loss.get_config().get("from_logits")
    if given is not None and bool(given) != from_logits:
        raise ValueError(
            f"The head emits {'logits' if from_logits else 'probabilities'} but the loss was "
            f"built with from_logits={given}; they must agree (leave `loss` out and tltf picks "
            f"the right one). Received: loss={loss!r}"
        )
