"""One way to warn: the warning names the user's line, not a line inside tltf.

A fixed `stacklevel` is right for one call path only: the same helper reached from
`tltf.fine_tune` and from `tltf.unfreeze` sits at different depths, so a fixed number points
at tltf's own code on one of them. `warn` walks up the stack to the first frame outside the
tltf package instead, so `warnings.catch_warnings`, `-W error::UserWarning:module` filters and
the printed `file:line` all refer to the caller's code.
"""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Issues `warnings.warn(message, category)` attributed to the first caller outside tltf."""
    frame = sys._getframe(1)  # the caller of warn, inside tltf
    level = 2
    while frame.f_back is not None and _inside_tltf(frame):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


def _inside_tltf(frame) -> bool:
    return os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR)
