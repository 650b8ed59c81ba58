"""The `tltf` command: train, evaluate, predict, export, tune, audit and list backbones.

Every command is a thin call of the public functions (`tltf.load_image_folder`,
`tltf.build_classifier`, `tltf.fine_tune`, `tltf.evaluation.metrics.evaluate`, `tltf.export_tflite`,
`tltf.tune.tuner.search`, ...). A user error (missing folder, unknown backbone, bad config key)
prints one line and exits with status 1; `--verbose` prints the traceback instead.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import traceback
import warnings
from pathlib import Path

from tltf._quiet import log_environment, quiet

__all__ = ["load_config", "main"]

_DESCRIPTION = "Transfer learning for image classification: from a folder of photos to a .tflite."
_EPILOG = """examples:
  tltf backbones "mobilenet*"
  tltf audit photos/
  tltf train --data photos/ --backbone mobilenet_v2 --image-size 224 --out runs/1 --tflite int8
  tltf train --config run.yaml --out runs/2
  tltf train --out runs/1 --resume
  tltf evaluate runs/1/model.keras photos_test/ --out runs/1/test-report
  tltf predict runs/1/model.keras cat.jpg dog.jpg --top-k 3
  tltf export runs/1/model.keras model.tflite --quantization int8 --representative-data photos/
  tltf tune --data photos/ --backbone mobilenet_v2 --max-trials 8 --out runs/search

Run `tltf <command> --help` for the options of a command."""

_CONFIG_SECTIONS = {
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


class UserError(Exception):
    """A mistake in the command line or the config, reported in one line."""


# ----------------------------------------------------------------------------- config


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
                         f"{sorted(_CONFIG_SECTIONS)}. Received: {type(config).__name__}")
    for section, values in config.items():
        if section not in _CONFIG_SECTIONS:
            raise ValueError(f"Unknown config section {_short(section)} in {path}; expected one "
                             f"of {sorted(_CONFIG_SECTIONS)}. Received: section={_short(section)}")
        if not isinstance(values, dict):
            raise ValueError(f"Config section '{section}' in {path} must be a mapping of "
                             f"argument names to values. Received: {section}={_short(values)}")
        allowed = _allowed_keys(section, values)
        for key in values:
            if key not in allowed:
                raise ValueError(
                    f"Unknown key {_short(key)} in section '{section}' of {path}; it maps onto "
                    f"{_CONFIG_SECTIONS[section]}, whose arguments are {sorted(allowed)}. "
                    f"Received: {section}.{str(key)[:60]}={_short(values[key])}"
                )
    return {section: dict(config.get(section) or {}) for section in _CONFIG_SECTIONS}


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


# ----------------------------------------------------------------------------- helpers


def _load_data(data_args: dict):
    """Returns (train, val or None, test or None) from a folder or a TFDS name."""
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
        if _is_split_folder(path):
            data_args.pop("validation_split", None)  # the folder is already split
        loaded = tltf.load_image_folder(**data_args)
    parts = list(loaded) if isinstance(loaded, tuple) else [loaded]
    return parts[0], (parts[1] if len(parts) > 1 else None), (parts[2] if len(parts) > 2 else None)


def _data_args(source: str, image_size, extra: dict) -> dict:
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


def _load_model(path: str, trust_model_code: bool = False):
    """Loads in Keras' safe mode: a stranger's file runs no code (lambdas, SavedModel graphs)."""
    from tltf.backbones.hub import _RefusedHandle
    from tltf.models.classifier import load_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: {path}. Give a .keras file written by "
                                f"`tltf train` or `model.save`. Received: model={str(path)!r}")
    try:
        return load_model(path, safe_mode=not trust_model_code)
    except ValueError as error:
        refused = _find_cause(error, _RefusedHandle)
        if refused is not None:
            raise UserError(
                f"Refusing to load {path}: it names the SavedModel '{refused.shown}', and "
                "loading it would run that SavedModel's graph (arbitrary TensorFlow ops). If you "
                f"trust the file and the SavedModel, add --trust-model-code. "
                f"Received: handle={refused.shown!r}"
            ) from None
        if "safe_mode=False" in str(error):  # Keras' own refusal, e.g. of a Python lambda
            raise UserError(
                f"Refusing to load {path}: it holds code that Keras' safe mode does not run (such "
                "as a Python lambda). If you trust the file, add --trust-model-code. "
                f"Received: model={str(path)!r}"
            ) from None
        raise


def _trust_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-model-code", action="store_true",
        help="load the model outside Keras' safe mode, so it may run code: Python lambdas and "
             "the graphs of the SavedModels (local or TF Hub) its config names. Only for files "
             "you trust")


def _find_cause(error: BaseException | None, kind: type) -> BaseException | None:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _image_size_of(model) -> tuple[int, int]:
    return tuple(int(d) for d in model.inputs[0].shape[1:3])


def _say(message: str) -> None:
    print(message, flush=True)


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, default=str))


# ----------------------------------------------------------------------------- commands


def _cmd_backbones(args) -> int:
    from tltf import get_backbone, list_backbones  # with the built-in sources (hub:)

    names = list_backbones(args.pattern)
    if not names:
        raise UserError(f"No backbone matches '{args.pattern}'; run `tltf backbones` to list "
                        f"them all. Received: pattern={args.pattern!r}")
    _say(f"{'name':<36} {'size':>5} {'features':>8}  {'pretrained sizes':<26} preprocessing")
    for name in names:
        s = get_backbone(name)
        sizes = ",".join(map(str, s.pretrained_sizes)) if s.pretrained_sizes else f">={s.min_size}"
        _say(f"{name:<36} {s.default_size:>5} {s.feature_dim:>8}  {sizes:<26} {s.preprocessing}")
    return 0


def _cmd_audit(args) -> int:
    from tltf.data import audit

    result = audit(args.data)
    _say(str(result))
    if args.json:
        _write_json(Path(args.json), result.to_dict() if hasattr(result, "to_dict") else result)
    return 0


def _cmd_train(args) -> int:
    from tltf.runs.train import train_run

    out = Path(args.out)
    saved_config = out / "config.yaml"
    if args.resume and not args.config and not args.data:
        if not saved_config.is_file():
            raise UserError(f"Cannot resume: {saved_config} does not exist; start the run "
                            f"without --resume. Received: out={str(out)!r}")
        args.config = str(saved_config)
    config = load_config(args.config) if args.config else {s: {} for s in _CONFIG_SECTIONS}
    data_cfg = _data_args(args.data, args.image_size, config["data"])
    if "path" in data_cfg and "validation_split" not in data_cfg:
        if not _is_split_folder(data_cfg["path"]):
            data_cfg["validation_split"] = args.validation_split
    data_cfg.setdefault("seed", args.seed)
    model_cfg = dict(config["model"])
    for key, value in (("backbone", args.backbone), ("weights", args.weights)):
        if value is not None:
            model_cfg[key] = None if value == "none" else value
    model_cfg.setdefault("backbone", "mobilenet_v2")
    train_cfg = dict(config["train"])
    for key in ("head_epochs", "finetune_epochs", "batch_size", "unfreeze"):
        if getattr(args, key) is not None:
            train_cfg[key] = getattr(args, key)
    train_cfg.setdefault("seed", args.seed)
    if args.tensorboard:
        train_cfg["tensorboard"] = True
    export_cfg = dict(config["export"])
    if args.tflite:
        export_cfg["quantization"] = args.tflite
    train_run(out, {"data": data_cfg, "model": model_cfg, "train": train_cfg,
                    "export": export_cfg},
              resume=args.resume, overwrite=args.overwrite, calibrate=args.calibrate,
              verbose="auto", say=_say)
    return 0


def _is_split_folder(path) -> bool:
    """Whether the data folder holds train/validation/test splits: the data module's rule."""
    from tltf.data.layout import find_split_folders

    path = Path(path)
    return path.is_dir() and bool(find_split_folders(path))


