"""A run folder's lifecycle: created once, locked while written, resumed only when it matches.

`RunFolder` is the folder `tltf.runs.train.train_run` (what `tltf train --out RUN` does) writes.
Its promises:

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
from pathlib import Path

from tltf._io import atomic_write

__all__ = ["RUN_FILE", "RunFolder"]

RUN_FILE = "run.json"
_LOCK_FILE = ".tltf.lock"
_STEPS = ("trained", "evaluated", "exported")
# Everything a run writes; `overwrite=True` removes these and nothing else.
_ARTIFACTS = (RUN_FILE, "config.yaml", "model.keras", "history.json", "report", "checkpoints",
              "logs", "tensorboard", "model.tflite", "model.labels.txt", "model.comparison.json",
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
