"""Held-out splits of one list of labels: the fractions asked for, checked, and stratified.

Shared by the loaders (`load_image_folder`, `load_csv`, `load_arrays`), so every source splits
by the same rule: per class, seeded, every class in every split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__: list[str] = []  # helpers of the loaders


def split_fractions(validation_split, test_split) -> list[float]:
    """The held-out fractions given (each in (0, 1), together < 1), in split order."""
    fractions = []
    for name, value in (("validation_split", validation_split), ("test_split", test_split)):
        if value is None:
            continue
        if not isinstance(value, float) or not 0.0 < value < 1.0:
            raise ValueError(
                f"Expected `{name}` to be a float in (0, 1) or None. Received: {name}={value!r}"
            )
        fractions.append(value)
    if sum(fractions) >= 1.0:
        raise ValueError(
            "Expected `validation_split + test_split` to leave images for training (< 1). "
            f"Received: validation_split={validation_split!r}, test_split={test_split!r}"
        )
    return fractions


def check_split_sizes(labels, class_names, fractions, what: str, argument: str) -> None:
    """Every class must have an image in every split: else one error naming the classes."""
    need = len(fractions) + 1
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names))
    small = [f"{class_names[c]} ({n})" for c, n in enumerate(counts) if 0 < n < need]
    if small:
        shown = ", ".join(small[:5]) + (f" and {len(small) - 5} more" if len(small) > 5 else "")
        raise ValueError(
            f"Splitting {what} needs at least {need} usable images per class (one per split), "
            f"but class(es) {shown} have fewer. Add images to them, or drop `{argument}` and "
            f"pass the held-out data separately. Received: {argument}"
        )


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """Index arrays: [train, then one per fraction], stratified per class, reproducible."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        start = 0
        for k, f in enumerate(fractions, start=1):
            n = int(round(len(idx) * f))
            if n == 0 and len(idx) > len(fractions):
                n = 1  # every class shows up in every split when it can
            parts[k].extend(idx[start : start + n])
            start += n
        parts[0].extend(idx[start:])
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
