"""The one file check pass: every image file validated once, the verdicts cached.

A folder collected by hand holds more than clean JPEGs: CMYK and progressive JPEGs, phone
photos whose pixels are stored sideways with an EXIF orientation tag, palette or 16-bit
PNGs, GIFs, BMPs, WebPs, and also empty, truncated or mis-named files and `.DS_Store`.
`check_files` reads every candidate once with Pillow (JPEGs at 1/8 scale, so it is fast),
records what it found in a cache (an SQLite database, one row per file, keyed by path, size
and modification time; see `tltf.data._check_store`), and says for each file whether
TensorFlow can decode it as it is (the look at one file is `tltf.data._inspect`). The few
files TensorFlow would get wrong (EXIF-rotated JPEGs, palette BMPs, TIFF) are re-encoded
once to PNG beside the cache, so the training pipeline itself decodes everything with
`tf.io` in parallel (`tltf.data.decode`), and no epoch dies on a bad file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tltf._progress import progress, resolve_verbose
from tltf._warn import warn
from tltf.data import _fs
from tltf.data._check_store import _FIELDS as _STORED_FIELDS
from tltf.data._check_store import CheckStore
from tltf.data._inspect import (
    MAX_PIXELS,
    FileCheck,
    _check_one,
    _needs_pillow,
    _reencode,
    _too_large,
)

__all__ = ["MAX_PIXELS", "FileCheck", "check_files", "default_cache_dir"]

_CACHE_VERSION = 2  # 2: verdicts also say whether tf.io decodes GIF/BMP/WebP as they are
_REMOTE_STATS = 32  # requests in flight when stat-ing files of a remote folder
_FLUSH_SECONDS = 1.0  # at most this long between two writes of fresh verdicts to the cache


def default_cache_dir() -> Path:
    """The per-user cache folder tltf uses when a function is given `cache_dir=None`.

    `$XDG_CACHE_HOME/tltf` when that variable is set, else `~/.cache/tltf`. Nothing is
    written there unless a function that takes `cache_dir` is called without one.

    Returns:
        A `Path` (not created by this call).

    Example:

    >>> str(default_cache_dir()).endswith("tltf")
    True
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tltf"


def check_files(
    paths: Iterable[str | os.PathLike],
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    max_pixels: int = MAX_PIXELS,
    verbose: int | str = 0,
) -> list[FileCheck]:
    """Validates image files once, caching the verdicts, and prepares odd ones for `tf.io`.

    Every file is opened with Pillow and fully decoded (JPEGs at 1/8 scale), so empty,
    truncated, corrupt and non-image files are found before training. Verdicts are cached in
    `cache_dir/file-checks.sqlite`, one row per file keyed by absolute path, size and
    modification time, written in small transactions while the pass runs: a second call over
    the same folder reads no image (it stats each file and reads its row), a changed file is
    checked again, an interrupted pass keeps what it had done, and several processes may
    check the same folder at once. A cache that cannot be used (corrupt, read-only, locked
    for more than 30 s) is left aside with one warning, and the files are checked without
    it. Files TensorFlow would decode wrongly
    or not at all (EXIF-rotated JPEGs, palette and 16-bit BMPs, TIFF, any GIF, BMP or WebP
    that `tf.io` rejects when tried here) are re-encoded upright to PNG in
    `cache_dir/converted/`, so every file that passes decodes in the pipeline.

    Hostile entries are refused before anything large is read: a FIFO, device or socket
    (or a link to one) is never opened, a file over 256 MB is refused by its size, and an
    image whose header announces more than `max_pixels` pixels is refused before decoding.

    Args:
        paths: iterable of file paths.
        cache_dir: str, path or `None`. Folder for the cache and the re-encoded files.
            Defaults to `default_cache_dir()`.
        workers: int or `None`. Threads reading files. Defaults to the number of CPUs.
        max_pixels: int. Largest width * height accepted. Defaults to `MAX_PIXELS`
            (89,478,485, Pillow's own limit; a 12000 x 12000 image is refused).
        verbose: 0 (silent), 1 (a progress bar), 2 (a few plain lines) or `"auto"` (the bar
            on a terminal, lines in a file or CI log): progress over the files not cached.
            Defaults to `0`.

    Returns:
        A list of `FileCheck`, one per path, in the order given.

    Raises:
        ValueError: if `workers` or `max_pixels` is not a positive integer.

    Example:

    >>> import tempfile, pathlib, numpy as np
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> Image.fromarray(np.zeros((8, 8, 3), "uint8")).save(d / "a.png")
    >>> _ = (d / "b.jpg").write_bytes(b"")
    >>> [(c.ok, c.reason) for c in check_files([d / "a.png", d / "b.jpg"], cache_dir=d / "c")]
    [(True, ''), (False, 'empty file (0 bytes)')]
    """
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(
            f"Expected `workers` to be a positive int or None. Received: workers={workers!r}"
        )
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(
            f"Expected `max_pixels` to be a positive int. Received: max_pixels={max_pixels!r}"
        )
    resolve_verbose(verbose)  # a bad value raises even when every verdict is cached
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    with _collector_paused():
        paths, results, todo, stats, store = _cached_verdicts(paths, cache_dir, max_pixels)
    try:
        if todo:
            _check_todo(todo, results, stats, store, cache_dir, workers, max_pixels, verbose)
    finally:
        store.close()
    return [results[p] for p in paths]


