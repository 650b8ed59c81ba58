"""`build_classifier`: raw pixels -> [augment] -> preprocess -> backbone -> head.

The model takes raw pixels in [0, 255] and does its own preprocessing, so training,
evaluation, the saved `.keras` file and the exported `.tflite` all agree. The backbone is
called with `training=False`; tltf's freezing code keeps its BatchNormalization layers
non-trainable so they stay in inference mode even when `fit` passes `training=True`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import keras
import numpy as np

import tltf.backbones.hub  # noqa: F401  (registers the hub: source and the well-known hub specs)
from tltf import _compat
from tltf.backbones.registry import BackboneSpec, get_backbone, spec_data, spec_from_data
from tltf.data.dataset import _image_size
from tltf.models.heads import ClassificationHead
from tltf.models.precision import dtype_policy_scope, resolve_jit_compile

__all__ = [
    "Preprocessing",
    "SparseCategoricalCrossentropy",
    "backbone_of",
    "build_classifier",
    "compile_classifier",
    "head_of",
    "head_or_none",
    "inference_model",
    "load_model",
    "spec_of",
]

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
LABEL_FORMATS = ("auto", "int", "one_hot", "multi_hot")


@keras.saving.register_keras_serializable(package="tltf")
class Preprocessing(keras.layers.Layer):
    """Turns raw pixels in [0, 255] into what a backbone expects, inside the model.

    The arithmetic is that of the family's `keras.applications.<family>.preprocess_input`,
    so a model never depends on the user remembering to call it.

    Args:
        mode: str. `"tf"` (to [-1, 1]), `"torch"` (to [0, 1], then ImageNet mean/std),
            `"caffe"` (RGB to BGR, then ImageNet mean subtracted), `"unit"` (to [0, 1]) or
            `"none"` (the backbone preprocesses itself).
        backbone_name: str or `None`. The name of the backbone it feeds.
        backbone_spec: dict or `None`. The data of that backbone's `BackboneSpec`
            (`tltf.backbones.registry.spec_data`), kept in the model's config so that unfreezing by
            blocks works for any spec, registered or not, with no registry lookup.
        **kwargs: base `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> layer = Preprocessing("tf")
    >>> np.asarray(layer(np.array([[[[0.0, 127.5, 255.0]]]]))).round(3).tolist()
    [[[[-1.0, 0.0, 1.0]]]]
    """

    def __init__(self, mode: str = "none", backbone_name: str | None = None,
                 backbone_spec: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        from tltf.backbones.registry import PREPROCESSING_MODES

        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"`mode` must be one of {PREPROCESSING_MODES}. Received: mode={mode!r}"
            )
        self.mode = mode
        self.backbone_name = backbone_name
        self.backbone_spec = backbone_spec

    def call(self, images):
        x = keras.ops.cast(images, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "torch":
            mean = np.array(_TORCH_MEAN, "float32")
            std = np.array(_TORCH_STD, "float32")
            return (x / 255.0 - keras.ops.cast(mean, x.dtype)) / keras.ops.cast(std, x.dtype)
        if self.mode == "caffe":
            x = keras.ops.flip(x, axis=-1)
            return x - keras.ops.cast(np.array(_CAFFE_MEAN_BGR, "float32"), x.dtype)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        name = self.backbone_name
        if isinstance(name, str) and name.startswith("hub:"):
            from tltf.backbones.hub import _FromLiveLayer

            name = _FromLiveLayer(name)  # an in-memory clone may resolve it again
        config.update(mode=self.mode, backbone_name=name, backbone_spec=self.backbone_spec)
        return config

    @classmethod
    def from_config(cls, config):
        from tltf.backbones.hub import _check_backbone_name

        _check_backbone_name(config.get("backbone_name"))  # `spec_of` would load that hub model
        return cls(**config)


@keras.saving.register_keras_serializable(package="tltf")
class SparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy for integer labels that also supports label smoothing.

    Keras' own `SparseCategoricalCrossentropy` has no `label_smoothing`; this one one-hot
    encodes the labels inside the loss so the data pipeline can keep integer labels.

    Args:
        from_logits: bool. Whether predictions are logits. Defaults to `False`.
        label_smoothing: float in [0, 1). Defaults to `0.0`.
        **kwargs: base `keras.losses.Loss` arguments.

    Example:

    >>> import numpy as np
    >>> loss = SparseCategoricalCrossentropy(label_smoothing=0.1)
    >>> float(loss(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]))) > 0
    True
    """

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0,
                 name: str = "sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"`label_smoothing` must be in [0, 1). Received: label_smoothing={label_smoothing!r}"
            )
        self.from_logits = from_logits
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        num_classes = keras.ops.shape(y_pred)[-1]
        labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        one_hot = keras.ops.one_hot(labels, num_classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        config = super().get_config()
        config.update(from_logits=self.from_logits, label_smoothing=self.label_smoothing)
        return config


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
        seed: int or `None`. Seed of the in-model augmentation. Defaults to `None`.
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


def head_of(model: keras.Model) -> ClassificationHead:
    """Returns the `ClassificationHead` of a tltf model.

    Raises:
        ValueError: if the model has no layer named `"head"` (not built by tltf).

    Example:

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

    >>> model = build_classifier("mobilenet_v2", 2, image_size=96, weights=None)
    >>> spec_of(model).name
    'mobilenet_v2'
    """
    layer = _layer(model, "preprocessing", Preprocessing)
    if layer.backbone_spec:
        return spec_from_data(layer.backbone_spec)
    return get_backbone(layer.backbone_name) if layer.backbone_name else None


def load_model(
    path: str | os.PathLike,
    *,
    trust_hub_handles: list[str] | tuple[str, ...] = (),
    safe_mode: bool = True,
    compile: bool = True,
) -> keras.Model:
    """Loads a `.keras` file, in Keras' safe mode unless asked otherwise.

    `keras.saving.load_model` with one addition: a model whose backbone is a TF Hub model or
    a local SavedModel (`HubLayer`) names that SavedModel in its config, and loading it
    would run the SavedModel's graph, which can do anything a TensorFlow op can. So in safe
    mode such a handle is refused, unless it is one of the well-known tfhub.dev handles
    (`tltf.list_backbones("hub:*")`) or listed in `trust_hub_handles`. Trusting a handle
    leaves safe mode on for everything else in the file (Python lambdas are still refused);
    `safe_mode=False` trusts the whole file.

    Args:
        path: str or path. The `.keras` file.
        trust_hub_handles: list of str. Hub handles (URLs or SavedModel directories, as the
            refusal names them) whose graphs you trust to run. Defaults to `()`.
        safe_mode: bool. `False` trusts everything in the file: every hub handle and Python
            lambda. Only for files you trust. Defaults to `True`.
        compile: bool. Whether to compile the model as it was saved. Defaults to `True`.

    Returns:
        The `keras.Model`.

    Raises:
        ValueError: in safe mode, for a hub handle that is neither well-known nor trusted
            (the message names it), or for what `keras.saving.load_model` refuses.
        TypeError: `trust_hub_handles` is a single string rather than a list.

    Example:

    >>> import tempfile, os
    >>> model = build_classifier("mobilenet_v2", 2, image_size=32, weights=None)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
    >>> model.save(path)
    >>> load_model(path).output_shape
    (None, 2)
    """
    if isinstance(trust_hub_handles, (str, bytes, os.PathLike)):
        raise TypeError(
            "`trust_hub_handles` is a list of handles; wrap a single one in a list. "
            f"Received: trust_hub_handles={trust_hub_handles!r}"
        )
    from tltf.backbones.hub import _trusting

    with _trusting(trust_hub_handles):
        return keras.saving.load_model(path, compile=compile, safe_mode=safe_mode)


def inference_model(model: keras.Model) -> keras.Model:
    """Returns the model without its `"augmentation"` layer, sharing all weights.

    Augmentation never belongs in an exported or served model; exporters call this.

    Example:

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
            import warnings

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

