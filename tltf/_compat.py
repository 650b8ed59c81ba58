"""Private Keras internals that tltf relies on, each with the reason it has no public twin.

This is the one place where tltf imports `keras.src`; a Keras upgrade that moves a name
breaks here, loudly, and nowhere else.
"""

from __future__ import annotations

__all__: list[str] = []


def in_safe_mode() -> bool:
    """Whether Keras is deserializing a config in safe mode right now.

    Keras keeps the flag of `keras.saving.load_model(..., safe_mode=...)` in a private global
    (`serialization_lib.in_safe_mode`, read by `keras.layers.Lambda` and `TFSMLayer` too) and
    has no public accessor. It is `True` while a config is deserialized in safe mode (the
    default of `load_model`, `deserialize_keras_object` and the nested layers of
    `Model.from_config`), `False` after the caller opted out (`safe_mode=False`,
    `keras.config.enable_unsafe_deserialization()`), and `None` outside any deserialization
    (building or cloning layers in memory), which counts as not safe mode here.
    """
    try:
        from keras.src.saving.serialization_lib import in_safe_mode as keras_in_safe_mode
    except ImportError:  # pragma: no cover - a Keras layout we do not know: refuse, not run
        return True
    return bool(keras_in_safe_mode())