def _cmd_evaluate(args) -> int:
    import tltf
    from tltf.evaluation.metrics import evaluate

    model = _load_model(args.model, args.trust_model_code)
    names = _head_names(model)
    path = Path(args.data)
    if not path.is_dir():
        raise FileNotFoundError(f"Data folder not found: {path}. Received: data={str(path)!r}")
    loaded = tltf.load_image_folder(path, image_size=_image_size_of(model), class_names=names,
                                    verbose="auto")
    data = loaded[-1] if isinstance(loaded, tuple) else loaded
    report = evaluate(model, data, batch_size=args.batch_size, verbose="auto")
    _say(report.summary())
    if args.out:
        _say(f"report: {report.save(args.out)}")
    return 0


def _head_names(model):
    """The head's class names, so that folders load with labels in the model's order."""
    from tltf.models.classifier import head_or_none

    head = head_or_none(model)
    return None if head is None else head.class_names


def _cmd_predict(args) -> int:
    import warnings

    from tltf.evaluation.metrics import predict

    model = _load_model(args.model, args.trust_model_code)
    with warnings.catch_warnings():  # the skipped files are listed below, one line each
        warnings.simplefilter("ignore")
        results = predict(model, args.images, top_k=args.top_k, batch_size=args.batch_size)
    if args.json:
        _say(json.dumps([{"file": r.file, "labels": r.labels, "scores": r.scores}
                         for r in results], indent=2))
    else:
        for r in results:
            guesses = "  ".join(f"{label} {score:.3f}" for label, score in zip(r.labels, r.scores, strict=True))
            _say(f"{r.file}\t{guesses}")
    for path, reason in results.skipped:
        print(f"tltf: warning: skipped {path}: {reason}", file=sys.stderr)
    return 0 if results else 1


