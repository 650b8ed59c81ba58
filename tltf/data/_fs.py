"""Remote folders (`gs://`, `s3://`, `hdfs://`, TensorFlow's `ram://`) through `tf.io.gfile`.

A path with a scheme is remote; everything else stays a local `pathlib.Path` and goes
through `os`, exactly as before. `as_path` gives the listing code (`tltf.data.layout`,
`load_image_folder`) one object for both, `RemotePath`, with the few `Path` methods it uses;
`stat` and `read_bytes` serve the check pass. Decoding needs nothing: `tf.io.read_file`
reads every file system TensorFlow knows.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path


def is_remote(path) -> bool:
    """Whether `path` names a file on a file system with a scheme (`gs://...`)."""
    return isinstance(path, RemotePath) or (isinstance(path, str) and "://" in path)


def as_path(path: str | os.PathLike) -> Path | RemotePath:
    """A `RemotePath` for a URL, else `Path(path)`."""
    if isinstance(path, RemotePath):
        return path
    return RemotePath(path) if is_remote(path) else Path(path)


class RemotePath:
    """The part of `pathlib.Path` the folder listing uses, for a URL, via `tf.io.gfile`."""

    def __init__(self, url: str):
        self.url = url.rstrip("/") if not url.endswith("://") else url

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(f"{self.url}/{name}")

    def __fspath__(self) -> str:
        return self.url

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    @property
    def name(self) -> str:
        return posixpath.basename(self.url.split("://", 1)[1])

    def is_dir(self) -> bool:
        import tensorflow as tf

        return tf.io.gfile.isdir(self.url)

    def iterdir(self):
        import tensorflow as tf

        return [self / name.rstrip("/") for name in tf.io.gfile.listdir(self.url)]

    def walk(self, is_file=None):
        """Like `os.walk`: (folder, sub-folders, files), top-down, `dirs` prunable in place.

        `is_file(name)` True takes a name for a file without asking the file system (one
        request per name on gs://); a name listed with a trailing `/` is a folder.
        """
        import tensorflow as tf

        pending = [self.url]
        while pending:
            top = pending.pop(0)
            dirs, files = [], []
            for name in tf.io.gfile.listdir(top):
                if name.endswith("/") or not (is_file and is_file(name)) and tf.io.gfile.isdir(
                        f"{top}/{name}"):
                    dirs.append(name.rstrip("/"))
                else:
                    files.append(name)
            yield top, dirs, files
            pending[:0] = [f"{top}/{d}" for d in dirs]


def stat(path: str) -> tuple[bool, int, int]:
    """(is a regular file, size, mtime_ns) of a remote file; raises OSError when absent."""
    import tensorflow as tf

    try:
        st = tf.io.gfile.stat(path)
    except tf.errors.OpError as e:
        raise OSError(f"{type(e).__name__} {e.message}".strip()) from None
    return not st.is_directory, int(st.length), int(st.mtime_nsec)


def read_bytes(path: str, limit: int) -> bytes:
    """At most `limit` bytes of a remote file; raises OSError when it cannot be read."""
    import tensorflow as tf

    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read(limit)
    except tf.errors.OpError as e:
        raise OSError(f"{type(e).__name__} {e.message}".strip()) from None
