"""The one classification head every tltf model ends in."""

from __future__ import annotations

import keras

from tltf._backend import check_backend

check_backend()  # Keras must run on TensorFlow before this module builds anything

__all__ = ["ClassificationHead", "TemperatureScaling"]

_EPS = 1e-7

OUTPUTS = ("probabilities", "logits")


@keras.saving.register_keras_serializable(package="tltf")
class ClassificationHead(keras.layers.Layer):
    """Maps a pooled feature vector to class scores: dropout, optional hidden layer, Dense.

    The final Dense layer and its activation always compute in float32, so a model trained
    under a mixed-precision policy still emits float32 scores and a stable loss. The head
    also records what a deployed model needs to know: the class names and whether it emits
    probabilities or logits.

    Args:
        num_classes: int. Number of classes (units of the last layer).
        dropout: float. Dropout rate before the last layer (and after the hidden one).
            Defaults to `0.2`.
        hidden_units: int or `None`. Width of an optional hidden ReLU layer. Defaults to
            `None` (a linear head, the usual choice for transfer learning).
        multi_label: bool. `True` for independent sigmoid outputs (several labels per
            image), `False` for one softmax over the classes. Defaults to `False`.
        output: str. `"probabilities"` (softmax/sigmoid applied) or `"logits"`.
            Defaults to `"probabilities"`.
        class_names: list of str or `None`. Names of the classes, in label order.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    >>> import numpy as np
    >>> head = ClassificationHead(3, class_names=["cat", "dog", "fox"])
    >>> tuple(head(np.random.rand(2, 16).astype("float32")).shape)
    (2, 3)
    """

    def __init__(self, num_classes: int, *, dropout: float = 0.2, hidden_units: int | None = None,
                 multi_label: bool = False, output: str = "probabilities",
                 class_names: list[str] | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(
                f"`num_classes` must be a positive integer. Received: num_classes={num_classes!r}"
            )
        if num_classes < 2 and not multi_label:
            raise ValueError(
                "A single-label classifier needs at least 2 classes (use 2 for a binary "
                "problem, or `multi_label=True` for independent yes/no outputs). "
                f"Received: num_classes={num_classes}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
        if hidden_units is not None and (not isinstance(hidden_units, int) or hidden_units < 1):
            raise ValueError(
                f"`hidden_units` must be a positive integer or None. "
                f"Received: hidden_units={hidden_units!r}"
            )
        if output not in OUTPUTS:
            raise ValueError(f"`output` must be one of {OUTPUTS}. Received: output={output!r}")
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if len(class_names) != num_classes:
                raise ValueError(
                    f"`class_names` has {len(class_names)} names but `num_classes` is "
                    f"{num_classes}; give one name per class. Received: class_names={class_names!r}"
                )
        self.num_classes = num_classes
        self.dropout = float(dropout)
        self.hidden_units = hidden_units
        self.multi_label = bool(multi_label)
        self.output_type = output
        self.class_names = class_names

        self.hidden = (
            keras.layers.Dense(hidden_units, activation="relu", name="hidden", dtype=self.dtype_policy)
            if hidden_units
            else None
        )
        self.dropout_layer = keras.layers.Dropout(self.dropout, name="dropout")
        self.hidden_dropout = keras.layers.Dropout(self.dropout, name="hidden_dropout")
        # Scores in float32 whatever the policy: softmax and the loss are unstable in float16.
        self.predictions = keras.layers.Dense(num_classes, name="predictions", dtype="float32")
        self.activation = (
            None if output == "logits" else ("sigmoid" if self.multi_label else "softmax")
        )

    def build(self, input_shape):
        x_shape = tuple(input_shape)
        if len(x_shape) != 2:
            raise ValueError(
                "ClassificationHead expects pooled features of shape (batch, features). "
                f"Received: input_shape={input_shape}"
            )
        if self.hidden is not None:
            self.hidden.build(x_shape)
            x_shape = (x_shape[0], self.hidden_units)
        self.predictions.build(x_shape)

    def call(self, features, training=None):
        x = self.dropout_layer(features, training=training)
        if self.hidden is not None:
            x = self.hidden(x)
            x = self.hidden_dropout(x, training=training)
        scores = self.predictions(keras.ops.cast(x, "float32"))
        if self.activation == "softmax":
            return keras.ops.softmax(scores, axis=-1)
        if self.activation == "sigmoid":
            return keras.ops.sigmoid(scores)
        return scores

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor((inputs.shape[0], self.num_classes), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            dropout=self.dropout,
            hidden_units=self.hidden_units,
            multi_label=self.multi_label,
            output=self.output_type,
            class_names=self.class_names,
        )
        return config


@keras.saving.register_keras_serializable(package="tltf")
class TemperatureScaling(keras.layers.Layer):
    """Divides class scores by a fitted temperature (post-hoc calibration).

    Appended after the head by `calibrate`. With `from_logits=False` it takes softmax
    probabilities and returns `softmax(log(p) / temperature)`, which equals the softmax of the
    original logits divided by the temperature; with `from_logits=True` it returns
    `logits / temperature`. The ranking of classes (hence accuracy) never changes, only the
    confidence. The temperature is a non-trainable weight, saved with the model and exported
    to TFLite with it.

    Args:
        temperature: float. Positive temperature; above 1 softens over-confident scores.
            Defaults to `1.0`.
        from_logits: bool. Whether the incoming scores are logits. Defaults to `False`.
        **kwargs: base `keras.layers.Layer` arguments (`name`).

    Example:

    >>> import numpy as np
    >>> layer = TemperatureScaling(2.0)
    >>> p = layer(np.array([[0.9, 0.1]], "float32"))
    >>> bool(p[0, 0] < 0.9)
    True
    """

    def __init__(self, temperature: float = 1.0, *, from_logits: bool = False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not float(temperature) > 0:
            raise ValueError(
                f"`temperature` must be a positive number. Received: temperature={temperature!r}"
            )
        self.initial_temperature = float(temperature)
        self.from_logits = bool(from_logits)
        self.temperature = self.add_weight(
            name="temperature", shape=(), trainable=False,
            initializer=keras.initializers.Constant(self.initial_temperature),
        )

    def call(self, scores):
        scores = keras.ops.cast(scores, "float32")
        if self.from_logits:
            return scores / self.temperature
        logits = keras.ops.log(keras.ops.maximum(scores, _EPS))
        return keras.ops.softmax(logits / self.temperature, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(temperature=float(keras.ops.convert_to_numpy(self.temperature)),
                      from_logits=self.from_logits)
        return config
