"""A run's config: the YAML file of `tltf train --config`, and the data it names.

A config's sections map one-to-one onto the arguments of public functions: `data`
(`tltf.load_image_folder`, or `tltf.load_tfds` when it has `name`), `model`
(`tltf.build_classifier`), `train` (`tltf.fine_tune`) and `export` (`tltf.export_tflite`).
`train_run` and the `tltf` command read configs and data through these functions only.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["SECTIONS", "load_config", "load_data"]

# Section -> the public function whose arguments it holds.
SECTIONS = {
    "data": "tltf.load_image_folder (with `path`) or tltf.load_tfds (with `name`)",
    "model": "tltf.build_classifier",
    "train": "tltf.fine_tune",
    "export": "tltf.export_tflite",
}
# Arguments the command fills in itself, so a config may not set them.
_DERIVED = {
    "model": {"num_classes", "class_names"},
    "train": {"model", "train", "val", "directory", "resume", "overwrite"},
    "export": {"model", "path", "representative_data", "validation_data", "overwrite"},
}


def load_config(path: str | os.PathLike) -> dict[str, dict]:
    """Reads a YAML run config whose sections map one-to-one onto public function arguments.

    Sections: `data` (arguments of `tltf.load_image_folder`, or of `tltf.load_tfds` when it
    has `name`), `model` (`tltf.build_classifier`, with `backbone`), `train`
    (`tltf.fine_tune`) and `export` (`tltf.export_tflite`). Unknown sections or keys are
    errors.

    Args:
        path: str or path. The YAML file.

    Returns:
        dict of section name to dict of arguments.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file is not a mapping of known sections to known arguments.

    Example:

    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "run.yaml")
    >>> _ = open(f, "w").write("model:\\n  backbone: mobilenet_v2\\n")
    >>> load_config(f)["model"]
    {'backbone': 'mobilenet_v2'}
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file not found: {path}. Received: config={str(path)!r}")
    size = path.stat().st_size
    if size > _MAX_CONFIG_BYTES:
        raise ValueError(f"Config file {path} is {size} bytes; a run config is a few lines, at "
                         f"most {_MAX_CONFIG_BYTES} bytes. Received: config={str(path)!r}")
    try:
        config = yaml.load(path.read_bytes().decode("utf-8"), Loader=_config_loader()) or {}
    except UnicodeDecodeError:
        raise ValueError(f"Config file {path} is not text (not UTF-8); give a YAML file. "
                         f"Received: config={str(path)!r}") from None
    except (yaml.YAMLError, RecursionError) as e:
        reason = str(e).splitlines()[0] if isinstance(e, yaml.YAMLError) else "nested too deep"
        raise ValueError(f"Config file {path} is not valid YAML: {reason[:200]}. "
                         f"Received: config={str(path)!r}") from None
    if not isinstance(config, dict):
        raise ValueError(f"Config file {path} must be a mapping of sections "
                         f"{sorted(SECTIONS)}. Received: {type(config).__name__}")
    for section, values in config.items():
        if section not in SECTIONS:
            raise ValueError(f"Unknown config section {_short(section)} in {path}; expected one "
                             f"of {sorted(SECTIONS)}. Received: section={_short(section)}")
        if not isinstance(values, dict):
            raise ValueError(f"Config section '{section}' in {path} must be a mapping of "
                             f"argument names to values. Received: {section}={_short(values)}")
        allowed = _allowed_keys(section, values)
        for key in values:
            if key not in allowed:
                raise ValueError(
                    f"Unknown key {_short(key)} in section '{section}' of {path}; it maps onto "
                    f"{SECTIONS[section]}, whose arguments are {sorted(allowed)}. "
                    f"Received: {section}.{str(key)[:60]}={_short(values[key])}"
                )
    return {section: dict(config.get(section) or {}) for section in SECTIONS}


# A run config is a few lines; anything bigger is a mistake or an attack (a YAML bomb).
_MAX_CONFIG_BYTES = 1_000_000