def _cmd_export(args) -> int:
    import tltf
    from tltf.export.tflite import export_tflite

    model = _load_model(args.model, args.trust_model_code)
    size = _image_size_of(model)
    names = _head_names(model)

    def folder(path):
        if path is None:
            return None
        loaded = tltf.load_image_folder(path, image_size=size, class_names=names)
        return loaded[0] if isinstance(loaded, tuple) else loaded

    result = export_tflite(model, args.output, quantization=args.quantization,
                           representative_data=folder(args.representative_data),
                           validation_data=folder(args.verify_data),
                           verify=args.verify_data is not None,
                           max_accuracy_drop=args.max_accuracy_drop,
                           overwrite=args.overwrite)
    _say(f"exported {result.path} ({result.size_bytes / 1e6:.2f} MB, {result.quantization}, "
         f"input {result.input_dtype})")
    if result.report is not None:
        _say(str(result.report))
    return 0


def _cmd_tune(args) -> int:
    from tltf.tune.tuner import search

    data_cfg = _data_args(args.data, args.image_size, {})
    data_cfg["validation_split"] = args.validation_split
    data_cfg["seed"] = args.seed
    train, val, _ = _load_data(data_cfg)
    if val is None:
        raise UserError("Tuning needs validation data: use a folder with a validation split "
                        "or --validation-split. Received: validation=None")
    out = Path(args.out)
    result = search(train, val, backbone=args.backbone, tuner=args.tuner,
                    max_trials=args.max_trials, directory=out, head_epochs=args.head_epochs,
                    finetune_epochs=args.finetune_epochs, batch_size=args.batch_size,
                    image_size=args.image_size, seed=args.seed,
                    weights=None if args.weights == "none" else args.weights)
    _write_json(out / "best_hyperparameters.json", result.best_hyperparameters)
    _write_json(out / "trials.json", result.trials)
    if result.best_model is not None:
        result.best_model.save(out / "best_model.keras")
        _say(f"saved {out / 'best_model.keras'}")
    _say(f"best {result.objective}: {result.best_score}  {result.best_hyperparameters}")
    return 0


