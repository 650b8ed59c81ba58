"""`load_model`: a tltf `.keras` file read back in Keras' safe mode, hub handles included."""

from __future__ import annotations

import os

import keras

from tltf.backbones._hub_handles import trusting

__all__ = ["load_model"]


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
    >>> from tltf.models import build_classifier
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
    with trusting(trust_hub_handles):
        return keras.saving.load_model(path, compile=compile, safe_mode=safe_mode)
