"""TF Hub backbones under Keras 3: a SavedModel wrapped in a real Keras layer.

`hub.KerasLayer` is a Keras 2 layer and cannot be added to a Keras 3 model
(tensorflow/tensorflow#65419). `HubLayer` loads the same SavedModel with `tensorflow_hub`
(tfhub.dev and Kaggle handles are downloaded and cached by `tensorflow_hub` itself, under
`TFHUB_CACHE_DIR`) and exposes its variables as Keras weights, so `fit` and the optimizer
train them like any other layer. This is the only tltf module that imports
`tensorflow_hub`, and it does so lazily: importing tltf does not import it.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import os
from typing import Any

import keras
import tensorflow as tf

from tltf import _compat
from tltf.backbones.registry import BackboneSpec, register_backbone, register_source

__all__ = ["HubLayer", "hub_backbone"]

_LAYER_NAME = "hub_savedmodel"


@keras.saving.register_keras_serializable(package="tltf")
class HubLayer(keras.layers.Layer):
    """A TF Hub image model (TF2 SavedModel or TF1 Hub format) as a Keras 3 layer.

    The SavedModel's variables become this layer's weights: the trainable ones are
    trainable Keras weights (listed in `model.trainable_weights` and updated by the
    optimizer once the layer is unfrozen), the others (BatchNorm moving statistics) are
    non-trainable. Where the SavedModel's function takes a `training` argument it is always
    called with `training=False`, so BatchNorm runs in inference mode even while the
    weights are fine-tuned, like every tltf backbone. Inputs are float images in [0, 1]
    (the TF Hub image convention); the output is a pooled `(batch, feature_dim)` vector.

    A model in the legacy TF1 Hub format (or any model called through a signature) loads
    for feature extraction only: TF2 cannot run its training graph, so making this layer
    trainable raises a `ValueError`.

    The handle (not the weights) is kept in the layer config, and the weights are saved as
    Keras weights, so a model saved as `.keras` loads again wherever the handle resolves.
    Loading the handle runs the SavedModel's graph, so in Keras' safe mode (the default of
    `keras.saving.load_model`) a handle from a config is refused unless it is a well-known
    tfhub.dev handle; opt in with `tltf.load_model(path, trust_hub_handles=[...])` or
    `safe_mode=False`. Cloning a live model in memory is never refused.

    Args:
        handle: str. A tfhub.dev or Kaggle Models URL, or a local SavedModel directory.
        signature: str or `None`. Call this named signature instead of the model's
            `__call__`. Defaults to `None` (`"default"` for TF1 Hub format models).
        output_key: str or `None`. Which output to use when the model returns a dict.
            Defaults to `None`: the only output, or the one named `"default"`.
        pooling: str. `"avg"` or `"max"`, applied when the model returns a feature map
            `(batch, h, w, c)` rather than a vector. Defaults to `"avg"`.
        trainable: bool. Whether the wrapped weights are trainable. Defaults to `False`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, ...). The layer always
            computes in float32, whatever the global dtype policy.

    Attributes:
        feature_dim: int. Width of the output vector.
        input_size: tuple `(height, width)` when the model takes a fixed size, else `None`.
        fine_tunable: bool. `False` for TF1 Hub format models and signature calls.

    Raises:
        FileNotFoundError: the handle is a local path without a SavedModel, or a URL that is
            neither cached nor downloadable.
        ValueError: bad `pooling`/`signature`/`output_key`, an output that is not an image
            feature, or `trainable=True` for a model that cannot be fine-tuned.

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
    >>> layer = HubLayer(path, trainable=True)
    >>> layer(np.random.uniform(0, 1, (2, 32, 32, 3))).shape
    TensorShape([2, 4])
    >>> len(layer.trainable_weights)
    1
    """

    def __init__(
        self,
        handle: str,
        *,
        signature: str | None = None,
        output_key: str | None = None,
        pooling: str = "avg",
        trainable: bool = False,
        **kwargs,
    ):
        if pooling not in ("avg", "max"):
            raise ValueError(f"`pooling` must be 'avg' or 'max'. Received: pooling={pooling!r}")
        kwargs["dtype"] = "float32"  # SavedModel functions are traced for float32 inputs.
        super().__init__(trainable=False, **kwargs)
        self.handle = str(handle)
        self.signature = signature
        self.output_key = output_key
        self.pooling = pooling

        loaded = _load(self.handle)
        self._loaded = loaded
        self._is_tf1 = bool(getattr(loaded, "_is_hub_module_v1", False))
        if self._is_tf1 and signature is None:
            signature = "default"
        if signature is None and not callable(loaded):
            available = sorted(getattr(loaded, "signatures", {}).keys())
            if "serving_default" not in available:
                raise ValueError(
                    f"The SavedModel at '{self.handle}' is not callable and has no "
                    f"'serving_default' signature. Pass one of its signatures {available} as "
                    f"`signature`. Received: signature=None"
                )
            signature = "serving_default"
        self._signature_used = signature
        if signature is not None:
            if signature not in loaded.signatures:
                raise ValueError(
                    f"The SavedModel at '{self.handle}' has no signature '{signature}'. "
                    f"Choose one of {sorted(loaded.signatures.keys())}. "
                    f"Received: signature={signature!r}"
                )
            self._fn = loaded.signatures[signature]
            _, kwspec = self._fn.structured_input_signature
            if len(kwspec) != 1:
                raise ValueError(
                    f"Signature '{signature}' of '{self.handle}' takes {len(kwspec)} inputs "
                    f"({sorted(kwspec)}); a hub image backbone takes exactly one image input. "
                    f"Received: signature={signature!r}"
                )
            self._input_name, input_spec = next(iter(kwspec.items()))
            self._has_training_argument = False
            concrete = [self._fn]
        else:
            self._fn = loaded
            self._input_name = None
            concrete = list(getattr(loaded.__call__, "concrete_functions", []))
            self._has_training_argument = _has_training_argument(loaded)
            input_spec = _first_input_spec(concrete)
        self.fine_tunable = not self._is_tf1 and self._signature_used is None
        self.input_size = _fixed_size(input_spec)

        self._add_savedmodel_variables(loaded, concrete)
        self._regularization_losses = list(
            getattr(loaded, "regularization_losses", []) if self.fine_tunable else []
        )
        self.feature_dim = self._probe_feature_dim()
        self._build_at_init()
        if trainable:
            self.trainable = True

    # Variables ---------------------------------------------------------------------------

    def _add_savedmodel_variables(self, loaded, concrete) -> None:
        if hasattr(loaded, "variables") and not self._is_tf1:
            variables = list(loaded.variables)
            trainable_ids = {id(v) for v in getattr(loaded, "trainable_variables", variables)
                             if v.trainable}
        else:
            variables, seen = [], set()
            for fn in concrete:
                for v in fn.variables:
                    if id(v) not in seen:
                        seen.add(id(v))
                        variables.append(v)
            trainable_ids = {id(v) for fn in concrete for v in fn.trainable_variables}
        if len({v.name for v in variables}) == len(variables):
            # A stable order, so `.keras` files (which store weights by position) reload.
            variables.sort(key=lambda v: v.name)
        # Each Keras weight wraps the SavedModel's own tf.Variable (a `keras.Variable` made
        # from a `tf.Variable` shares it), so training updates what the SavedModel computes
        # with; `add_weight` would copy it. Keras tracks variables assigned to an attribute,
        # by their `trainable` flag at that moment; a frozen layer's weights are then frozen
        # as `Layer.trainable = False` freezes them, so that unfreezing thaws them.
        self._savedmodel_weights = [
            keras.Variable(
                initializer=v,
                shape=v.shape,
                dtype=v.dtype,
                trainable=self.fine_tunable and id(v) in trainable_ids,
                # Keras weight names cannot contain slashes.
                name=v.name.split(":")[0].replace("/", "_"),
            )
            for v in variables
        ]
        if not self.trainable:
            for weight in self._savedmodel_weights:
                weight.trainable = False

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if value and not getattr(self, "fine_tunable", True):
            why = (
                "it is in the legacy TF1 Hub format, whose training graph (update ops, "
                "train/inference variants) TF2 cannot run"
                if self._is_tf1
                else "it is called through the signature "
                f"'{self._signature_used}', which has no training mode"
            )
            raise ValueError(
                f"The hub backbone '{self.handle}' cannot be fine-tuned: {why}. Use it as a "
                "frozen feature extractor (fine_tune(..., finetune_epochs=0)), or pick a TF2 "
                "SavedModel version of the model (tfhub.dev handles with format "
                f"'saved_model_2'). Received: trainable={value!r}"
            )
        keras.layers.Layer.trainable.fset(self, value)

    # Forward pass ------------------------------------------------------------------------

    def call(self, inputs):
        images = tf.cast(inputs, tf.float32)
        if self._input_name is not None:
            outputs = self._fn(**{self._input_name: images})
        elif self._has_training_argument:
            # BatchNorm in inference mode by construction, also while fine-tuning.
            outputs = self._fn(images, training=False)
        else:
            outputs = self._fn(images)
        features = self._select_output(outputs)
        if features.shape.rank == 4:
            reduce = tf.reduce_mean if self.pooling == "avg" else tf.reduce_max
            features = reduce(features, axis=[1, 2])
        if features.shape.rank != 2:
            raise ValueError(
                f"The hub model '{self.handle}' returns a tensor of rank {features.shape.rank}; "
                "an image backbone must return a feature vector (batch, dim) or a feature map "
                f"(batch, h, w, c). Received: output_shape={features.shape}"
            )
        if self.trainable:
            for loss in self._regularization_losses:
                self.add_loss(loss())
        return features

    def _select_output(self, outputs):
        if not isinstance(outputs, dict):
            return outputs
        key = self.output_key
        if key is None:
            if len(outputs) == 1:
                key = next(iter(outputs))
            elif "default" in outputs:
                key = "default"
        if key not in outputs:
            raise ValueError(
                f"The hub model '{self.handle}' returns several outputs {sorted(outputs)}; "
                f"pass the one to use as `output_key`. Received: output_key={self.output_key!r}"
            )
        return outputs[key]

    def _probe_feature_dim(self) -> int:
        size = self.input_size or (224, 224)
        out = self.call(tf.zeros((1, *size, 3)))
        return int(out.shape[-1])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.feature_dim)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("dtype", None)
        config.update(
            handle=_FromLiveLayer(self.handle),
            signature=self.signature,
            output_key=self.output_key,
            pooling=self.pooling,
        )
        return config

    @classmethod
    def from_config(cls, config):
        _check_safe_to_load(config.get("handle"))
        return cls(**config)


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
    default = fixed[0] if fixed else (image_size or 224)
    return BackboneSpec(
        name=name or f"hub:{handle}",
        constructor=_constructor(handle, signature=signature, output_key=output_key,
                                 feature_dim=probe.feature_dim),
        default_size=default,
        pretrained_sizes=(default,) if fixed else None,
        preprocessing="unit",
        feature_dim=probe.feature_dim,
        blocks=(_LAYER_NAME,),
        family="hub",
        min_size=min(32, default) if not fixed else default,
        description=f"TF Hub {'TF1 module (inference only)' if probe._is_tf1 else 'SavedModel'}: {handle}",
    )


# Helpers -----------------------------------------------------------------------------------


def _constructor(handle, *, signature=None, output_key=None, feature_dim=None):
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
        if feature_dim is not None and layer.feature_dim != feature_dim:
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


def _load(handle: str):
    import tensorflow_hub as hub

    is_url = "://" in handle
    if not is_url and not tf.io.gfile.exists(handle):
        raise FileNotFoundError(
            f"The hub handle '{handle}' is neither a URL nor an existing directory. Pass a "
            "tfhub.dev/Kaggle model URL or the path of a SavedModel directory. "
            f"Received: handle={handle!r}"
        )
    try:
        return hub.load(handle)
    except OSError as error:  # urllib errors (offline, 404) are OSErrors
        import hashlib

        cache = os.environ.get("TFHUB_CACHE_DIR", "<system temp>/tfhub_modules")
        folder = hashlib.sha1(handle.encode("utf8")).hexdigest()
        raise FileNotFoundError(
            f"Could not download the hub model '{handle}' ({error}). On a machine with "
            "network access run `tensorflow_hub.resolve(handle)` with TFHUB_CACHE_DIR set, "
            f"and copy the resulting folder to '{cache}/{folder}' here, or pass a local "
            f"SavedModel directory. Received: handle={handle!r}"
        ) from error
    except ValueError as error:
        if is_url:
            raise
        raise FileNotFoundError(
            f"The directory '{handle}' holds no SavedModel ({error}). Pass the directory that "
            f"contains saved_model.pb. Received: handle={handle!r}"
        ) from error


def _has_training_argument(obj) -> bool:
    try:
        spec = inspect.getfullargspec(obj.__call__)
    except TypeError:
        return False
    return "training" in spec.args or "training" in spec.kwonlyargs


def _first_input_spec(concrete):
    for fn in concrete:
        args, _ = fn.structured_input_signature
        if args and isinstance(args[0], tf.TensorSpec):
            return args[0]
    return None


def _fixed_size(spec) -> tuple[int, int] | None:
    shape = getattr(spec, "shape", None)
    if shape is None or shape.rank != 4 or None in (shape[1], shape[2]):
        return None
    return (int(shape[1]), int(shape[2]))


def _check_safe_to_load(handle) -> None:
    """A `.keras` file from a stranger must not run code: refuses to load `handle` in safe mode.

    Loading a hub handle runs its SavedModel's graph, which may do anything a TensorFlow op
    can (write files, read secrets). So, like `keras.layers.TFSMLayer`, while Keras
    deserializes in safe mode (the default of `keras.saving.load_model`) a handle from a model
    config is refused, local or remote, unless it is one of the well-known tfhub.dev handles
    registered below or the caller trusts it (`tltf.load_model(path, trust_hub_handles=...)`).
    Building and cloning layers in memory is not deserialization and is never refused.
    """
    if isinstance(handle, _FromLiveLayer) or handle is None:
        return
    if str(handle) in _KNOWN_HANDLES or _is_trusted(str(handle)):
        return
    if _compat.in_safe_mode():
        raise _RefusedHandle(handle)


class _FromLiveLayer(str):
    """A handle as the `get_config` of a layer alive in this process returns it.

    That layer already loaded the SavedModel, by the user's choice, so cloning it in memory
    (`keras.models.clone_model`, `Model.from_config(model.get_config())`, which Keras runs
    in safe mode too) loads nothing new and is allowed. Saving writes JSON, which keeps only
    the plain string, so a config read from a file never carries this mark.
    """

    __slots__ = ()


class _RefusedHandle(ValueError):
    """The refusal of `_check_safe_to_load`; `handle` lets the CLI name its own opt-in flag."""

    def __init__(self, handle):
        self.handle = handle
        text = str(handle)
        self.shown = text if len(text) <= 200 else text[:197] + "..."  # a file may hold 1 MB
        super().__init__(
            f"Refusing to load the TF Hub/SavedModel handle '{self.shown}' named in this "
            "model's config: loading it would run the SavedModel's graph, which can execute "
            "arbitrary TensorFlow ops, and safe mode allows only the well-known tfhub.dev "
            "handles. If you trust the file and the SavedModel (also when you saved the model "
            f"yourself), load it with `tltf.load_model(path, trust_hub_handles=[{self.shown!r}])`"
            " or `keras.saving.load_model(path, safe_mode=False)`. "
            f"Received: handle={self.shown!r}"
        )


# Handles the caller of `tltf.load_model` trusts, for the duration of that call only. A
# context variable rather than a global, so the trust never outlives the call nor leaks into
# another thread's load.
_TRUSTED: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "tltf_trusted_hub_handles", default=())


@contextlib.contextmanager
def _trusting(handles):
    token = _TRUSTED.set(tuple(str(h) for h in handles))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def _is_trusted(handle: str) -> bool:
    trusted = _TRUSTED.get()
    if handle in trusted:
        return True
    if "://" in handle:
        return False
    # A local directory may be written './hub_model' in one place and 'hub_model' in another.
    real = os.path.realpath(handle)
    return any("://" not in t and os.path.realpath(t) == real for t in trusted)


def _check_backbone_name(name) -> None:
    """`spec_of` resolves a saved `"hub:<handle>"` backbone name by loading the handle, so
    a config that names an unregistered one is held to the rule of `_check_safe_to_load`."""
    from tltf.backbones.registry import list_backbones

    if isinstance(name, _FromLiveLayer):
        return
    if isinstance(name, str) and name.strip().startswith("hub:") and (
            name.strip() not in list_backbones()):
        _check_safe_to_load(name.strip()[len("hub:"):])


# The well-known hub image backbones ---------------------------------------------------------
# Handles and input sizes as in the TensorFlow Hub tutorial "Retraining an Image Classifier"
# (tensorflow/docs, site/en/hub/tutorials/tf2_image_retraining), plus the TF1 module kept
# in ../shared/tfhub_modules. Feature widths are checked against the loaded model at build
# time (a wrong figure raises instead of building a mismatched head).
_TFHUB = "https://tfhub.dev/google/"
_KNOWN = (
    # name, handle, default size, feature dim, fixed size
    ("mobilenet_v2_100_224", _TFHUB + "imagenet/mobilenet_v2_100_224/feature_vector/4", 224,
     1280, False),
    ("mobilenet_v3_small_100_224", _TFHUB + "imagenet/mobilenet_v3_small_100_224/feature_vector/5",
     224, 1024, False),
    ("mobilenet_v3_large_100_224", _TFHUB + "imagenet/mobilenet_v3_large_100_224/feature_vector/5",
     224, 1280, False),
    ("efficientnet_v2_b0", _TFHUB + "imagenet/efficientnet_v2_imagenet1k_b0/feature_vector/2",
     224, 1280, False),
    ("efficientnet_v2_s", _TFHUB + "imagenet/efficientnet_v2_imagenet1k_s/feature_vector/2",
     384, 1280, False),
    ("efficientnet_v2_b0_21k", _TFHUB + "imagenet/efficientnet_v2_imagenet21k_b0/feature_vector/2",
     224, 1280, False),
    ("bit_s_r50x1", _TFHUB + "bit/s-r50x1/1", 224, 2048, False),
    ("bit_m_r50x1", _TFHUB + "bit/m-r50x1/1", 224, 2048, False),
    ("resnet_v2_50", _TFHUB + "imagenet/resnet_v2_50/feature-vector/4", 224, 2048, False),
    ("inception_v3", _TFHUB + "imagenet/inception_v3/feature-vector/4", 299, 2048, False),
    ("mobilenet_v2_035_128_tf1", _TFHUB + "imagenet/mobilenet_v2_035_128/feature_vector/2",
     128, 1280, True),
)
_KNOWN_HANDLES = frozenset(handle for _, handle, *_ in _KNOWN)


def _register_known() -> None:
    for short, handle, size, dim, fixed in _KNOWN:
        tf1 = short.endswith("_tf1")
        register_backbone(
            BackboneSpec(
                name=f"hub:{short}",
                constructor=_constructor(handle, feature_dim=dim),
                default_size=size,
                pretrained_sizes=(size,) if fixed else None,
                preprocessing="unit",
                feature_dim=dim,
                blocks=(_LAYER_NAME,),
                family="hub",
                min_size=size if fixed else 32,
                description=f"TF Hub {'TF1 module (inference only)' if tf1 else 'SavedModel'}: "
                f"{handle}",
            )
        )


_register_known()
register_source("hub", hub_backbone)