# ----------------------------------------------------------------------------- parser


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true",
                        help="show full tracebacks and TensorFlow logs")
    parser = argparse.ArgumentParser(
        prog="tltf", description=_DESCRIPTION, epilog=_EPILOG, parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tltf {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="command")

    def command(name, help, example):
        return sub.add_parser(name, help=help, description=help, parents=[common],
                              epilog=f"example:\n  {example}",
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("train", "fine-tune a backbone on a folder of images (or a TFDS data set)",
                "tltf train --data photos/ --backbone efficientnet_b0 --out runs/1 --tflite int8\n"
                "  tltf train --config run.yaml --out runs/2\n"
                "  tltf train --out runs/1 --resume    # continue an interrupted run")
    p.add_argument("--data", help="folder with one subfolder per class, or tfds:NAME")
    p.add_argument("--config", help="YAML file with sections data/model/train/export whose keys "
                                    "are the arguments of the public functions")
    p.add_argument("--out", required=True, help="run folder to write (model.keras, history.json, "
                                                "report/, config.yaml, checkpoints)")
    p.add_argument("--backbone", help="registered backbone name (see `tltf backbones`) or "
                                      "hub:HANDLE; default mobilenet_v2")
    p.add_argument("--image-size", type=int, help="square input size in pixels")
    p.add_argument("--weights", help="'imagenet' (default), 'none' or a weights file")
    p.add_argument("--head-epochs", type=int, help="epochs of phase 1 (head only)")
    p.add_argument("--finetune-epochs", type=int, help="epochs of phase 2 (top blocks unfrozen)")
    p.add_argument("--unfreeze", help="what phase 2 unfreezes, e.g. top_blocks:2, fraction:0.3")
    p.add_argument("--batch-size", type=int, help="images per step")
    p.add_argument("--validation-split", type=float, default=0.2,
                   help="fraction held out for validation when the folder is not split "
                        "(default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and training")
    p.add_argument("--tflite", nargs="?", const="float32", metavar="QUANTIZATION",
                   help="also export model.tflite (float32, float16, dynamic, int8 or int8_io)")
    p.add_argument("--calibrate", action="store_true",
                   help="fit a softmax temperature on the validation data; the saved model, "
                        "the report and the .tflite use it")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (a finished run is left as it is)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (its old files are removed first)")
    p.add_argument("--tensorboard", action="store_true",
                   help="write TensorBoard logs to OUT/tensorboard (pip install "
                        "\"tltf[tensorboard]\"); view with: tensorboard --logdir OUT/tensorboard")
    p.set_defaults(func=_cmd_train)

    p = command("evaluate", "measure a saved model on a labelled folder and write a report",
                "tltf evaluate runs/1/model.keras photos_test/ --out runs/1/test-report")
    p.add_argument("model", help="a .keras model file")
    p.add_argument("data", help="folder with one subfolder per class (a split folder uses its "
                                "last split: test, else validation)")
    p.add_argument("--out", help="folder for report.html, report.json and the figures")
    p.add_argument("--batch-size", type=int, default=32)
    _trust_flag(p)
    p.set_defaults(func=_cmd_evaluate)

    p = command("predict", "label image files with a saved model",
                "tltf predict runs/1/model.keras cat.jpg dog.jpg more_photos/ --top-k 3")
    p.add_argument("model", help="a .keras model file")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--top-k", type=int, default=1, help="classes to show per image")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print JSON instead of lines")
    _trust_flag(p)
    p.set_defaults(func=_cmd_predict)

    p = command("export", "convert a saved model to .tflite (optionally quantized and verified)",
                "tltf export runs/1/model.keras model.tflite --quantization int8 "
                "--representative-data photos/ --verify-data photos_val/")
    p.add_argument("model", help="a .keras model file")
    p.add_argument("output", help="the .tflite file to write")
    p.add_argument("--quantization", default="float32",
                   help="float32 (default), float16, dynamic, int8 or int8_io")
    p.add_argument("--representative-data", help="image folder for int8 calibration")
    p.add_argument("--verify-data", help="labelled folder: compare the .tflite with Keras on it")
    p.add_argument("--max-accuracy-drop", type=float, default=0.01,
                   help="fidelity gate for --verify-data (default 0.01)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUTPUT and its labels file if they exist (refused otherwise)")
    _trust_flag(p)
    p.set_defaults(func=_cmd_export)

    p = command("tune", "search fine-tuning settings with KerasTuner",
                "tltf tune --data photos/ --backbone mobilenet_v2 --max-trials 8 --out runs/search")
    p.add_argument("--data", required=True, help="folder with one subfolder per class, or tfds:NAME")
    p.add_argument("--out", required=True, help="search folder (rerun to resume)")
    p.add_argument("--backbone", default="mobilenet_v2")
    p.add_argument("--tuner", default="bayesian", help="bayesian (default), random or hyperband")
    p.add_argument("--max-trials", type=int, default=10)
    p.add_argument("--head-epochs", type=int, default=3)
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int)
    p.add_argument("--weights", default="imagenet", help="'imagenet' (default) or 'none'")
    p.add_argument("--validation-split", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_tune)

    p = command("audit", "check an image folder: bad files, duplicates, class balance",
                "tltf audit photos/")
    p.add_argument("data", help="folder with one subfolder per class")
    p.add_argument("--json", help="also write the findings to this JSON file")
    p.set_defaults(func=_cmd_audit)

    p = command("backbones", "list the registered backbones", 'tltf backbones "efficientnet*"')
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard")
    p.set_defaults(func=_cmd_backbones)
    return parser


def _version() -> str:
    # The package metadata takes its version from this string (pyproject.toml), and reading
    # it imports nothing heavy: `tltf/__init__.py` loads TensorFlow only on first use.
    from tltf import __version__

    return __version__


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, KeyError) and len(error.args) == 1:
        text = str(error.args[0])
    return text or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Runs the `tltf` command line and returns its exit status.

    Args:
        argv: list of str or `None`. Arguments without the program name. Defaults to
            `sys.argv[1:]`.

    Returns:
        0 on success, 1 on a user error (one line on stderr), 2 on a usage error.

    Example:

    >>> main(["backbones", "mobilenet_v2"])  # doctest: +ELLIPSIS
    name ...
    0
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings(), log_environment(args.verbose):
            warnings.showwarning = _show_warning
            # TensorFlow's C++ start-up lines go straight to descriptor 2 when it is first
            # imported and looks for devices; every command needs it, so load it here.
            with quiet(verbose=args.verbose):
                import tensorflow as tf

                tf.config.list_physical_devices()
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("tltf: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every failure becomes one line unless --verbose
        if args.verbose:
            traceback.print_exc()
        else:
            kind = "" if isinstance(error, (UserError, ValueError, TypeError, OSError,
                                            LookupError)) else f"{type(error).__name__}: "
            print(f"tltf: error: {kind}{_one_line(error)} (--verbose shows the traceback)",
                  file=sys.stderr)
        return 1


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"tltf: warning: {_one_line(message) if isinstance(message, Warning) else message}",
          file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
