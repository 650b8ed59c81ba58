"""Refuses to run under a Keras backend other than TensorFlow, with a message that says why."""

import os


def check_requested_backend() -> None:
    """Raises `ImportError` if `KERAS_BACKEND` names another backend; imports nothing."""
    requested = os.environ.get("KERAS_BACKEND", "tensorflow")
    if requested != "tensorflow":
        raise ImportError(
            "tltf needs Keras on the TensorFlow backend, but the environment variable "
            f"KERAS_BACKEND is set to '{requested}'. Unset it or set KERAS_BACKEND=tensorflow "
            f"before importing tltf. Received: KERAS_BACKEND={requested!r}"
        )


def check_backend() -> None:
    """Raises `ImportError` unless Keras runs on the TensorFlow backend.

    tltf builds on `tf.data`, TF Hub SavedModels and the TFLite converter, which all need
    TensorFlow tensors; a model built under JAX or PyTorch could not be exported. Every
    tltf module that imports Keras calls this once it has (see `tltf/__init__.py`).
    """
    check_requested_backend()
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ImportError(
            "tltf needs Keras on the TensorFlow backend, but Keras was configured for "
            f"'{keras.backend.backend()}' (in ~/.keras/keras.json or by KERAS_BACKEND). Set "
            "KERAS_BACKEND=tensorflow before importing keras. "
            f"Received: backend={keras.backend.backend()!r}"
        )
