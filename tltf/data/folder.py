"""`load_image_folder`: a folder of class folders (or of split folders) as `ImageDataset`s.

Like every source (the others are in `tltf.data.sources`), it returns an `ImageDataset`: the
class names in a fixed order (sorted folder names, or as given), per-class counts, the file
list, the files left out with the reason, and a `tf.data.Dataset` of (uint8 image, int32
label) at `image_size`. `ImageDataset.prepare` turns it into batches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tltf.data._checked_files import _files_dataset
from tltf.data._fs import as_path
from tltf.data._splits import check_split_sizes, split_fractions, stratified_split
from tltf.data.checks import MAX_PIXELS, _validated
from tltf.data.dataset import ImageDataset
from tltf.data.decode import _check_resize, _image_size
from tltf.data.layout import class_folders, find_split_folders, list_image_files

__all__ = ["load_image_folder"]

def _scan_classes(root: Path, class_names: list[str], required: bool, limit: int | None = None):
    files, labels, folders = [], [], {}
    for label, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            if required:
                raise ValueError(
                    f"Expected a class folder {folder} for class {name!r}, but it does not exist. "
                    f"Received: class_names={class_names!r}"
                )
            continue
        found = list_image_files(folder)[:limit]
        folders[name] = folder
        files.extend(found)
        labels.extend([label] * len(found))
    return files, labels, folders


def load_image_folder(
    path: str | os.PathLike,
    *,
    image_size: int | Sequence[int] = 224,
    validation_split: float | None = None,
    test_split: float | None = None,
    seed: int = 0,
    resize: str = "stretch",
    class_names: Sequence[str] | None = None,
    strict: bool = False,
    cache_dir: str | os.PathLike | None = None,
    max_per_class: int | None = None,
    max_pixels: int = MAX_PIXELS,
    verbose: int | str = 0,
) -> ImageDataset | tuple[ImageDataset, ...]:
    """Loads a folder with one subfolder of images per class.

    Two layouts are recognised:

    - `path/<class>/*.jpg`: one data set, optionally split into train / validation / test
      by `validation_split` and `test_split`, stratified per class and reproducible from
      `seed`;
    - `path/train/<class>/...` with `path/validation/<class>/...` (or `val`, `valid`)
      and/or `path/test/<class>/...`: the given splits, in that order.

    Every file is validated once (results cached, see `tltf.data.checks.check_files`); corrupt,
    truncated, empty and non-image files are left out with a warning and listed in
    `.skipped`, so training never stops on them. Files without an image extension
    (`README.txt`, `.DS_Store`) are ignored. EXIF orientation is honoured.

    Args:
        path: str or path. The root folder.
        image_size: int or (height, width). Size of the output images. Defaults to `224`.
        validation_split: float in (0, 1) or `None`. Fraction of each class held out for
            validation. Defaults to `None`.
        test_split: float in (0, 1) or `None`. Fraction of each class held out for testing.
            Defaults to `None`.
        seed: int. Seed of the splits. Defaults to `0`.
        resize: `"stretch"`, `"crop"` (center crop to the aspect ratio) or `"pad"`.
            Antialiased. Defaults to `"stretch"`.
        class_names: list of str or `None`. The class folders, in label order (e.g. the
            classes a trained model knows). Every subfolder must be among them: a folder
            that is not raises rather than being silently left out. Defaults to all
            subfolders, sorted.
        strict: bool. Raise on the first unusable file instead of leaving it out. Defaults
            to `False`.
        cache_dir: str, path or `None`. Where the validation cache and re-encoded files go.
            Defaults to `tltf.data.checks.default_cache_dir()`.
        max_per_class: int or `None`. Use only the first `max_per_class` files (in sorted
            order) of each class folder of each split, e.g. to try a recipe in seconds
            before the real run. Defaults to `None` (all files).
        max_pixels: int. Images larger than this (width * height, read from the header
            before decoding) are left out as too large. Defaults to
            `tltf.data.checks.MAX_PIXELS` (89,478,485, Pillow's limit).
        verbose: 0, 1, 2 or `"auto"`: progress of checking the files not checked before
            (see `tltf.data.checks.check_files`). Defaults to `0`.

    Returns:
        An `ImageDataset`, or a tuple `(train, validation[, test])` when splitting (or
        `(train, test)` for a train/test folder layout without validation).

    Raises:
        FileNotFoundError: if `path` is not a folder.
        ValueError: if there are no class folders, only one class, a class folder without a
            usable image, a subfolder not in `class_names`, only a `train/` folder, a class
            with too few images for the requested splits, unusable files with
            `strict=True`, a `validation_split` for a layout that already has a validation
            folder, or a bad argument.

    Example:

    >>> import tempfile, pathlib, numpy as np
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ["cat", "dog"]:
    ...     (root / name).mkdir()
    ...     for i in range(3):
    ...         Image.fromarray(np.random.randint(0, 255, (40, 50, 3), "uint8")).save(root / name / f"{i}.jpg")
    >>> data = load_image_folder(root, image_size=32, cache_dir=root / ".cache")
    >>> data.class_names, data.class_counts
    (['cat', 'dog'], {'cat': 3, 'dog': 3})
    """
    root = as_path(path)  # a gs://, s3:// or ram:// folder is read through tf.io.gfile
    if not root.is_dir():
        raise FileNotFoundError(
            f"Expected a folder with one subfolder per class, but {root} does not exist or is not "
            f"a directory. Received: path={str(path)!r}"
        )
    size = _image_size(image_size)
    _check_resize(resize)
    if max_per_class is not None and (
        not isinstance(max_per_class, int) or isinstance(max_per_class, bool) or max_per_class < 1
    ):
        raise ValueError(
            f"`max_per_class` must be a positive integer or None. Received: max_per_class={max_per_class!r}"
        )
    fractions = split_fractions(validation_split, test_split)
    splits = find_split_folders(root)
    if splits and validation_split is not None and "validation" in splits:
        raise ValueError(
            f"{root} already holds a validation folder ({splits['validation'].name}/); drop "
            f"`validation_split`. Received: validation_split={validation_split!r}"
        )
    if splits and test_split is not None and "test" in splits:
        raise ValueError(
            f"{root} already holds a test folder ({splits['test'].name}/); drop `test_split`. "
            f"Received: test_split={test_split!r}"
        )
    class_root = splits.get("train", root)
    names = list(class_names) if class_names is not None else class_folders(class_root)
    if not names:
        raise ValueError(
            f"Expected one subfolder per class in {class_root}, but found none. Put the images "
            f"of each class in their own folder, e.g. {class_root}/cats/1.jpg. Received: path={str(path)!r}"
        )
    if len(names) < 2:
        raise ValueError(
            f"A classifier needs at least two classes, but {class_root} holds only {names}. "
            f"Add a folder per class. Received: class_names={names!r}"
        )
    roots = {"train": class_root} if not splits else splits
    results = {}
    for split, split_root in roots.items():
        files, labels, folders = _scan_classes(split_root, names, required=split == "train",
                                               limit=max_per_class)
        extra = sorted(set(class_folders(split_root)) - set(names))
        if extra and class_names is not None:
            shown = extra[:5] + ([f"and {len(extra) - 5} more"] if len(extra) > 5 else [])
            raise ValueError(
                f"{split_root} has class folder(s) {shown} that are not among the classes "
                f"{names[:10]}{'...' if len(names) > 10 else ''} it is loaded with (e.g. the "
                "classes a model was trained on), so their images would be left out silently. "
                "Remove or rename those folders, or give `class_names` that include them. "
                f"Received: class_names={names[:10]!r}"
            )
        if extra and split != "train":
            raise ValueError(
                f"{split_root} has class folders {extra} that {class_root} does not have; "
                f"every split needs the same classes. Received: path={str(path)!r}"
            )
        files, checks, labels, bad = _validated(
            files, labels, strict=strict, cache_dir=cache_dir, what=str(split_root),
            max_pixels=max_pixels, verbose=verbose,
        )
        present = set(labels)
        empty = [str(folders[n]) for i, n in enumerate(names) if n in folders and i not in present]
        if empty:
            raise ValueError(
                f"Class folder(s) {empty} hold no usable image (after leaving out "
                f"{len(bad)} unusable file(s)). Add images or remove the folder. "
                f"Received: path={str(path)!r}"
            )
        results[split] = (files, checks, labels, bad)

    out = []
    files, checks, labels, bad = results["train"]
    if fractions:
        argument = ", ".join(
            f"{k}={v!r}" for k, v in (("validation_split", validation_split),
                                      ("test_split", test_split)) if v is not None
        )
        check_split_sizes(labels, names, fractions, str(class_root), argument)
        parts = stratified_split(np.asarray(labels), fractions, seed)
        for part in parts:
            out.append(
                _files_dataset(
                    [files[i] for i in part],
                    [checks[i] for i in part],
                    [labels[i] for i in part],
                    names,
                    size,
                    resize,
                    bad if part is parts[0] else [],
                )
            )
    else:
        out.append(_files_dataset(files, checks, labels, names, size, resize, bad))
    for split in ("validation", "test"):
        if split in results:
            f, c, lab, b = results[split]
            out.append(_files_dataset(f, c, lab, names, size, resize, b))
    return out[0] if len(out) == 1 else tuple(out)
