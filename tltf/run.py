"""A run folder's lifecycle: created once, locked while written, resumed only when it matches.

`train_run` is what `tltf train --out RUN` does, as a library call: check every argument,
read and check the data, then train, save, evaluate and export into the run folder, recording
each step in `run.json`. Its promises:

- A run folder is created once. Starting a run on an existing one is refused unless
  `resume=True` (continue it) or `overwrite=True` (replace it: the files of the old run are
  removed first, so nothing stale survives next to the new model). A folder that holds other
  files and no run is never written into.
- While a process writes a run, it holds a lock (`.tltf.lock`, an OS file lock released even
  by `kill -9`); a second writer fails at once, naming the holder.
- Nothing is written before the arguments and the data were checked: a failing command
  leaves an existing run exactly as it was, and a new folder it created is removed again.
- Every file is written atomically (temporary name, then rename).
- Resuming checks what it resumes (backbone, image size, class names and their order) and
  names both values on a difference. Resuming a finished run is a no-op that leaves its model
  bit-identical; resuming after an interrupt in the report or export step does only the
  missing steps.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

from tltf._io import atomic_path, atomic_write

__all__ = ["RUN_FILE", "RunFolder", "train_run"]

RUN_FILE = "run.json"
_LOCK_FILE = ".tltf.lock"
_STEPS = ("trained", "evaluated", "exported")
# Everything a run writes; `overwrite=True` removes these and nothing else.
_ARTIFACTS = (RUN_FILE, "config.yaml", "model.keras", "history.json", "report", "checkpoints",
              "logs", "model.tflite", "model.labels.txt", "model.comparison.json",
              "model.comparison.md")
_IDENTITY_KEYS = ("backbone", "image_size", "class_names")


class RunFolder:
    """A run folder held by this process: its record (`run.json`) and its lock.

    Use `RunFolder.open` (or `with RunFolder.open(...) as run:`); `train_run` does all of
    this for you.

    Example:

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "run")
    >>> with RunFolder.open(path) as run:
    ...     run.begin({"model": {"backbone": "mobilenet_v2"}}, {"backbone": "mobilenet_v2"})
    ...     run.mark("trained")
    >>> RunFolder.open(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileExistsError: ...run already holds a run (state: trained). Pass --resume ...
    """

    def __init__(self, path: Path, record: dict | None, created: bool, lock_file):
        self.path = path
        self.record = record
        self._created = created
        self._lock_file = lock_file
        self._new_lock = False

    # -------------------------------------------------------------------------- opening

    @classmethod
    def open(cls, path: str | os.PathLike, *, resume: bool = False,
             overwrite: bool = False) -> RunFolder:
        """Takes the run folder `path` for writing: checks its state and locks it.

        Args:
            path: str or path. The run folder (created if missing).
            resume: bool. The folder must hold a run, which is continued.
            overwrite: bool. An existing run is replaced (its files are removed by `begin`).

        Returns:
            A locked `RunFolder`; call `close()` (or use `with`) to release it.

        Raises:
            FileExistsError: the folder holds a run and neither `resume` nor `overwrite` is
                given, or it holds other files and no run.
            FileNotFoundError: `resume` without a run in the folder.
            BlockingIOError: another process is writing the run (the message names it).
            ValueError: `path` is a file, or `resume` and `overwrite` together.
        """
        path = Path(path)
        if resume and overwrite:
            raise ValueError("`resume` continues a run and `overwrite` replaces it; choose one. "
                             f"Received: resume={resume}, overwrite={overwrite}")
        if path.exists() and not path.is_dir():
            raise ValueError(f"The run folder {path} is a file, not a folder. Choose a new "
                             f"folder name for the run. Received: out={str(path)!r}")
        created = not path.exists()
        if resume and created:
            raise FileNotFoundError(f"Cannot resume: there is no run in {path} (the folder does "
                                    f"not exist). Start it without --resume. "
                                    f"Received: out={str(path)!r}")
        if not created:  # refuse what is plainly not ours before even adding a lock file
            _check_can_open(path, _read_record(path), resume, overwrite)
        path.mkdir(parents=True, exist_ok=True)
        new_lock = not (path / _LOCK_FILE).exists()
        lock_file = _lock(path)
        run = cls(path, None, created, lock_file)
        run._new_lock = new_lock
        try:  # again under the lock: another process may have begun a run meanwhile
            run.record = _read_record(path)
            _check_can_open(path, run.record, resume, overwrite)
        except BaseException:
            run.close(failed=True)
            raise
        return run

    # -------------------------------------------------------------------------- state

    @property
    def state(self) -> str | None:
        """`None` (not begun), `"training"`, `"trained"` or `"finished"`."""
        return None if self.record is None else self.record.get("state")

    def done(self, step: str) -> bool:
        """Whether `step` (`"trained"`, `"evaluated"`, `"exported"`) is recorded as done."""
        return bool(self.record and self.record.get("steps", {}).get(step))

    def check_matches(self, identity: dict) -> None:
        """Raises `ValueError` naming both values where `identity` differs from the run's."""
        recorded = (self.record or {}).get("identity", {})
        for key in _IDENTITY_KEYS:
            if recorded.get(key) is not None and identity.get(key) is not None \
                    and _comparable(recorded[key]) != _comparable(identity[key]):
                raise ValueError(
                    f"Cannot resume the run in {self.path}: it was made with {key}="
                    f"{recorded[key]!r}, but this command gives {key}={identity[key]!r}. Resume "
                    f"with the run's settings, or start a new run (another --out, or "
                    f"--overwrite). Received: {key}={identity[key]!r}")

    def begin(self, config: dict, identity: dict, data: dict | None = None) -> None:
        """Starts the run: removes an overwritten run's files, writes `config.yaml` and the record.

        Call it only after the arguments and the data were checked.
        """
        import yaml

        config_text = yaml.safe_dump(config, sort_keys=False)  # fails before anything is removed
        for name in _ARTIFACTS:  # an overwritten run: nothing of it survives
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif os.path.lexists(target):
                target.unlink()
        atomic_write(self.path / "config.yaml", config_text)
        self._new_record(identity, data)

    def adopt(self, identity: dict, data: dict | None = None) -> None:
        """Gives a run folder of tltf 0.1 (checkpoints, no `run.json`) a record, touching nothing."""
        self._new_record(identity, data)

    def _new_record(self, identity: dict, data: dict | None) -> None:
        from tltf import __version__

        now = _now()
        self.record = {"tltf_version": __version__, "state": "training", "created": now,
                       "updated": now, "identity": identity, "data": data or {},
                       "steps": dict.fromkeys(_STEPS, False)}
        self._save()

    def mark(self, step: str) -> None:
        """Records `step` as done (atomically); `"trained"` moves the state to `"trained"`."""
        if step not in _STEPS:
            raise ValueError(f"`step` must be one of {_STEPS}. Received: step={step!r}")
        self.record["steps"][step] = True
        if step == "trained":
            self.record["state"] = "trained"
        self._save()

    def finish(self) -> None:
        """Records the run as finished: a later resume leaves it as it is."""
        self.record["state"] = "finished"
        self._save()

    def _save(self) -> None:
        self.record["updated"] = _now()
        atomic_write(self.path / RUN_FILE, json.dumps(self.record, indent=1))

    # -------------------------------------------------------------------------- closing

    def close(self, failed: bool = False) -> None:
        """Releases the lock; a folder this process created for a run that never began goes."""
        if self._lock_file is None:
            return
        if failed and self.record is None:  # leave no trace of a run that never began
            if self._created:
                shutil.rmtree(self.path, ignore_errors=True)
            elif self._new_lock:
                (self.path / _LOCK_FILE).unlink(missing_ok=True)
        self._lock_file.close()  # closing the descriptor releases the OS lock
        self._lock_file = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, kind, error, trace) -> None:
        self.close(failed=kind is not None)


