"""What a data folder holds: which sub-folders are classes, which are splits, which files images.

One rule for every entry point (`load_image_folder`, `audit`, `evaluate`, the command line),
at the bottom of the package: it imports nothing from tltf but `tltf.data._fs`, which lets a
`gs://`, `s3://` or `ram://` folder be listed like a local one.
"""

from __future__ import annotations

import os
from pathlib import Path

from tltf.data._fs import as_path, is_remote

__all__ = ["IMAGE_EXTENSIONS", "class_folders", "find_split_folders", "list_image_files"]

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".gif",
    ".bmp",
    ".webp",
    ".tif",
    ".tiff",
)

_SPLIT_NAMES = {
    "train": ("train", "training"),
    "validation": ("validation", "val", "valid"),
    "test": ("test", "testing"),
}


def class_folders(root: str | os.PathLike) -> list[str]:
    """The class folders directly under `root`: sub-folders, sorted, hidden ones left out.

    Example:

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("dog", "cat", ".cache"):
    ...     (root / name).mkdir()
    >>> class_folders(root)
    ['cat', 'dog']
    """
    root = as_path(root)
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def find_split_folders(root: str | os.PathLike) -> dict[str, Path]:
    """The split folders of a layout (`train/`, `validation/`, `test/`), or `{}` for none.

    The one rule every tltf entry point uses: a split folder holds class folders, so a class
    that happens to be called `test` or `train` (holding images) stays a class. A layout is
    split when it has `train/` and at least one other split; a folder that holds nothing but
    split folders and no `train/` (or `train/` alone) is ambiguous and raises.

    Args:
        root: str or path. The data folder.

    Returns:
        dict of split name (`"train"`, `"validation"`, `"test"`) to its folder.

    Raises:
        ValueError: only split folders, but not a usable split layout.

    Example:

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for split in ("train", "validation"):
    ...     (root / split / "cat").mkdir(parents=True)
    >>> sorted(find_split_folders(root))
    ['train', 'validation']
    >>> (root / "plain" / "test").mkdir(parents=True)
    >>> _ = (root / "plain" / "test" / "1.jpg").write_bytes(b"")
    >>> (root / "plain" / "cat").mkdir()
    >>> find_split_folders(root / "plain")  # a class named test holds images, not classes
    {}
    """
    root = as_path(root)
    found = {}
    for split, names in _SPLIT_NAMES.items():
        for name in names:
            if (root / name).is_dir() and class_folders(root / name):
                found[split] = root / name
                break
    if "train" in found and len(found) > 1:
        return found
    if found and len(found) == len(class_folders(root)):
        # Only split folders (train/ alone, or validation/ without train/): not classes.
        names = ", ".join(f"{p.name}/" for p in found.values())
        raise ValueError(
            f"{root} holds only the split folder(s) {names}, so its classes are ambiguous. "
            f"Point `path` at {next(iter(found.values()))} (with `validation_split` to hold "
            f"images out), or add a {'validation' if 'train' in found else 'train'}/ folder "
            f"with the same class subfolders. Received: path={str(root)!r}"
        )
    return {}


def list_image_files(folder: str | os.PathLike) -> list[str]:
    """Image files under `folder` (recursively), sorted, by extension in any letter case.

    Files without an image extension (`README.txt`, `.DS_Store`, `Thumbs.db`) and macOS
    resource forks (`._name.jpg`) are ignored. An entry with an image extension that is not
    a regular file (a FIFO, a device, a socket, a link to one of them) is listed all the
    same, never opened here, so that `check_files` reports it by name instead of it
    vanishing. Names that are not valid UTF-8 come back as `os.fsdecode` gives them.

    Args:
        folder: str or path. The folder to walk.

    Returns:
        Sorted list of file paths (str).

    Raises:
        FileNotFoundError: if `folder` is not a directory.

    Example:

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.JPG").write_bytes(b""); _ = (d / "notes.txt").write_text("x")
    >>> [pathlib.Path(p).name for p in list_image_files(d)]
    ['a.JPG']
    """
    folder = as_path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Expected a folder of images, but {folder} is not a directory. "
            f"Received: folder={str(folder)!r}"
        )
    found = []
    remote = is_remote(folder)
    walk = folder.walk(lambda n: n.lower().endswith(IMAGE_EXTENSIONS)) if remote else os.walk(folder)
    for root, dirs, names in walk:
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if name.startswith("._") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            found.append(f"{root}/{name}" if remote else os.path.join(root, name))
    return sorted(found)
