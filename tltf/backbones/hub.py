"""`HubLayer`: a TF Hub SavedModel wrapped in a real Keras 3 layer.

`hub.KerasLayer` is a Keras 2 layer and cannot be added to a Keras 3 model
(tensorflow/tensorflow#65419). `HubLayer` loads the same SavedModel with `tensorflow_hub`
(tfhub.dev and Kaggle handles are downloaded and cached by `tensorflow_hub` itself, under
`TFHUB_CACHE_DIR`) and exposes its variables as Keras weights, so `fit` and the optimizer
train them like any other layer. This is the only tltf module that imports
`tensorflow_hub`, and it does so lazily: importing tltf does not import it.
`tltf.backbones.hub_source` turns a handle into a backbone spec built around this layer.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import keras
import tensorflow as tf

from tltf.backbones._hub_handles import FromLiveLayer, check_safe_to_load

__all__ = ["HubLayer"]


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
            handle=FromLiveLayer(self.handle),
            signature=self.signature,
            output_key=self.output_key,
            pooling=self.pooling,
        )
        return config

    @classmethod
    def from_config(cls, config):
        check_safe_to_load(config.get("handle"))
        return cls(**config)


# Loading the SavedModel -------------------------------------------------------------------


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
