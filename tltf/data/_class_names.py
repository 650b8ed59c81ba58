"""The one rule for class names, used by evaluate, predict, calibrate, verify, export and the CLI.

Three places can name the classes: the caller's `class_names=` argument (names of the data's
labels, in label order), the data (`ImageDataset.class_names`, same meaning) and the model's
head (names of the model's outputs, in output order). The rule, documented in
docs/concepts.md ("Class names"):

1. Every list found must have one name per model output, without repeats; else ValueError.
2. `class_names=` and the data's names, when both are given, must be the same list.
3. The names of the labels (`class_names=`, else the data's) and the head's names, when both
   are known, must be the same set. In another order, the labels are re-ordered to the
   head's order (`label_map`); other classes raise.
4. The result is the head's names, else the labels' names, else `"0"`, `"1"`, ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class ClassNames:
    """The outcome of `resolve_class_names`.

    Attributes:
        names: list of str. One name per model output, in output order.
        label_map: int array or None. `label_map[i]` is the model output of data label `i`,
            when the data names its labels in another order than the head.
        source: str. Where the names come from: `"head"`, `"class_names"`, `"data"` or
            `"index"` (none was found).
    """

    names: list[str]
    label_map: np.ndarray | None = None
    source: str = "head"

    def relabel(self, labels):
        """Labels of the data in the model's output order (int or one-hot/multi-hot)."""
        if self.label_map is None or labels is None:
            return labels
        labels = np.asarray(labels)
        if labels.ndim == 2 and labels.shape[1] == len(self.label_map):  # one column per class
            return labels[:, np.argsort(self.label_map)]
        labels = labels.astype("int64")
        bad = labels[(labels < 0) | (labels >= len(self.label_map))]
        if bad.size:
            raise ValueError(
                f"Labels must be in [0, {len(self.label_map) - 1}] for {len(self.label_map)} "
                f"classes. Received: label={int(bad.flat[0])}")
        return self.label_map[labels]


def resolve_class_names(num_classes: int, *, given: Sequence[str] | None = None,
                        data: Sequence[str] | None = None,
                        head: Sequence[str] | None = None) -> ClassNames:
    """Applies the class-name rule (module docstring) for a model with `num_classes` outputs.

    Args:
        num_classes: int. The model's number of outputs.
        given: the caller's `class_names=` argument, or None.
        data: the names the data records (`ImageDataset.class_names`), or None.
        head: the names the model's head records, or None.

    Returns:
        A `ClassNames`.

    Raises:
        ValueError: if a list has the wrong length or repeats a name, `class_names=` and the
            data disagree, or the labels and the head name different classes.

    Example:

    >>> resolve_class_names(2, data=["dog", "cat"], head=["cat", "dog"]).label_map.tolist()
    [1, 0]
    >>> resolve_class_names(2).names
    ['0', '1']
    """
    found = {}
    for arg, where, names in (("class_names", "`class_names=`", given),
                              ("data.class_names", "the data", data),
                              ("head.class_names", "the model's head", head)):
        if names is None:
            continue
        names = [str(n) for n in names]
        if len(names) != num_classes:
            raise ValueError(
                f"The model has {num_classes} outputs but {len(names)} class names were found "
                f"in {where}; give one name per class. "
                f"Received: {arg}={names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"{where} names a class twice; class names must be distinct. "
                             f"Received: {arg}={names!r}")
        found[arg] = names
    given, data, head = (found.get(k) for k in ("class_names", "data.class_names",
                                                "head.class_names"))
    if given is not None and data is not None and given != data:
        raise ValueError(
            f"`class_names` disagrees with the class names recorded in the data {data!r}; the "
            "labels follow the data's order, so leave `class_names` unset. "
            f"Received: class_names={given!r}")
    labels, source = (given, "class_names") if given is not None else (data, "data")
    if head is None:
        if labels is None:
            return ClassNames([str(i) for i in range(num_classes)], None, "index")
        return ClassNames(labels, None, source)
    if labels is None or labels == head:
        return ClassNames(head, None, "head")
    if set(labels) != set(head):
        where = "`class_names=`" if source == "class_names" else "the data"
        raise ValueError(
            f"The model was trained on classes {head!r} but {where} names classes {labels!r}; "
            "use data with the same classes (or leave `class_names` unset; to rename the "
            "model's classes, set `tltf.models.parts.head_of(model).class_names`). "
            f"Received: {'class_names' if source == 'class_names' else 'data.class_names'}"
            f"={labels!r}")
    # Same classes in another order: each label is re-mapped onto the head's output.
    return ClassNames(head, np.array([head.index(n) for n in labels]), "head")
