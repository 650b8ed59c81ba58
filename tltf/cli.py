"""The `tltf` command: train, lr-find, evaluate, predict, export, tune, audit, list backbones.

Every command is a thin call of the public functions (`tltf.load_image_folder`,
`tltf.build_classifier`, `tltf.fine_tune`, `tltf.lr_find`, `tltf.evaluate`, `tltf.export_tflite`, `tltf.search`,
`tltf.runs.train_run`, ...); the commands live in `tltf._commands`. A user error (missing folder, unknown backbone, bad config key)
prints one line and exits with status 1; `--verbose` prints the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings

from tltf import _commands as commands
from tltf._commands import UserError
from tltf._quiet import log_environment, quiet

__all__ = ["main"]

_DESCRIPTION = "Transfer learning for image classification: from a folder of photos to a .tflite."
_EPILOG = """examples:
  tltf backbones "mobilenet*"
  tltf audit photos/
  tltf train --data photos/ --backbone mobilenet_v2 --image-size 224 --out runs/1 --tflite int8
  tltf train --config run.yaml --out runs/2
  tltf train --out runs/1 --resume
  tltf lr-find --data photos/ --backbone mobilenet_v2 --plot lr.png
  tltf evaluate runs/1/model.keras photos_test/ --out runs/1/test-report
  tltf predict runs/1/model.keras cat.jpg dog.jpg --top-k 3
  tltf export runs/1/model.keras model.tflite --quantization int8 --representative-data photos/
  tltf tune --data photos/ --backbone mobilenet_v2 --max-trials 8 --out runs/search

Run `tltf <command> --help` for the options of a command."""

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
    p.add_argument("--head-epochs", type=int, help="Adam epochs of phase 1 (head only)")
    p.add_argument("--head-fit", choices=("auto", "convex", "adam"),
                   help="how phase 1 trains the head: 'convex' fits a linear head as a "
                        "cross-validated logistic regression, 'adam' trains --head-epochs "
                        "epochs (default auto: convex where it can run)")
    p.add_argument("--finetune-epochs", type=_epochs_or_auto,
                   help="epochs of phase 2 (top blocks unfrozen), or 'auto' (default: 10, "
                        "none without validation data under 100 images a class)")
    p.add_argument("--trunk-cache", choices=("auto", "on", "off"),
                   help="phase 2 on the frozen trunk's cached output: 'on' raises where it "
                        "cannot run, 'off' trains the full model (default auto: where it can)")
    p.add_argument("--unfreeze", help="what phase 2 unfreezes, e.g. top_blocks:2, fraction:0.3 "
                                      "(default auto: top_blocks:4 with validation data, "
                                      "else 2)")
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
    p.set_defaults(func=commands.train)

    p = command("lr-find", "suggest a learning rate: the learning-rate range test",
                "tltf lr-find --data photos/ --backbone mobilenet_v2 --plot lr.png --json lr.json")
    p.add_argument("--data", required=True,
                   help="folder with one subfolder per class (a split folder: its train part), "
                        "or tfds:NAME")
    p.add_argument("--backbone", default="mobilenet_v2",
                   help="registered backbone name or hub:HANDLE (default mobilenet_v2)")
    p.add_argument("--image-size", type=int, help="square input size (default: the backbone's)")
    p.add_argument("--weights", default="imagenet", help="'imagenet' (default) or 'none'")
    p.add_argument("--phase", type=int, choices=(1, 2), default=2,
                   help="1: the head on a frozen backbone; 2 (default): the head is fitted "
                        "first (phase 1 of `tltf train`), then the top blocks train too")
    p.add_argument("--unfreeze", default="top_blocks:4",
                   help="what phase 2 unfreezes (default top_blocks:4, as train with "
                        "validation data)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-steps", type=int, default=100, help="steps at most (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", help="write the loss against the learning rate to this PNG")
    p.add_argument("--json", help="write the rates, losses and suggestions to this JSON file")
    p.set_defaults(func=commands.lr_find)

    p = command("evaluate", "measure a saved model on a labelled folder and write a report",
                "tltf evaluate runs/1/model.keras photos_test/ --out runs/1/test-report")
    p.add_argument("model", help="a .keras model file")
    p.add_argument("data", help="folder with one subfolder per class (a split folder uses its "
                                "last split: test, else validation)")
    p.add_argument("--out", help="folder for report.html, report.json and the figures")
    p.add_argument("--batch-size", type=int, default=32)
    _trust_flag(p)
    p.set_defaults(func=commands.evaluate)

    p = command("predict", "label image files with a saved model",
                "tltf predict runs/1/model.keras cat.jpg dog.jpg more_photos/ --top-k 3")
    p.add_argument("model", help="a .keras model file")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--top-k", type=int, default=1, help="classes to show per image")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print JSON instead of lines")
    _trust_flag(p)
    p.set_defaults(func=commands.predict)

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
    p.set_defaults(func=commands.export)

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
    p.set_defaults(func=commands.tune)

    p = command("audit", "check an image folder: bad files, duplicates, class balance",
                "tltf audit photos/")
    p.add_argument("data", help="folder with one subfolder per class")
    p.add_argument("--json", help="also write the findings to this JSON file")
    p.set_defaults(func=commands.audit)

    p = command("backbones", "list the registered backbones", 'tltf backbones "efficientnet*"')
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard")
    p.set_defaults(func=commands.backbones)
    return parser


def _epochs_or_auto(text: str) -> int | str:
    """`--finetune-epochs`: an int >= 0 or `auto`."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0 or 'auto', got {text!r}")
    return value


def _trust_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-model-code", action="store_true",
        help="load the model outside Keras' safe mode, so it may run code: Python lambdas and "
             "the graphs of the SavedModels (local or TF Hub) its config names. Only for files "
             "you trust")


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