def _check_can_open(path: Path, record: dict | None, resume: bool, overwrite: bool) -> None:
    others = sorted(p.name for p in path.iterdir() if p.name != _LOCK_FILE)
    legacy = record is None and (path / "config.yaml").is_file() and \
        (path / "checkpoints" / "state.json").is_file()  # a run of tltf 0.1
    if legacy:
        if not resume and not overwrite:
            raise FileExistsError(
                f"{path} holds a run of an earlier tltf. Pass --resume to continue it, "
                f"--overwrite to replace it, or choose another --out. Received: out={str(path)!r}")
        return
    if resume and record is None:
        raise FileNotFoundError(
            f"Cannot resume: {path} holds no tltf run ({RUN_FILE} is missing). Start a new "
            f"run with another --out. Received: out={str(path)!r}")
    if record is not None and not resume and not overwrite:
        raise FileExistsError(
            f"{path} already holds a run (state: {record.get('state')}). Pass --resume to "
            "continue it, --overwrite to replace it, or choose another --out. "
            f"Received: out={str(path)!r}")
    if record is None and others:  # never written into, not even with --overwrite
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise FileExistsError(
            f"{path} is not empty ({shown}) and holds no tltf run; a run is written only "
            f"into a new or empty folder. Choose another --out. Received: out={str(path)!r}")


