"""The commands of `tltf`: each reads its parsed arguments and calls the public functions.

`tltf.cli` parses the command line and calls one of these; a `UserError` (or any error of
the library) becomes one line on stderr there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


class UserError(Exception):
    """A mistake in the command line or the config, reported in one line."""


# ----------------------------------------------------------------------------- helpers


def _load_model(path: str, trust_model_code: bool = False):
    """Loads in Keras' safe mode: a stranger's file runs no code (lambdas, SavedModel graphs)."""
    from tltf.backbones._hub_handles import RefusedHandle
    from tltf.models.loading import load_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: {path}. Give a .keras file written by "
                                f"`tltf train` or `model.save`. Received: model={str(path)!r}")
    try:
        return load_model(path, safe_mode=not trust_model_code)
    except ValueError as error:
        refused = _find_cause(error, RefusedHandle)
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


def say(message: str) -> None:
    print(message, flush=True)


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, default=str))


# ----------------------------------------------------------------------------- commands


def backbones(args) -> int:
    from tltf import get_backbone, list_backbones  # with the built-in sources (hub:)

    names = list_backbones(args.pattern)
    if not names:
        raise UserError(f"No backbone matches '{args.pattern}'; run `tltf backbones` to list "
                        f"them all. Received: pattern={args.pattern!r}")
    say(f"{'name':<36} {'size':>5} {'features':>8}  {'pretrained sizes':<26} preprocessing")
    for name in names:
        s = get_backbone(name)
        sizes = ",".join(map(str, s.pretrained_sizes)) if s.pretrained_sizes else f">={s.min_size}"
        say(f"{name:<36} {s.default_size:>5} {s.feature_dim:>8}  {sizes:<26} {s.preprocessing}")
    return 0


def audit(args) -> int:
    from tltf.data import audit

    result = audit(args.data)
    say(str(result))
    if args.json:
        _write_json(Path(args.json), result.to_dict() if hasattr(result, "to_dict") else result)
    return 0


def train(args) -> int:
    from tltf.runs.config import SECTIONS, data_section, is_split_folder, load_config
    from tltf.runs.train import train_run

    out = Path(args.out)
    saved_config = out / "config.yaml"
    if args.resume and not args.config and not args.data:
        if not saved_config.is_file():
            raise UserError(f"Cannot resume: {saved_config} does not exist; start the run "
                            f"without --resume. Received: out={str(out)!r}")
        args.config = str(saved_config)
    config = load_config(args.config) if args.config else {s: {} for s in SECTIONS}
    data_cfg = data_section(args.data, args.image_size, config["data"])
    if "path" in data_cfg and "validation_split" not in data_cfg:
        if not is_split_folder(data_cfg["path"]):
            data_cfg["validation_split"] = args.validation_split
    data_cfg.setdefault("seed", args.seed)
    model_cfg = dict(config["model"])
    for key, value in (("backbone", args.backbone), ("weights", args.weights)):
        if value is not None:
            model_cfg[key] = None if value == "none" else value
    model_cfg.setdefault("backbone", "mobilenet_v2")
    train_cfg = dict(config["train"])
    for key in ("head_epochs", "head_fit", "finetune_epochs", "batch_size", "unfreeze"):
        if getattr(args, key) is not None:
            train_cfg[key] = getattr(args, key)
    if args.trunk_cache is not None:
        train_cfg["trunk_cache"] = {"on": True, "off": False}.get(args.trunk_cache, "auto")
    train_cfg.setdefault("seed", args.seed)
    model_cfg.setdefault("seed", args.seed)  # the same seed builds the same initial model
    if args.tensorboard:
        train_cfg["tensorboard"] = True
    export_cfg = dict(config["export"])
    if args.tflite:
        export_cfg["quantization"] = args.tflite
    train_run(out, {"data": data_cfg, "model": model_cfg, "train": train_cfg,
                    "export": export_cfg},
              resume=args.resume, overwrite=args.overwrite, calibrate=args.calibrate,
              verbose="auto", say=say)
    return 0


def lr_find(args) -> int:
    import tltf
    from tltf.runs.config import data_section, load_data

    weights = None if args.weights == "none" else args.weights
    size = args.image_size or tltf.get_backbone(args.backbone).default_size
    train, _, _ = load_data(data_section(args.data, size, {}), say=say)
    model = tltf.build_classifier(args.backbone, train.num_classes, image_size=size,
                                  weights=weights, class_names=train.class_names, seed=args.seed)
    if args.phase == 2:  # the rate of phase 2 is for a model whose head is trained
        say("fitting the head first (phase 1 of `tltf train`) ...")
        tltf.fine_tune(model, train, finetune_epochs=0, batch_size=args.batch_size,
                       seed=args.seed, verbose=0)
    result = tltf.lr_find(model, train, phase=args.phase, unfreeze=args.unfreeze,
                          num_steps=args.num_steps, batch_size=args.batch_size, seed=args.seed)
    what = (f"the head and {len(result.unfrozen)} layers of the backbone "
            f"(unfreeze={args.unfreeze})" if args.phase == 2 else "the head alone")
    stop = ", stopped: the loss diverged" if result.diverged else ""
    say(f"phase {args.phase}: trained {what}, {len(result.lrs)} steps{stop}")
    say(f"{'learning rate':>14}  smoothed loss")
    n, rows = len(result.lrs), min(10, len(result.lrs))
    for i in sorted({round(k * (n - 1) / max(1, rows - 1)) for k in range(rows)}):
        say(f"{result.lrs[i]:>14.2e}  {result.losses[i]:.4f}")
    others = ", ".join(f"{k} {v:.2e}" for k, v in result.suggestions.items() if k != "valley")
    key = "finetune_lr" if args.phase == 2 else "head_lr"
    say(f"suggested learning rate (valley rule): {result.suggestion:.2e}  (other rules: {others})")
    say(f"use it as fine_tune's {key} (config key train.{key})")
    if args.plot:
        say(f"plot: {result.plot(args.plot)}")
    if args.json:
        _write_json(Path(args.json), result.to_dict())
        say(f"json: {args.json}")
    return 0


def evaluate(args) -> int:
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
    say(report.summary())
    if args.out:
        say(f"report: {report.save(args.out)}")
    return 0


def _head_names(model):
    """The head's class names, so that folders load with labels in the model's order."""
    from tltf.models.parts import head_or_none

    head = head_or_none(model)
    return None if head is None else head.class_names


def predict(args) -> int:
    import warnings

    from tltf.evaluation.prediction import predict

    model = _load_model(args.model, args.trust_model_code)
    with warnings.catch_warnings():  # the skipped files are listed below, one line each
        warnings.simplefilter("ignore")
        results = predict(model, args.images, top_k=args.top_k, batch_size=args.batch_size)
    if args.json:
        say(json.dumps([{"file": r.file, "labels": r.labels, "scores": r.scores}
                         for r in results], indent=2))
    else:
        for r in results:
            guesses = "  ".join(f"{label} {score:.3f}" for label, score in zip(r.labels, r.scores, strict=True))
            say(f"{r.file}\t{guesses}")
    for path, reason in results.skipped:
        print(f"tltf: warning: skipped {path}: {reason}", file=sys.stderr)
    return 0 if results else 1


def export(args) -> int:
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
    say(f"exported {result.path} ({result.size_bytes / 1e6:.2f} MB, {result.quantization}, "
         f"input {result.input_dtype})")
    if result.report is not None:
        say(str(result.report))
    return 0


def tune(args) -> int:
    from tltf.runs.config import data_section, load_data
    from tltf.tune.tuner import search

    data_cfg = data_section(args.data, args.image_size, {})
    data_cfg["validation_split"] = args.validation_split
    data_cfg["seed"] = args.seed
    train, val, _ = load_data(data_cfg, say=say)
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
        say(f"saved {out / 'best_model.keras'}")
    say(f"best {result.objective}: {result.best_score}  {result.best_hyperparameters}")
    return 0
