"""The `"affine:<scale>/<offset>"` preprocessing mode: `x * scale + offset`, per channel.

KerasHub's `ImageConverter` normalises pixels with a scale and an offset (global or per
channel) read from the preset. A spec stores them as this string, so the spec stays plain,
hashable data, and `Preprocessing` computes exactly what the converter computes: cast to
float, multiply by the float32 scale, add the float32 offset.
"""

from __future__ import annotations

__all__: list[str] = []  # the rule of `BackboneSpec.preprocessing` and `Preprocessing`

PREFIX = "affine:"


def affine_mode(scale, offset) -> str:
    """`"affine:s0,s1,s2/o0,o1,o2"` from a converter's scale and offset (`None` = identity)."""
    return f"{PREFIX}{_text(scale, 1.0)}/{_text(offset, 0.0)}"


def parse_affine(mode) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """`(scale, offset)` of an affine mode string, `None` for any other mode.

    Raises:
        ValueError: the string starts with `"affine:"` but is malformed.
    """
    if not isinstance(mode, str) or not mode.startswith(PREFIX):
        return None
    scale, slash, offset = mode[len(PREFIX):].partition("/")
    try:
        values = tuple(tuple(float(v) for v in part.split(",")) for part in (scale, offset))
    except ValueError:
        values = ()
    if not slash or len(values) != 2 or any(len(v) not in (1, 3) for v in values):
        raise ValueError(
            "An affine preprocessing mode is 'affine:<scale>/<offset>', each one number or "
            "three comma-separated numbers (one per RGB channel), e.g. "
            f"'affine:0.00784313725490196/-1.0'. Received: preprocessing={mode!r}")
    return values


def _text(value, identity) -> str:
    if value is None:
        value = identity
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) not in (1, 3):
        raise ValueError("A converter's scale and offset are one number or one per RGB "
                         f"channel. Received: {value!r}")
    return ",".join(repr(float(v)) for v in values)