def _lock(path: Path):
    import fcntl

    lock_path = path / _LOCK_FILE
    f = open(lock_path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read(200).strip() or "another process"
        f.close()
        raise BlockingIOError(
            f"{path} is being written by {holder}; two runs never write one folder. Wait for it "
            f"to finish, or choose another --out. Received: out={str(path)!r}") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()} since {_now()}")
    f.flush()
    return f


def _read_record(path: Path) -> dict | None:
    file = path / RUN_FILE
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        return record
    except (OSError, ValueError) as e:
        raise ValueError(f"The run record {file} cannot be read ({e}). Start a new run with "
                         f"another --out. Received: out={str(path)!r}") from None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _comparable(value):
    return list(value) if isinstance(value, (list, tuple)) else value


# ----------------------------------------------------------------------------------------------
# The whole run.


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
        config: dict of section name to dict of arguments (see `tltf.cli.load_config`).
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
        from tltf.train import _check_tensorboard

        _check_tensorboard(directory)  # before the run folder is touched
    with RunFolder.open(directory, resume=resume, overwrite=overwrite) as run:
        if resume:
            run.check_matches(_config_identity(config))
        if resume and run.state == "finished":
            say(f"run {run.path} is finished; nothing to do (its model is left as it is)")
            return run
        train, val, test = _load_data(config["data"], say, verbose)
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
            from tltf.evaluate import evaluate

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

    from tltf._train_data import check_args
    from tltf.freeze import parse_unfreeze
    from tltf.train import fine_tune

    data, train, export = config["data"], config["train"], config["export"]
    if "path" not in data and "name" not in data:
        raise ValueError("No data given: pass --data FOLDER (or tfds:NAME), or set `data.path` "
                         "in the config. Received: data=None")
    if "path" in data and not Path(data["path"]).is_dir():
        raise FileNotFoundError(f"Data folder not found: {data['path']}. Give a folder with one "
                                f"subfolder per class. Received: data={str(data['path'])!r}")
    if "image_size" in data:
        from tltf.dataset import _image_size

        _image_size(data["image_size"])
    if "quantization" in export:
        from tltf.export import _check_quantization

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
    parse_unfreeze(values["unfreeze"])
    backbone = config["model"].get("backbone", "mobilenet_v2")
    if isinstance(backbone, str) and ":" not in backbone:
        from tltf.backbones import get_backbone

        get_backbone(backbone)


def _config_identity(config: dict) -> dict:
    model = config["model"]
    return {"backbone": model.get("backbone", "mobilenet_v2"),
            "image_size": model.get("image_size", config["data"].get("image_size"))}


def _load_data(data_args: dict, say, verbose=0):
    """(train, val or None, test or None) from a folder or a TFDS name."""
    import tltf

    data_args = dict(data_args)
    say(f"loading data from {data_args.get('path') or 'tfds:' + data_args['name']}")
    if "name" in data_args:
        data_args.setdefault("split", ["train[:80%]", "train[80%:]"])
        loaded = tltf.load_tfds(**data_args)
    else:
        loaded = tltf.load_image_folder(**{"verbose": verbose, **data_args})
    parts = list(loaded) if isinstance(loaded, tuple) else [loaded]
    train, val, test = parts[0], (parts[1] if len(parts) > 1 else None), \
        (parts[2] if len(parts) > 2 else None)
    say(f"{len(train)} training images in {train.num_classes} classes {train.class_names}"
        + (f", {len(val)} validation images" if val is not None else ""))
    return train, val, test


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
        from tltf.models import load_model

        # Safe mode, trusting only the hub backbone the run's config names (which training
        # the run built and ran anyway): a Lambda or any other handle is still refused.
        backbone = str(config["model"].get("backbone", ""))
        trusted = [backbone.removeprefix("hub:")] if backbone.startswith("hub:") else []
        return load_model(model_path, trust_hub_handles=trusted)
    from tltf.train import fine_tune

    checkpoints = (run.path / "checkpoints" / "state.json").is_file()
    result = fine_tune(model, train, val, directory=run.path, resume=checkpoints,
                       verbose=verbose, **config["train"])
    model = result.model
    if calibrate:
        from tltf.evaluate import calibrate as fit_temperature

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
    from tltf.export import export_tflite

    modes = export_cfg.get("quantization", "float32")
    modes = [modes] if isinstance(modes, str) else list(modes)
    rep = train if any(str(m).startswith("int8") for m in modes) else None
    # The run owns model.tflite: an interrupted export step may have left it half-done.
    exported = export_tflite(model, run.path / "model.tflite", representative_data=rep,
                             overwrite=True, **export_cfg)
    say(f"exported {exported.path} ({exported.size_bytes / 1e6:.2f} MB, {exported.quantization})")
