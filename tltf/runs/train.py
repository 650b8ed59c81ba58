"""`train_run`: what `tltf train --out RUN` does, as one library call that never loses a run.

It checks every argument, reads and checks the data, builds the model, and only then begins
(or resumes) the run folder (`tltf.runs.folder.RunFolder`): train, save, evaluate and export,
recording each step in `run.json`, so that a resumed run does only what is missing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from tltf._io import atomic_path, atomic_write
from tltf.runs.config import load_data
from tltf.runs.folder import RunFolder

__all__ = ["train_run"]


def train_run(
    directory: str | os.PathLike,
    config: dict[str, dict],
    *,
    resume: bool = False,
    overwrite: bool = False,
    calibrate: bool = False,
    verbose: int | str = "auto",
    say: Callable[[str], None] = print,
) -> RunFolder:
    """Trains, saves, evaluates and exports one run into `directory`, never losing a run.

    `config` has the sections of a `tltf train --config` file: `data` (arguments of
    `tltf.load_image_folder`, or of `tltf.load_tfds` with `name`), `model`
    (`tltf.build_classifier`), `train` (`tltf.fine_tune`) and `export`
    (`tltf.export_tflite`; empty for no export). The folder gets `config.yaml`, `run.json`,
    `model.keras`, `history.json`, `checkpoints/`, `logs/` (`history.csv`, `train.log`),
    `report/` (with validation or test data), `tensorboard/` (with `train.tensorboard`) and
    `model.tflite` with `model.labels.txt` (when `export` is set).

    Args:
        directory: str or path. The run folder.
        config: dict of section name to dict of arguments (see `tltf.runs.config.load_config`).
        resume: bool. Continue the run in `directory`, doing only what is missing.
            Defaults to `False`.
        overwrite: bool. Replace the run in `directory`. Defaults to `False`.
        calibrate: bool. Fit a softmax temperature on the validation data before saving.
            Defaults to `False`.
        verbose: 0, 1, 2 or `"auto"`: progress of checking the files, training (see
            `tltf.fine_tune`), calibrating and evaluating. Defaults to `"auto"`.
        say: callable taking one line of progress. Defaults to `print`.

    Returns:
        The (closed) `RunFolder`, whose `record` describes the run.

    Raises:
        FileExistsError, FileNotFoundError, BlockingIOError: see `RunFolder.open`.
        ValueError: a bad argument or data (before anything is written), or a resume whose
            backbone, image size or class names differ from the run's.

    Example:

    >>> import tempfile, os, numpy as np
    >>> from PIL import Image
    >>> root = tempfile.mkdtemp()
    >>> for c in ("dark", "light"):
    ...     os.makedirs(os.path.join(root, "data", c))
    ...     for i in range(6):
    ...         Image.fromarray(np.full((32, 32, 3), 40 if c == "dark" else 220, "uint8")
    ...                         ).save(os.path.join(root, "data", c, f"{i}.png"))
    >>> config = {"data": {"path": os.path.join(root, "data"), "image_size": 32,
    ...                    "validation_split": 0.5, "seed": 0},
    ...           "model": {"backbone": "mobilenet_v2", "weights": None},
    ...           "train": {"head_epochs": 1, "finetune_epochs": 0}, "export": {}}
    >>> run = train_run(os.path.join(root, "run"), config, verbose=0, say=lambda line: None)
    >>> run.state, sorted(k for k, v in run.record["steps"].items() if v)
    ('finished', ['evaluated', 'trained'])
    >>> train_run(os.path.join(root, "run"), config, resume=True).state  # doctest: +ELLIPSIS
    run ... is finished; nothing to do (its model is left as it is)
    'finished'
    """
    config = {section: dict(config.get(section) or {}) for section in
              ("data", "model", "train", "export")}
    _check_arguments(config)
    if config["train"].get("tensorboard"):
        from tltf.training._train_data import check_tensorboard

        check_tensorboard(directory)  # before the run folder is touched
    with RunFolder.open(directory, resume=resume, overwrite=overwrite) as run:
        if resume:
            run.check_matches(_config_identity(config))
        if resume and run.state == "finished":
            say(f"run {run.path} is finished; nothing to do (its model is left as it is)")
            return run
        data = config["data"]
        say(f"loading data from {data['path'] if 'path' in data else 'tfds:' + data['name']}")
        train, val, test = load_data(data, say=say, verbose=verbose)
        if calibrate and val is None:
            raise ValueError("--calibrate fits a temperature on validation data, but there is "
                             "none; set a validation split. Received: validation=None")
        identity = {**_config_identity(config), "class_names": list(train.class_names)}
        counts = {name: len(d) for name, d in (("train", train), ("validation", val),
                                                ("test", test)) if d is not None}
        # The model is built (its arguments checked, its weights found) before the run begins,
        # so that a failing command never costs an overwritten run.
        model = None if resume and run.done("trained") else _build_model(config, train)
        if not resume:
            run.begin(config, identity, {"counts": counts})
        elif run.record is None:  # a run of tltf 0.1 (no run.json): adopted as it is
            run.adopt(identity, {"counts": counts})
        else:
            run.check_matches(identity)
        if config["train"].get("tensorboard") and not run.done("trained"):
            say(f"TensorBoard: tensorboard --logdir {run.path / 'tensorboard'}")
        model = _trained_model(run, config, model, train, val, calibrate, verbose, say)
        eval_data = test if test is not None else val
        if eval_data is not None and not run.done("evaluated"):
            from tltf.evaluation.metrics import evaluate

            history = json.loads((run.path / "history.json").read_text())
            report = evaluate(model, eval_data, history=history,
                              batch_size=config["train"].get("batch_size", 32),
                              verbose=verbose)
            page = report.save(run.path / "report")
            say(report.summary())
            say(f"report: {page}")
            run.mark("evaluated")
        if config["export"] and not run.done("exported"):
            _export(run, model, config["export"], train, say)
            run.mark("exported")
        run.finish()
    return run


def _check_arguments(config: dict) -> None:
    """Every argument that can be checked without data, before anything is read or written."""
    import inspect

    from tltf.training._head_fit import check_head_fit
    from tltf.training._train_data import check_args
    from tltf.training._trunk import check_option as check_trunk_option
    from tltf.training.freeze import resolve_unfreeze
    from tltf.training.recipe import fine_tune

    data, train, export = config["data"], config["train"], config["export"]
    if "path" not in data and "name" not in data:
        raise ValueError("No data given: pass --data FOLDER (or tfds:NAME), or set `data.path` "
                         "in the config. Received: data=None")
    if "path" in data and not Path(data["path"]).is_dir():
        raise FileNotFoundError(f"Data folder not found: {data['path']}. Give a folder with one "
                                f"subfolder per class. Received: data={str(data['path'])!r}")
    if "image_size" in data:
        from tltf.data.decode import _image_size

        _image_size(data["image_size"])
    if "quantization" in export:
        from tltf.export._conversion import _check_quantization

        modes = export["quantization"]
        for mode in [modes] if isinstance(modes, str) else list(modes):
            _check_quantization(mode)
    signature = inspect.signature(fine_tune)
    unknown = sorted(set(train) - set(signature.parameters) | set(train) & {"model", "train", "val",
                                                                            "directory", "resume",
                                                                            "overwrite"})
    if unknown:
        raise ValueError(f"Unknown or reserved `train` argument(s) {unknown}: the section maps onto "
                         f"tltf.fine_tune, and the run sets the data and directory itself. "
                         f"Received: train.{unknown[0]}={train[unknown[0]]!r}")
    defaults = {p.name: p.default for p in signature.parameters.values()}
    values = {**defaults, **train}
    check_args(values["head_epochs"], values["finetune_epochs"], values["batch_size"],
               values["label_smoothing"], values["early_stopping"], values["discriminative_lr"],
               values["cache_features"], False, None, values["head_lr"], values["finetune_lr"])
    resolve_unfreeze(values["unfreeze"], validated=True)
    check_head_fit(values["head_fit"])
    check_trunk_option(values["trunk_cache"])
    backbone = config["model"].get("backbone", "mobilenet_v2")
    if isinstance(backbone, str) and ":" not in backbone:
        from tltf.backbones.registry import get_backbone

        get_backbone(backbone)


def _config_identity(config: dict) -> dict:
    model = config["model"]
    return {"backbone": model.get("backbone", "mobilenet_v2"),
            "image_size": model.get("image_size", config["data"].get("image_size"))}


def _build_model(config, train):
    import tltf

    model_cfg = dict(config["model"])
    if "image_size" in config["data"]:
        model_cfg.setdefault("image_size", config["data"]["image_size"])
    return tltf.build_classifier(num_classes=train.num_classes, class_names=train.class_names,
                                 **model_cfg)


def _trained_model(run: RunFolder, config, model, train, val, calibrate, verbose, say):
    """The run's trained model: loaded when a resumed run already saved it, else trained."""
    model_path = run.path / "model.keras"
    if run.done("trained"):
        from tltf.models.loading import load_model

        # Safe mode, trusting only the hub backbone the run's config names (which training
        # the run built and ran anyway): a Lambda or any other handle is still refused.
        backbone = str(config["model"].get("backbone", ""))
        trusted = [backbone.removeprefix("hub:")] if backbone.startswith("hub:") else []
        return load_model(model_path, trust_hub_handles=trusted)
    from tltf.training.recipe import fine_tune

    checkpoints = (run.path / "checkpoints" / "state.json").is_file()
    result = fine_tune(model, train, val, directory=run.path, resume=checkpoints,
                       verbose=verbose, **config["train"])
    model = result.model
    if calibrate:
        from tltf.evaluation.calibration import calibrate as fit_temperature

        calibration = fit_temperature(model, val, batch_size=config["train"].get("batch_size", 32),
                                      verbose=verbose)
        model = calibration.model
        say(f"calibrated: temperature {calibration.temperature:.3f}, validation ECE "
            f"{calibration.ece_before:.4f} -> {calibration.ece_after:.4f}")
    with atomic_path(model_path) as tmp:
        model.save(tmp)
    atomic_write(run.path / "history.json", json.dumps(result.history, indent=2, default=str))
    say(f"saved {model_path}")
    run.mark("trained")
    return model


def _export(run: RunFolder, model, export_cfg: dict, train, say) -> None:
    from tltf.export.tflite import export_tflite

    modes = export_cfg.get("quantization", "float32")
    modes = [modes] if isinstance(modes, str) else list(modes)
    rep = train if any(str(m).startswith("int8") for m in modes) else None
    # The run owns model.tflite: an interrupted export step may have left it half-done.
    exported = export_tflite(model, run.path / "model.tflite", representative_data=rep,
                             overwrite=True, **export_cfg)
    say(f"exported {exported.path} ({exported.size_bytes / 1e6:.2f} MB, {exported.quantization})")
