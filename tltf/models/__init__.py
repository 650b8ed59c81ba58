"""Models: preprocessing inside the model, the one head, `build_classifier`, safe loading.

A model built here carries its backbone spec in its config, so it unfreezes, fine-tunes,
exports and reloads with no global lookup. Importing this package registers tltf's layers and
loss with Keras (`heads`, `preprocessing`, `losses`, and the backbones' `HubLayer`), so
`keras.models.load_model` can read a tltf `.keras` file.
"""

from tltf.models import heads, losses, preprocessing  # noqa: F401  (register with Keras)
from tltf.models.classifier import build_classifier, compile_classifier
from tltf.models.loading import load_model

__all__ = ["build_classifier", "compile_classifier", "load_model"]
