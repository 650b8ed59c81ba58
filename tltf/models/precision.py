"""Mixed precision and XLA: the dtype policy a model is built under and whether steps compile.

The global Keras dtype policy only changes inside a `with` block (`dtype_policy_scope`), so
building one model in mixed precision never changes the next. `build_classifier`,
`compile_classifier`, `fine_tune` and the exporters all use these rules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf

from tltf import _compat
from tltf._backend import check_backend

check_backend()  # Keras must run on TensorFlow before this module builds anything

__all__ = ["dtype_policy_scope", "resolve_jit_compile", "resolve_mixed_precision"]

# User-facing option -> Keras dtype policy name.
_PRECISIONS = {
    "float32": "float32",
    "float16": "mixed_float16",
    "bfloat16": "mixed_bfloat16",
    "mixed_float16": "mixed_float16",
    "mixed_bfloat16": "mixed_bfloat16",
}


def _gpu_compute_capabilities() -> list[tuple[int, int]]:
    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability")
        if capability is not None:  # None on non-CUDA GPUs (ROCm, Metal)
            capabilities.append(tuple(capability))
    return capabilities


def resolve_mixed_precision(option: str = "auto") -> str:
    """Turns a `mixed_precision=` option into a Keras dtype policy name.

    `"auto"` picks what is fastest without changing results in a way that matters:

    - every visible GPU is CUDA with compute capability >= 8.0 (Ampere and newer):
      `"mixed_bfloat16"`. These GPUs run bfloat16 on their tensor cores as fast as float16,
      and bfloat16 keeps float32's exponent range, so no loss scaling is needed.
    - CUDA GPUs with compute capability 7.x (Volta, Turing): `"mixed_float16"`, the 16-bit
      type their tensor cores accelerate (trained with dynamic loss scaling).
    - anything else (CPU, older GPUs, non-CUDA GPUs): `"float32"`. On these, 16-bit compute
      is not faster (TensorFlow mixed precision guide) and float16 is emulated.

    Explicit choices are `"float32"`, `"float16"` (= `"mixed_float16"`) and `"bfloat16"`
    (= `"mixed_bfloat16"`): variables stay float32, layers compute in the 16-bit type, and
    the classification head's output stays float32.

    Args:
        option: str. One of `"auto"`, `"float32"`, `"float16"`, `"bfloat16"`,
            `"mixed_float16"`, `"mixed_bfloat16"`. Defaults to `"auto"`.

    Returns:
        The Keras dtype policy name: `"float32"`, `"mixed_float16"` or `"mixed_bfloat16"`.

    Raises:
        ValueError: if `option` is not one of the values above.

    Example:

    >>> resolve_mixed_precision("bfloat16")
    'mixed_bfloat16'
    >>> resolve_mixed_precision("auto")  # on a machine without a GPU
    'float32'
    """
    if isinstance(option, str) and option in _PRECISIONS:
        return _PRECISIONS[option]
    if option != "auto" or not isinstance(option, str):
        raise ValueError(
            "`mixed_precision` must be 'auto', 'float32', 'float16', 'bfloat16', "
            "'mixed_float16' or 'mixed_bfloat16'. Use 'float32' to turn mixed precision "
            f"off. Received: mixed_precision={option!r}"
        )
    capabilities = _gpu_compute_capabilities()
    if not capabilities or len(capabilities) != len(tf.config.list_physical_devices("GPU")):
        return "float32"
    slowest = min(capabilities)
    if slowest >= (8, 0):
        return "mixed_bfloat16"
    if slowest >= (7, 0):
        return "mixed_float16"
    return "float32"


@contextlib.contextmanager
def dtype_policy_scope(policy: str | keras.DTypePolicy | None) -> Iterator[None]:
    """Sets the global Keras dtype policy inside a `with` block, then restores it.

    Keras layers take their dtype policy when they are created, so a model must be BUILT
    inside this block for the policy to apply. The previous policy comes back when the block
    exits, also when it exits with an exception.

    Args:
        policy: str, `keras.DTypePolicy` or None. A Keras dtype policy such as `"float32"`,
            `"mixed_float16"` or `"mixed_bfloat16"` (see `resolve_mixed_precision` for the
            user-facing names). None leaves the current policy in place.

    Returns:
        A context manager.

    Raises:
        ValueError: if `policy` is not a dtype policy Keras knows.

    Example:

    >>> with dtype_policy_scope("mixed_bfloat16"):
    ...     layer = keras.layers.Dense(4)
    >>> layer.compute_dtype, keras.config.dtype_policy().name
    ('bfloat16', 'float32')
    """
    previous = keras.config.dtype_policy()
    if policy is not None:
        try:
            keras.config.set_dtype_policy(policy)
        except (ValueError, TypeError) as error:
            raise ValueError(
                "`policy` must be a Keras dtype policy name such as 'float32', "
                "'mixed_float16' or 'mixed_bfloat16', or a `keras.DTypePolicy` "
                f"({error}). Received: policy={policy!r}"
            ) from None
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def resolve_jit_compile(option: bool | str = "auto", *, strategy=None) -> bool:
    """Decides whether to compile training steps with XLA (`jit_compile`).

    `"auto"` turns XLA on where it helps: when a GPU is visible, the default (single device)
    strategy is used, and TensorFlow's op determinism is off. On CPU, XLA compiles slowly and
    rarely runs faster; Keras also disables it under `tf.distribute` and with op determinism.
    Layers that cannot be compiled are still handled by Keras (`compile(jit_compile=True)`
    falls back when a layer does not support XLA).

    Args:
        option: bool or `"auto"`. True or False are returned unchanged. Defaults to `"auto"`.
        strategy: `tf.distribute.Strategy` or None. The strategy training will run under.
            Defaults to None (the current strategy).

    Returns:
        bool, the value to pass as `model.compile(jit_compile=...)`.

    Raises:
        ValueError: if `option` is neither a bool nor `"auto"`.

    Example:

    >>> resolve_jit_compile("auto")  # on a machine without a GPU
    False
    """
    if isinstance(option, bool):
        return option
    if option != "auto":
        raise ValueError(
            "`jit_compile` must be True, False or 'auto' (XLA on a GPU, off on CPU). "
            f"Received: jit_compile={option!r}"
        )
    if not tf.config.list_physical_devices("GPU") or _compat.is_op_determinism_enabled():
        return False
    return _is_default_strategy(strategy if strategy is not None else tf.distribute.get_strategy())


def _is_default_strategy(strategy: tf.distribute.Strategy) -> bool:
    # TensorFlow's single-device default strategy has no public class; Keras turns XLA off
    # under any other strategy.
    return type(strategy).__name__ == "_DefaultDistributionStrategy"
