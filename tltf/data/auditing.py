"""`audit`: what is wrong with a data set before a model is trained on it.

Reports unreadable files with the reason, exact duplicates (same bytes, or the same decoded
pixels for in-memory data), duplicates that cross the train/validation/test splits (they
inflate validation scores) or that carry different labels, class counts and the imbalance
ratio, tiny images, and how many images are grayscale, CMYK, carry alpha or are rotated by
EXIF. It reuses the cached validation pass of the loaders, so auditing a folder that was
loaded before reads no image again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tltf.data.checks import check_files
from tltf.data.dataset import ImageDataset
from tltf.data.layout import class_folders, find_split_folders, list_image_files

__all__ = ["AuditReport", "audit"]

_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclasses.dataclass
class AuditReport:
    """The findings of `audit`, as data; `str(report)` (or `print(report)`) summarises them.

    Attributes:
        class_counts: dict, split name -> {class name: number of usable images}.
        unreadable: list of (path, reason).
        duplicates: list of groups (lists of paths or `split/index` ids) with identical
            content.
        cross_split_duplicates: the duplicate groups that span more than one split.
        conflicting_labels: the duplicate groups whose members have different classes.
        imbalance_ratio: largest over smallest class count (over all splits); `inf` when a
            class is empty.
        tiny_images: list of (path, (height, width)) smaller than `min_size` on a side.
        grayscale: paths of grayscale images.
        cmyk: paths of CMYK images.
        alpha: paths of images with an alpha channel.
        exif_rotated: paths of JPEGs with an EXIF orientation other than upright.
        extension_mismatch: paths whose extension names another format than the content.
    """

    class_counts: dict[str, dict[str, int]]
    unreadable: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    duplicates: list[list[str]] = dataclasses.field(default_factory=list)
    cross_split_duplicates: list[list[str]] = dataclasses.field(default_factory=list)
    conflicting_labels: list[list[str]] = dataclasses.field(default_factory=list)
    imbalance_ratio: float = 1.0
    tiny_images: list[tuple[str, tuple[int, int]]] = dataclasses.field(default_factory=list)
    grayscale: list[str] = dataclasses.field(default_factory=list)
    cmyk: list[str] = dataclasses.field(default_factory=list)
    alpha: list[str] = dataclasses.field(default_factory=list)
    exif_rotated: list[str] = dataclasses.field(default_factory=list)
    extension_mismatch: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing needs fixing: no unreadable file, no duplicate across splits or labels."""
        return not (self.unreadable or self.cross_split_duplicates or self.conflicting_labels)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain Python data (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        lines = ["Data set audit"]
        for split, counts in self.class_counts.items():
            total = sum(counts.values())
            shown = ", ".join(f"{k}: {v}" for k, v in counts.items())
            lines.append(f"  {split}: {total} images ({shown})")
        lines.append(f"  imbalance ratio (largest / smallest class): {self.imbalance_ratio:.2f}")

        def section(title, items, fmt=str, limit=10):
            lines.append(f"  {title}: {len(items)}")
            for item in items[:limit]:
                lines.append(f"    {fmt(item)}")
            if len(items) > limit:
                lines.append(f"    ... and {len(items) - limit} more")

        section("unreadable files", self.unreadable, lambda i: f"{i[0]}: {i[1]}")
        section("duplicate groups", self.duplicates, " == ".join)
        section("duplicates across splits", self.cross_split_duplicates, " == ".join)
        section("duplicates with different labels", self.conflicting_labels, " == ".join)
        section("tiny images", self.tiny_images, lambda i: f"{i[0]} ({i[1][0]}x{i[1][1]})")
        for title, items in (
            ("grayscale", self.grayscale),
            ("CMYK", self.cmyk),
            ("with alpha", self.alpha),
            ("EXIF-rotated", self.exif_rotated),
            ("extension does not match content", self.extension_mismatch),
        ):
            lines.append(f"  {title}: {len(items)}")
        return "\n".join(lines)


def _folder_entries(root: Path):
    """(split, class name, path) for every image file of a folder layout."""
    splits = find_split_folders(root) or {"all": root}
    entries = []
    for split, split_root in splits.items():
        classes = class_folders(split_root)
        if not classes:
            raise ValueError(
                f"Expected one subfolder per class in {split_root}, but found none. "
                f"Received: source={str(root)!r}"
            )
        for name in classes:
            entries.extend((split, name, f) for f in list_image_files(split_root / name))
    return entries


def _named_datasets(source) -> dict[str, ImageDataset]:
    if isinstance(source, ImageDataset):
        return {"all": source}
    if isinstance(source, Mapping):
        return dict(source)
    names = ("train", "validation", "test")
    if len(source) > len(names):
        names = tuple(f"split{i}" for i in range(len(source)))
    return dict(zip(names, source, strict=False))


def audit(
    source: str | os.PathLike | ImageDataset | Sequence[ImageDataset] | Mapping[str, ImageDataset],
    *,
    min_size: int = 32,
    cache_dir: str | os.PathLike | None = None,
) -> AuditReport:
    """Audits a folder or loaded data sets for unreadable files, duplicates, imbalance, odd images.

    Args:
        source: a folder (one subfolder per class, or `train/`, `validation/`, `test/`
            split folders), an `ImageDataset`, a sequence `(train, validation[, test])` of
            them, or a dict split name -> `ImageDataset`. In-memory data sets (no files) are
            checked for duplicate pixels only.
        min_size: int. Images with a side shorter than this are reported as tiny. Defaults
            to `32`.
        cache_dir: where the validation cache lives. Defaults to
            `tltf.data.checks.default_cache_dir()`.

    Returns:
        An `AuditReport`.

    Raises:
        FileNotFoundError: if a folder `source` does not exist.
        ValueError: if a folder has no class subfolders.
        TypeError: if `source` is of another type.

    Example:

    >>> import numpy as np
    >>> from tltf.data import load_arrays
    >>> x = np.random.randint(0, 255, (4, 8, 8, 3), dtype="uint8")
    >>> x[3] = x[0]
    >>> report = audit(load_arrays(x, np.array([0, 1, 0, 1])))
    >>> report.conflicting_labels
    [['all/0', 'all/3']]
    """
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if not root.is_dir():
            raise FileNotFoundError(
                f"Expected a folder to audit, but {root} is not a directory. "
                f"Received: source={str(source)!r}"
            )
        entries = _folder_entries(root)
        skipped = []
    elif isinstance(source, (ImageDataset, Sequence, Mapping)) and not isinstance(source, str):
        datasets = _named_datasets(source)
        if not all(isinstance(d, ImageDataset) for d in datasets.values()):
            raise TypeError(
                "Expected `source` to be a folder, an ImageDataset or a sequence/dict of them. "
                f"Received: source={source!r}"
            )
        return _audit_datasets(datasets, min_size, cache_dir)
    else:
        raise TypeError(
            "Expected `source` to be a folder, an ImageDataset or a sequence/dict of them. "
            f"Received: source of type {type(source).__name__}"
        )
    return _report(entries, skipped, min_size, cache_dir)


def _audit_datasets(datasets, min_size, cache_dir) -> AuditReport:
    entries, skipped, memory = [], [], {}
    for split, data in datasets.items():
        skipped.extend(data.skipped)
        if data.files is not None:
            entries.extend(
                (split, data.class_names[label], f)
                for f, label in zip(data.files, data.labels, strict=True)
            )
        else:
            memory[split] = data
    report = _report(entries, skipped, min_size, cache_dir)
    for split, data in memory.items():
        report.class_counts[split] = dict(data.class_counts)
        groups = defaultdict(list)
        for i, (image, label) in enumerate(data.dataset.as_numpy_iterator()):
            digest = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
            groups[digest].append((split, data.class_names[int(label)], f"{split}/{i}"))
        _add_duplicates(report, groups.values())
    report.imbalance_ratio = _imbalance(report.class_counts)
    return report


def _add_duplicates(report: AuditReport, groups) -> None:
    for group in groups:
        if len(group) < 2:
            continue
        ids = [g[2] for g in group]
        report.duplicates.append(ids)
        if len({g[0] for g in group}) > 1:
            report.cross_split_duplicates.append(ids)
        if len({g[1] for g in group}) > 1:
            report.conflicting_labels.append(ids)


def _imbalance(class_counts: dict[str, dict[str, int]]) -> float:
    totals: dict[str, int] = defaultdict(int)
    for counts in class_counts.values():
        for name, n in counts.items():
            totals[name] += n
    if not totals:
        return 1.0
    smallest = min(totals.values())
    return float("inf") if smallest == 0 else max(totals.values()) / smallest


def _report(entries, skipped, min_size, cache_dir) -> AuditReport:
    checks = check_files([e[2] for e in entries], cache_dir=cache_dir)
    counts: dict[str, dict[str, int]] = {}
    for split, name, _ in entries:
        counts.setdefault(split, {}).setdefault(name, 0)
    report = AuditReport(class_counts=counts, unreadable=list(skipped))
    groups = defaultdict(list)
    for (split, name, path), check in zip(entries, checks, strict=True):
        if not check.ok:
            report.unreadable.append((path, check.reason))
            continue
        counts[split][name] += 1
        groups[check.sha1].append((split, name, path))
        if min(check.width, check.height) < min_size:
            report.tiny_images.append((path, check.upright_size))
        if check.mode in _GRAY_MODES:
            report.grayscale.append(path)
        if check.mode == "CMYK":
            report.cmyk.append(path)
        if check.mode in _ALPHA_MODES:
            report.alpha.append(path)
        if check.orientation not in (0, 1):
            report.exif_rotated.append(path)
        if check.extension_mismatch:
            report.extension_mismatch.append(path)
    _add_duplicates(report, groups.values())
    report.unreadable = sorted(set(report.unreadable))
    report.imbalance_ratio = _imbalance(counts)
    return report