@contextlib.contextmanager
def _collector_paused():
    """Holds off Python's cycle collector while a pass makes tens of thousands of small,
    acyclic objects: with TensorFlow loaded, every full collection they would trigger walks
    millions of objects, which made a cached pass over 20k files take 0.3 to 0.6 s, not 0.25."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _cached_verdicts(paths, cache_dir, max_pixels):
    """The paths made absolute, the verdicts the store still holds for them (keyed by path),
    the paths left to check, their stats, and the open store.

    One loop over the files with the rows fetched first: a second call over 200k files is
    a `stat` and a dict lookup a file, and little else (2.3 s, 0.8 s of it in `stat`)."""
    # An absolute path is kept as given (abspath's normalising was a sixth of a second call).
    paths = [p if isinstance(p, str) and p.startswith(os.sep)
             else os.fspath(p) if _fs.is_remote(p) else os.path.abspath(os.fspath(p))
             for p in paths]
    stats, results, todo = {}, {}, []
    remote = [p for p in paths if _fs.is_remote(p)]
    if remote:  # one request each on gs:// or s3://: many in flight, not one after another
        with ThreadPoolExecutor(_REMOTE_STATS) as pool:
            stats.update(zip(remote, pool.map(_remote_stat, remote), strict=True))
    store = CheckStore(cache_dir, _CACHE_VERSION)
    try:
        rows = store.get(paths)
        for p in paths:
            if p in stats:  # remote
                stat = stats[p]
            else:
                try:
                    st = os.stat(p)
                    stat = (st.st_size, st.st_mtime_ns)
                except OSError:
                    stat = None
            row = rows.get(p)
            check = _stored_check(p, row[2]) if row and (row[0], row[1]) == stat else None
            if check is not None and check.ok and check.width * check.height > max_pixels:
                results[p] = dataclasses.replace(
                    check, ok=False, reason=_too_large(check.width, check.height, max_pixels)
                )
                continue
            if check is not None and (not check.ok or check.decoded_path == p
                                      or os.path.exists(check.decoded_path)):
                results[p] = check
                continue
            todo.append(p)
            stats[p] = stat
    except BaseException:
        store.close()
        raise
    return paths, results, todo, stats, store


def _stored_check(path: str, fields: list) -> FileCheck | None:
    """The `FileCheck` of a stored row, or None if the row does not have its fields.

    Filled in directly: the frozen dataclass's `__init__` sets its twelve fields one call
    at a time, which was a sixth of a second call over 200k files."""
    if len(fields) != len(_STORED_FIELDS):
        return None
    check = object.__new__(FileCheck)
    check.__dict__["path"] = path
    check.__dict__.update(zip(_STORED_FIELDS, fields))
    return check


def _remote_stat(path: str) -> tuple[int, int] | None:
    try:
        return _fs.stat(path)[1:]
    except OSError:
        return None


def _check_todo(todo, results, stats, store, cache_dir, workers, max_pixels, verbose) -> None:
    """Checks the files without a valid row, storing verdicts in small batches as they come."""
    from PIL import Image

    last_flush = time.monotonic()
    with warnings.catch_warnings(), ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        # Pillow warns about large images itself; the verdict's reason says it better.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        fresh = pool.map(lambda p: _check_one(p, max_pixels), todo)
        for check in progress(fresh, "checking files", verbose, total=len(todo), unit="files"):
            if check.ok and _needs_pillow(check):
                check = _reencode(check, cache_dir / "converted")
            results[check.path] = check
            # A refusal by size depends on `max_pixels`: decided again on every call.
            if stats[check.path] is not None and not check.reason.startswith("image too large"):
                fields = dataclasses.astuple(check)[1:]
                store.put(check.path, *stats[check.path], list(fields))
            if time.monotonic() - last_flush > _FLUSH_SECONDS:  # an interrupted pass keeps these
                store.flush()
                last_flush = time.monotonic()


def _validated(
    files: list[str], labels: list[int], *, strict: bool, cache_dir, what: str,
    max_pixels: int = MAX_PIXELS, verbose: int | str = 0,
):
    """Runs check_files; returns good (files, checks, labels) and the skipped (path, reason)."""
    checks = check_files(files, cache_dir=cache_dir, max_pixels=max_pixels, verbose=verbose)
    bad = [(f, c.reason) for f, c in zip(files, checks, strict=True) if not c.ok]
    if bad and strict:
        listing = "\n".join(f"  {p}: {r}" for p, r in bad)
        raise ValueError(
            f"{len(bad)} file(s) in {what} cannot be used (strict=True):\n{listing}\n"
            "Remove or fix them, or pass strict=False to leave them out. "
            f"Received: strict={strict}"
        )
    if bad:
        shown = "\n".join(f"  {p}: {r}" for p, r in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        warn(f"Left out {len(bad)} unusable file(s) in {what} (see `.skipped`):\n{shown}{more}")
    keep = [i for i, c in enumerate(checks) if c.ok]
    return [files[i] for i in keep], [checks[i] for i in keep], [labels[i] for i in keep], bad
