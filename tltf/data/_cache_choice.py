"""`prepare(cache="auto")`: decoded images in memory when they fit, else on disk, else streamed.

The decoded set of a data set is N x H x W x 3 bytes (+78 MB per 1,000 images at 160 px):
a folder of 280k images fills 24 GiB of RAM. `choose_cache` keeps it in memory only while it
fits `MEMORY_FRACTION` of the memory available now, else writes a `tf.data` cache file into a
folder whose disk has room for it (`DISK_FRACTION` of the free space), else decodes every epoch.
A choice other than memory is said once, with the figures, as a warning.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from tltf._warn import warn

MEMORY_FRACTION = 0.25  # of the memory available when the data is prepared
DISK_FRACTION = 0.5  # of the free space of the cache folder's disk


def _gb(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MB"


def decide(nbytes: int, cache_dir: str | os.PathLike | None,
           what: str) -> tuple[str, Path | None, str]:
    """Where `nbytes` of `what` can live: `("memory", None, "")`, `("disk", folder, why not
    memory)` or `("none", None, why neither)`. `cache_dir` None means the temp folder."""
    import psutil

    available = psutil.virtual_memory().available
    if nbytes <= MEMORY_FRACTION * available:
        return "memory", None, ""
    reason = (f"the {what} take {_gb(nbytes)}, more than {MEMORY_FRACTION:.0%} of the "
              f"{_gb(available)} of memory available")
    base = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir())
    try:
        base.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(base).free
    except OSError as e:
        return "none", None, f"{reason}, and {base} cannot hold a cache ({e.strerror or e})"
    if nbytes > DISK_FRACTION * free:
        return "none", None, (f"{reason}, and more than {DISK_FRACTION:.0%} of the {_gb(free)} "
                              f"free on the disk of {base}")
    return "disk", base, reason


def choose_cache(nbytes: int, cache_dir: str | os.PathLike | None, what: str) -> str | None:
    """`"memory"`, a new cache file prefix, or None (streaming), for `nbytes` of decoded images.

    Args:
        nbytes: bytes of the decoded set.
        cache_dir: the folder for a cache file (a run folder), or None for a temp folder.
        what: the data, as named in the message (e.g. "1,234 images at 160x160").
    """
    kind, base, reason = decide(nbytes, cache_dir, f"decoded {what}")
    if kind == "memory":
        return "memory"
    if kind == "disk":
        prefix = new_cache_prefix(base)
        # The folder, not the file, in the message: the same data prepared again (training
        # and its cached features) gives the same text, which Python shows once.
        warn(f"cache='auto' caches the decoded images on disk in {base} ({reason}). "
             "Later epochs read a cache file there (tltf-data-cache-*/) instead of decoding "
             "again; it is removed when the process ends. Pass cache='memory' to keep them in "
             "memory anyway, or None to decode every epoch.")
        return os.fspath(prefix)
    warn(f"cache='auto' decodes the images again every epoch (streaming, no cache): {reason}. "
         "Free memory or disk space, or pass cache= a file prefix on a larger disk.")
    return None


def new_cache_prefix(base: Path) -> Path:
    """A `tf.data` cache file prefix in a new folder under `base`, removed at exit."""
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="tltf-data-cache-", dir=base))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder / "images"
