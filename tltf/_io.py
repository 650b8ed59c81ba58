"""The one way tltf writes a file: atomically, so a reader sees the old file or the new one.

Every writer of tltf (checkpoints, run records, exported models, the file-check cache, the
search's warm-start heads) goes through `atomic_path`: the content goes to a temp file in the
target's folder (created with the usual umask permissions, unlike `mkstemp`'s private 0600),
is flushed to disk, optionally checked, and only then renamed over the target. A failure at
any point, or a `kill -9`, leaves the old file untouched; a failure also removes the temp file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["atomic_path", "atomic_write", "load_arrays", "save_arrays"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *,
                check: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yields a temp path to write; on a clean exit it replaces `path` with that file.

    For writers that want a file name (Keras' `save`, Pillow, `np.savez`). The temp file keeps
    the name's ending (`.keras`, `.weights.h5`) since some writers insist on it.

    Args:
        path: str or path. The file to (re)place; its folder must exist.
        check: callable or None. Called with the temp path once it is written; an exception
            it raises aborts the write and `path` keeps its old content. Defaults to None.

    Example:

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(path) as tmp:
    ...     _ = tmp.write_text("new")
    >>> path.read_text()
    'new'
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{secrets.token_hex(4)}-{path.name}")  # unique: concurrent writers
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the writer closed it: flush it to disk before the rename
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def atomic_write(path: str | os.PathLike, data: bytes | str, *,
                 check: Callable[[Path], None] | None = None) -> None:
    """Writes `data` to `path` atomically (temp file in the same folder, fsync, rename).

    Args:
        path: str or path. The file to write; its folder must exist.
        data: bytes, or str (written as UTF-8).
        check: callable or None. See `atomic_path`. Defaults to None.

    Example:

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "state.json"
    >>> atomic_write(path, '{"phase": 2}')
    >>> path.read_text()
    '{"phase": 2}'
    """
    content = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path, check=check) as tmp, open(tmp, "xb") as f:
        f.write(content)


def save_arrays(path: str | os.PathLike, arrays: Sequence[np.ndarray]) -> None:
    """Saves a list of arrays (`model.get_weights()`) to `path` (.npz) atomically.

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> path = Path(tempfile.mkdtemp()) / "best.npz"
    >>> save_arrays(path, [np.zeros(2), np.ones((2, 2))])
    >>> [a.shape for a in load_arrays(path)]
    [(2,), (2, 2)]
    """
    import numpy as np  # here, not at the top: the CLI imports this module and starts fast

    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        np.savez(f, *arrays)  # keys arr_0, arr_1, ...


def load_arrays(path: str | os.PathLike) -> list[np.ndarray]:
    """Loads the arrays written by `save_arrays`, in order (never unpickling anything).

    Also reads the `w0, w1, ...` keys of the warm-start head files of tltf 0.1's searches.

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> path = Path(tempfile.mkdtemp()) / "phase1.npz"
    >>> save_arrays(path, [np.arange(3)])
    >>> load_arrays(path)[0].tolist()
    [0, 1, 2]
    """
    import numpy as np

    with np.load(path, allow_pickle=False) as data:  # a run folder may be a stranger's
        prefix = "w" if "w0" in data.files else "arr_"
        return [data[f"{prefix}{i}"] for i in range(len(data.files))]
