"""Crash-safe checkpoints of `fine_tune`: the run's state, written atomically every epoch.

Layout of `directory/checkpoints/`:

- `state.json`: phase, epochs done in each phase, the merged history so far, the early-stopping
  and best-epoch bookkeeping, and the name of the weights file below. It is the commit point:
  it is replaced (atomically, by `tltf._io`) only after the weights file it names is complete.
- `phase<P>-epoch<E>.weights.h5`: the weights of the model being fitted together with its
  optimizer state (moments, iteration count, hence the learning-rate schedule position).
- `best.npz`: the weights of the whole classifier at the best epoch so far.
- `phase1.npz`: the weights of the whole classifier at the end of phase 1.
- `final.npz`: the weights the classifier ends the run with; written when the run finishes,
  so that resuming a finished run gives back exactly that model.

`state.json` also records what model the run trains (`model_identity`): resuming with another
backbone, input size or class order is refused instead of loading weights under new names.

A process killed at any instant (even `kill -9`) leaves either the previous or the new
checkpoint, never a torn one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras

from tltf._backend import check_backend
from tltf._io import atomic_path, atomic_write

check_backend()  # Keras must run on TensorFlow before this module builds anything

__all__ = [
    "RunState",
    "PhaseCheckpoint",
    "check_same_model",
    "model_identity",
]

STATE_FILE = "state.json"
FINAL_WEIGHTS = "final.npz"


@dataclass
class RunState:
    """Everything `fine_tune` needs to continue a run: JSON-serialisable bookkeeping."""

    phase: int = 1
    epochs_done: dict[str, int] = field(default_factory=lambda: {"1": 0, "2": 0})
    phase_done: dict[str, bool] = field(default_factory=lambda: {"1": False, "2": False})
    rows: list[dict] = field(default_factory=list)
    monitor: str | None = None
    mode: str = "max"
    best_value: float | None = None
    best_epoch: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    wait: int = 0
    weights_file: str | None = None
    train_kind: str | None = None
    head_c: float | None = None  # phase 1 fitted as a logistic regression: its chosen C
    finished: bool = False
    model: dict = field(default_factory=dict)

    @staticmethod
    def exists(folder: Path) -> bool:
        return (Path(folder) / STATE_FILE).is_file()

    @classmethod
    def load(cls, folder: Path) -> RunState | None:
        path = folder / STATE_FILE
        if not path.is_file():
            return None
        try:
            with open(path) as f:
                values = json.load(f)
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in values.items() if k in known})
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(
                f"The checkpoint state {path} cannot be read ({e}); it was not written by this "
                f"version of tltf or was damaged. Start a new run. Received: path={str(path)!r}"
            ) from None

    def save(self, folder: Path) -> None:
        atomic_write(folder / STATE_FILE, json.dumps(asdict(self), indent=1))


def model_identity(model: keras.Model) -> dict:
    """What makes a run's weights mean something: backbone, input size and class names.

    Recorded in a run's `state.json` and compared when the run is resumed.

    Example:

    >>> import tltf
    >>> model = tltf.build_classifier("mobilenet_v2", 2, image_size=32, weights=None,
    ...                               class_names=["cat", "dog"])
    >>> model_identity(model)["class_names"]
    ['cat', 'dog']
    """
    from tltf.models.parts import head_of

    identity = {
        "input_shape": [None if d is None else int(d) for d in model.inputs[0].shape[1:]],
        "num_classes": int(model.outputs[0].shape[-1]),
        "weight_shapes": [list(map(int, w.shape)) for w in model.weights],
    }
    try:  # the recorded name, not the spec: resolving a hub: name would load the SavedModel
        identity["backbone"] = getattr(model.get_layer("preprocessing"), "backbone_name", None)
        identity["class_names"] = list(head_of(model).class_names or []) or None
    except (ValueError, KeyError):  # a model not built by tltf: shapes are all there is
        pass
    return identity


def check_same_model(recorded: dict, current: dict, directory) -> None:
    """Raises `ValueError` naming both values when `current` is not the model of the run.

    Example:

    >>> check_same_model({"class_names": ["cat", "dog"]}, {"class_names": ["dog", "cat"]},
    ...                  "runs/1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Cannot resume the run in runs/1: it trained a model with class_names=['cat', 'dog'], ...
    """
    for key in ("backbone", "input_shape", "num_classes", "class_names", "weight_shapes"):
        if key in recorded and key in current and recorded[key] != current[key]:
            before, now = recorded[key], current[key]
            if key == "weight_shapes":
                before, now = f"{len(before)} weights", f"{len(now)} weights of other shapes"
            raise ValueError(
                f"Cannot resume the run in {directory}: it trained a model with {key}={before!r}, "
                f"but this model has {key}={now!r}. Build the model as that run did, or start a "
                f"new run (overwrite=True, or another directory). Received: {key}={now!r}"
            )


class PhaseCheckpoint(keras.callbacks.Callback):
    """A crash-safe backup of one phase of `fine_tune`, through the public callback API.

    Like Keras' `BackupAndRestore` it restores in `on_train_begin` and backs up in
    `on_epoch_end`, but it writes a new weights file, then `state.json` naming it, each by
    temp file + rename (Keras writes `latest.weights.h5` in place, so a kill during the write
    tears it), and it restores weights and optimizer state only: the caller resumes the
    epoch count with `fit(initial_epoch=state.epochs_done[str(phase)])`, as `fine_tune` does.

    Args:
        folder: Path. The `checkpoints/` folder of the run.
        phase: int. 1 or 2.
        state: RunState. The run's shared bookkeeping (updated by `fine_tune`'s callbacks).
        skip: callable returning True when the epoch must not be saved (non-finite loss).

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> import keras
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> state = RunState()
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("adam", "mse")
    >>> callback = PhaseCheckpoint(folder, phase=1, state=state)
    >>> _ = model.fit(np.zeros((4, 2)), np.zeros(4), epochs=1, verbose=0, callbacks=[callback])
    >>> state.weights_file
    'phase1-epoch0000.weights.h5'
    """

    def __init__(self, folder: Path, phase: int, state: RunState, skip=lambda: False):
        super().__init__()
        self.folder = Path(folder)
        self.phase = phase
        self.state = state
        self.skip = skip

    def on_train_begin(self, logs=None):
        state = self.state
        done = state.epochs_done[str(self.phase)]
        if state.phase != self.phase or not state.weights_file or done == 0:
            return
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # so its state loads too
        model.load_weights(str(self.folder / state.weights_file))

    def on_epoch_end(self, epoch, logs=None):
        if self.skip():
            return
        self._backup()

    def _scratch_twin(self, folder: Path) -> PhaseCheckpoint:
        """A callback that backs up at the same moments as this one, into `folder`."""
        return PhaseCheckpoint(folder, self.phase, RunState(phase=self.phase), skip=self.skip)

    def _backup(self):
        state = self.state
        old = state.weights_file
        name = f"phase{self.phase}-epoch{state.epochs_done[str(self.phase)]:04d}.weights.h5"
        with atomic_path(self.folder / name) as tmp:
            self.model.save_weights(str(tmp), overwrite=True)
        state.weights_file = name
        state.save(self.folder)
        if old and old != name and (self.folder / old).exists():
            os.remove(self.folder / old)