def _config_loader():
    """`yaml.SafeLoader` that also refuses aliases (`*name`).

    A run config never needs them, and a kilobyte of nested aliases ("billion laughs")
    expands into billions of values, which any error message that shows them would print.
    """
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"line {mark.line + 1}: YAML aliases (*name) are not allowed "
                    "in a run config; write the value out", mark)
            return super().compose_node(parent, index)

    return ConfigLoader


def _short(value) -> str:
    """A repr bounded to 80 characters, so an error message stays one short line."""
    import reprlib

    shown = reprlib.Repr()
    shown.maxstring = shown.maxother = 60
    text = shown.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _allowed_keys(section: str, values: dict) -> set[str]:
    import tltf

    if section == "data":
        functions = [tltf.load_tfds] if "name" in values else [tltf.load_image_folder]
    else:
        functions = [{"model": tltf.build_classifier, "train": tltf.fine_tune,
                      "export": tltf.export_tflite}[section]]
    keys = set()
    for f in functions:
        keys |= {p.name for p in inspect.signature(f).parameters.values()
                 if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return keys - _DERIVED.get(section, set())


def load_data(data_args: dict, *, say: Callable[[str], None] | None = None, verbose=0):
    """Loads the data a config's `data` section names: a class folder or a TFDS data set.

    A folder that is already split (`train/`, `validation/`, `test/` holding class folders, the
    rule of `tltf.data.layout.find_split_folders`) gives its own splits; otherwise
    `validation_split` (and `test_split`) split it.

    Args:
        data_args: dict. Arguments of `tltf.load_image_folder` (with `path`) or of
            `tltf.load_tfds` (with `name`; its `split` defaults to an 80/20 split of `train`).
        say: callable or None. Called with one line saying what was loaded. Defaults to None.
        verbose: int or `"auto"`. Progress of the file check pass. Defaults to 0.

    Returns:
        A tuple `(train, val, test)` of `ImageDataset`, where `val` and `test` may be None.

    Raises:
        FileNotFoundError: if the folder does not exist.

    Example:

    >>> import numpy as np, tempfile, os
    >>> from PIL import Image
    >>> root = tempfile.mkdtemp()
    >>> for name in ("cat", "dog"):
    ...     os.makedirs(os.path.join(root, name))
    ...     for i in range(4):
    ...         Image.fromarray(np.full((8, 8, 3), 40 * i, "uint8")).save(
    ...             os.path.join(root, name, f"{i}.png"))
    >>> train, val, test = load_data({"path": root, "image_size": 8})
    >>> len(train), val, test
    (8, None, None)
    """
    import tltf

    data_args = dict(data_args)
    if "name" in data_args:
        data_args.setdefault("split", ["train[:80%]", "train[80%:]"])
        loaded = tltf.load_tfds(**data_args)
    else:
        path = Path(data_args.get("path", ""))
        if not path.is_dir():
            raise FileNotFoundError(f"Data folder not found: {path}. Give a folder with one "
                                    f"subfolder per class. Received: data={str(path)!r}")
        if is_split_folder(path):
            data_args.pop("validation_split", None)  # the folder is already split
        loaded = tltf.load_image_folder(**{"verbose": verbose, **data_args})
    parts = list(loaded) if isinstance(loaded, tuple) else [loaded]
    train, val, test = parts[0], (parts[1] if len(parts) > 1 else None), \
        (parts[2] if len(parts) > 2 else None)
    if say is not None:
        say(f"{len(train)} training images in {train.num_classes} classes {train.class_names}"
            + (f", {len(val)} validation images" if val is not None else ""))
    return train, val, test


def is_split_folder(path) -> bool:
    """Whether the data folder holds train/validation/test splits: the data module's rule."""
    from tltf.data.layout import find_split_folders

    path = Path(path)
    return path.is_dir() and bool(find_split_folders(path))


def data_section(source: str, image_size, extra: dict) -> dict:
    args = dict(extra)
    if source:
        for key in ("path", "name"):
            args.pop(key, None)
        if source.startswith("tfds:"):
            args["name"] = source[len("tfds:"):]
        else:  # a folder; TFDS names need the prefix, so a mistyped folder is not a TFDS name
            args["path"] = source
    if image_size is not None:
        args["image_size"] = image_size
    return args
