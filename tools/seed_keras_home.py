"""Seeds a KERAS_HOME folder with the ImageNet weights kept in ../shared/keras_weights.

Keras looks in `$KERAS_HOME/models/` before it downloads, so after seeding,
`keras.applications.MobileNetV2(weights="imagenet")` loads real weights with no network.
In ../shared some weight files are stand-ins for links: a tiny text file holding the name of
the file it points to. Those are resolved here.

    export KERAS_HOME=$(python tools/seed_keras_home.py)          # a new temp folder
    python tools/seed_keras_home.py --keras-home ~/.keras          # or a folder you name
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

SHARED_WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "keras_weights"
_LINK_MAX_BYTES = 1024


def _resolve(path: Path) -> Path:
    """Follows symlinks and text files that hold the name of their target."""
    path = path.resolve()
    for _ in range(8):
        if path.stat().st_size > _LINK_MAX_BYTES:
            return path
        target = path.read_bytes().decode("utf-8", "replace").strip()
        candidate = (path.parent / target).resolve()
        if not candidate.is_file():
            return path
        path = candidate
    return path


def seed_keras_home(keras_home: Path | None = None, source: Path = SHARED_WEIGHTS) -> Path | None:
    """Copies every weights file of `source` into `<keras_home>/models/`.

    Returns the KERAS_HOME folder, or `None` when `source` does not exist.
    """
    if not source.is_dir():
        return None
    home = Path(keras_home) if keras_home else Path(tempfile.mkdtemp(prefix="tltf-keras-home-"))
    models = home / "models"
    models.mkdir(parents=True, exist_ok=True)
    for weights in sorted(source.glob("*.h5")):
        target = models / weights.name
        if not target.exists():
            shutil.copyfile(_resolve(weights), target)
    return home


def use_shared_weights() -> Path | None:
    """Points KERAS_HOME at a folder seeded from ../shared, unless KERAS_HOME is already set.

    For benchmarks and scripts; call it before keras is imported. Returns the folder in use
    (`None` when neither KERAS_HOME nor ../shared/keras_weights exists).
    """
    import os

    if os.environ.get("KERAS_HOME"):
        return Path(os.environ["KERAS_HOME"])
    home = seed_keras_home()
    if home is not None:
        os.environ["KERAS_HOME"] = str(home)
    return home


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keras-home", type=Path, default=None,
                        help="folder to seed (default: a new temporary folder)")
    parser.add_argument("--source", type=Path, default=SHARED_WEIGHTS)
    args = parser.parse_args(argv)
    home = seed_keras_home(args.keras_home, args.source)
    if home is None:
        print(f"no weights folder at {args.source}; nothing seeded", file=sys.stderr)
        return 1
    print(home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
