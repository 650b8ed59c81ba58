"""One file, looked at once: what it is, whether `tf.io` decodes it, and its PNG re-encoding.

The inspection `tltf.data.checks.check_files` runs on every file it holds no valid verdict
for, and the `FileCheck` verdict it stores. Nothing here touches the verdict store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import stat
from pathlib import Path

import tensorflow as tf

from tltf._io import atomic_path
from tltf.data import _fs

__all__ = ["MAX_PIXELS", "FileCheck"]

# Pillow format name -> the extensions that announce it (to report mis-named files).
_FORMAT_EXTENSIONS = {
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "MPO": (".jpg", ".jpeg", ".jpe", ".jfif"),  # phone photos: JPEG with extra frames
    "PNG": (".png",),
    "GIF": (".gif",),
    "BMP": (".bmp",),
    "WEBP": (".webp",),
    "TIFF": (".tif", ".tiff"),
}
_JPEG_FORMATS = ("JPEG", "MPO")
_ORIENTATION_TAG = 0x0112
# Pillow's own decompression-bomb threshold: about 9459 x 9459 pixels, a 268 MB RGB array.
MAX_PIXELS = 89_478_485
_MAX_FILE_BYTES = 256 * 2**20  # no photo is larger; bounds the memory one file can take
_KINDS = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISDIR, "directory"),
)


@dataclasses.dataclass(frozen=True)
class FileCheck:
    """What the validation pass learnt about one file.

    Attributes:
        path: str. The file checked.
        ok: bool. Whether the file decodes to an image.
        reason: str. Why it is left out (empty when `ok`).
        format: str. Pillow's name of the content's format ("JPEG", "PNG", ...), or "".
        mode: str. Pillow's pixel mode ("RGB", "L", "P", "RGBA", "CMYK", "I;16", ...), or "".
        width: int. Width in pixels as stored (before any EXIF rotation).
        height: int. Height in pixels as stored.
        orientation: int. EXIF orientation tag (1 = upright).
        sha1: str. Hash of the file's bytes, to find exact duplicates.
        extension_mismatch: bool. The extension announces another format than the content.
        decoded_path: str. The file the pipeline reads: `path` itself, or a PNG re-encoding of
            it when TensorFlow cannot decode the original correctly.
        tf_decodes: bool. Whether `tf.io.decode_image` decodes the original bytes (tried
            during the check for GIF, BMP and WebP; e.g. False for a 16-bit RGB555 BMP).
    """

    path: str
    ok: bool
    reason: str = ""
    format: str = ""
    mode: str = ""
    width: int = 0
    height: int = 0
    orientation: int = 1
    sha1: str = ""
    extension_mismatch: bool = False
    decoded_path: str = ""
    tf_decodes: bool = True

    @property
    def upright_size(self) -> tuple[int, int]:
        """(height, width) of the image as it is meant to be seen (EXIF rotation applied)."""
        if self.orientation in (5, 6, 7, 8):
            return self.width, self.height
        return self.height, self.width

    @property
    def is_jpeg(self) -> bool:
        """Whether the pipeline reads a JPEG (and may decode it at a reduced scale)."""
        return self.format in _JPEG_FORMATS and self.decoded_path == self.path


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "special file"


def _check_one(path: str, max_pixels: int = MAX_PIXELS) -> FileCheck:
    from PIL import Image, UnidentifiedImageError

    remote = _fs.is_remote(path)
    try:
        if remote:
            regular, size, _ = _fs.stat(path)
            kind = "directory"
        else:
            st = os.stat(path)  # follows links: a link to /dev/zero is a character device
            regular, size, kind = stat.S_ISREG(st.st_mode), st.st_size, _kind(st.st_mode)
    except OSError as e:
        return FileCheck(path, False, f"cannot be read: {e.strerror or e}")
    if not regular:  # never opened: a FIFO blocks, /dev/zero never ends
        return FileCheck(path, False, f"not a regular file ({kind})")
    if size > _MAX_FILE_BYTES:
        return FileCheck(
            path, False, f"file too large ({size / 2**20:.0f} MB; the limit for one "
            f"image file is {_MAX_FILE_BYTES // 2**20} MB)"
        )
    try:
        if remote:
            data = _fs.read_bytes(path, size + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(size + 1)  # +1 shows growth; read(n) allocates n bytes
    except OSError as e:
        return FileCheck(path, False, f"cannot be read: {e.strerror or e}")
    if not data:
        return FileCheck(path, False, "empty file (0 bytes)")
    if len(data) > size:
        return FileCheck(path, False, "file changed while being read; check it again")
    sha1 = hashlib.sha1(data).hexdigest()
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return FileCheck(path, False, "not an image (content is no known image format)", sha1=sha1)
    except Image.DecompressionBombError:
        return FileCheck(path, False, _too_large(0, 0, max_pixels), sha1=sha1)
    except Exception as e:  # Pillow raises many types on garbage headers
        return FileCheck(path, False, f"corrupt or truncated header: {e}", sha1=sha1)
    fmt, mode = image.format or "", image.mode
    width, height = image.size
    if fmt not in _FORMAT_EXTENSIONS:
        return FileCheck(
            path, False, f"unsupported image format {fmt}", fmt, mode, width, height, sha1=sha1
        )
    if width * height > max_pixels:  # from the header: nothing decoded yet
        return FileCheck(
            path, False, _too_large(width, height, max_pixels), fmt, mode, width, height,
            sha1=sha1,
        )
    orientation = 1
    try:
        if fmt in _JPEG_FORMATS:
            orientation = int(image.getexif().get(_ORIENTATION_TAG, 1) or 1)
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))  # DCT-scaled: fast
        image.load()
    except Exception as e:
        return FileCheck(
            path, False, f"corrupt or truncated: {e}", fmt, mode, width, height, sha1=sha1
        )
    if width < 1 or height < 1:
        return FileCheck(path, False, "image has no pixels", fmt, mode, width, height, sha1=sha1)
    mismatch = not path.lower().endswith(_FORMAT_EXTENSIONS[fmt])
    tf_decodes = fmt in ("PNG", *_JPEG_FORMATS) or _tf_decodes(data)
    return FileCheck(
        path, True, "", fmt, mode, width, height, orientation, sha1, mismatch, path, tf_decodes
    )


def _too_large(width: int, height: int, max_pixels: int) -> str:
    size = f"{width}x{height} = {width * height:,} pixels" if width else "too many pixels"
    return (
        f"image too large ({size}; the limit is max_pixels={max_pixels:,}, "
        "pass a larger `max_pixels` to accept it)"
    )


def _tf_decodes(data: bytes) -> bool:
    """Whether tf.io decodes these (GIF, BMP, WebP) bytes, as the pipeline will try to.

    Pillow reads formats TensorFlow rejects (16-bit RGB555 BMP, some WebP and GIF
    variants); those are re-encoded to PNG instead of failing in the middle of an epoch.
    """
    try:
        tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    except (tf.errors.OpError, ValueError):
        return False
    return True


def _needs_pillow(check: FileCheck) -> bool:
    # Everything else decodes correctly with tf.io.decode_image (CMYK and progressive JPEG,
    # palette/RGBA/16-bit/gray PNG, GIF first frame, 24/32-bit BMP, WebP): measured.
    if not check.tf_decodes:
        return True
    if check.format in _JPEG_FORMATS:
        return check.orientation not in (1, 0)
    if check.format == "BMP":
        return check.mode not in ("RGB", "RGBA")
    return check.format == "TIFF"


def _reencode(check: FileCheck, folder: Path) -> FileCheck:
    from PIL import Image, ImageOps

    target = folder / f"{check.sha1}.png"
    if not target.exists():
        source = io.BytesIO(_fs.read_bytes(check.path, _MAX_FILE_BYTES)) if _fs.is_remote(
            check.path) else check.path
        with Image.open(source) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                image = image.point(lambda v: v / 257).convert("L")
            rgb = image.convert("RGB")
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            rgb.save(tmp, format="PNG")
    return dataclasses.replace(check, decoded_path=str(target))
