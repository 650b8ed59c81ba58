"""Writes a class folder holding every odd and bad file a hand-collected data set contains.

Used by tests/test_data.py, tests/test_decode.py and tests/test_audit.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

H, W = 24, 36  # stored size of every generated image

# file name (under its class folder) -> Pillow mode it is written in, for the good files
GOOD = {
    "cats/baseline.jpg": "RGB",
    "cats/progressive.JPG": "RGB",
    "cats/cmyk.jpeg": "CMYK",
    "cats/gray photo é.jpg": "L",
    "cats/palette.png": "P",
    "cats/rgba.png": "RGBA",
    "cats/gray16.png": "I;16",
    "cats/gray.png": "L",
    "dogs/first frame.gif": "P",
    "dogs/bitmap.bmp": "RGB",
    "dogs/palette.bmp": "P",
    "dogs/photo.webp": "RGB",
    "dogs/png named as.jpg": "RGB",
    "dogs/rotated.jpg": "RGB",
}
BAD = {
    "dogs/empty.jpg": "empty",
    "dogs/truncated.jpg": "truncated",
    "dogs/page.jpg": "not an image",
    "cats/broken.png": "truncated",
}
IGNORED = ["dogs/README.txt", "dogs/.DS_Store", "cats/Thumbs.db", "cats/._baseline.jpg"]


def pattern(seed: int) -> np.ndarray:
    """A smooth colour image (JPEG-friendly), different for each seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W]
    channels = [
        127
        + 120
        * np.sin(x / (3 + rng.uniform(0, 3)) + rng.uniform(0, 6))
        * np.cos(y / (3 + rng.uniform(0, 3)))
        for _ in range(3)
    ]
    return np.stack(channels, -1).clip(0, 255).astype(np.uint8)


def rotated_source() -> np.ndarray:
    """Stored pixels of `dogs/rotated.jpg`: white left half, black right half.

    Its EXIF orientation is 6 (display rotated 90 degrees clockwise), so upright it is a
    W x H (tall) image with a white TOP half.
    """
    a = np.zeros((H, W, 3), np.uint8)
    a[:, : W // 2] = 255
    return a


def write_case(path: Path, mode: str, seed: int) -> None:
    rgb = Image.fromarray(pattern(seed))
    name = path.name
    if name == "rotated.jpg":
        image = Image.fromarray(rotated_source())
        exif = image.getexif()
        exif[0x0112] = 6
        image.save(path, quality=95, exif=exif)
    elif name == "png named as.jpg":
        rgb.save(path, format="PNG")
    elif mode == "I;16":
        Image.fromarray(pattern(seed)[..., 0].astype(np.uint16) * 257).save(path)
    elif name.endswith(".gif"):
        second = Image.fromarray(255 - pattern(seed))
        rgb.save(path, save_all=True, append_images=[second])
    elif "progressive" in name:
        rgb.save(path, progressive=True, quality=95)
    elif name.lower().endswith((".jpg", ".jpeg")):
        rgb.convert(mode).save(path, quality=95)
    else:
        rgb.convert(mode).save(path)


def make_odd_folder(root: Path) -> Path:
    """Writes GOOD, BAD and IGNORED files under `root` (classes cats, dogs); returns root."""
    for i, (rel, mode) in enumerate(GOOD.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_case(path, mode, i)
    jpeg = (root / "cats/baseline.jpg").read_bytes()
    png = (root / "cats/palette.png").read_bytes()
    (root / "dogs/empty.jpg").write_bytes(b"")
    (root / "dogs/truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "dogs/page.jpg").write_text("<html><body>404 Not Found</body></html>")
    (root / "cats/broken.png").write_bytes(png[: len(png) // 2])
    for rel in IGNORED:
        (root / rel).write_bytes(b"\x00\x01 not an image")
    return root


def photo_folder(root: Path, classes=("blue", "red"), n: int = 6) -> Path:
    """A tiny learnable folder of PNG photos, one sub-folder per class (each a shade apart)."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = np.clip(40 + 150 * k + rng.normal(0, 20, (36, 36, 3)), 0, 255)
            Image.fromarray(pixels.astype("uint8")).save(root / name / f"{i}.png")
    return root
