"""The bookkeeping of one `fine_tune` call: its phases, checkpoints, logs and best weights.

`PhaseRun` holds what a run knows between phases (the `RunState` that `checkpoints/` keeps,
the best weights, the log files); `_Monitor` is the Keras callback that feeds it after every
epoch (history row, best epoch, early stopping, a non-finite loss), and `fit_convex` feeds it
the one row of a phase 1 fitted as a logistic regression. `fine_tune`
(`tltf.training.recipe`) only says which phase runs when.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras

from tltf._io import atomic_write, load_arrays, save_arrays
from tltf._progress import keras_steps_without_retracing_warning
from tltf.models.classifier import compile_classifier
from tltf.training import distribute
from tltf.training._train_data import num_batches
from tltf.training.checkpoint import (
    FINAL_WEIGHTS,
    PhaseCheckpoint,
    RunState,
    check_same_model,
    model_identity,
)
from tltf.training.schedules import DiscriminativeAdam, warmup_cosine

DEFAULT_PATIENCE = 3


class PhaseRun:
    def __init__(self, model, directory, resume, overwrite, strategy, verbose, callbacks,
                 early_stopping, tensorboard=False):
        self.model = model
        self.strategy = strategy
        self.verbose = verbose
        self.tensorboard = tensorboard
        self.user_callbacks = list(callbacks or [])
        self.patience = (DEFAULT_PATIENCE if early_stopping is True
                         else int(early_stopping) if early_stopping else None)
        self.directory = Path(directory) if directory is not None else None
        self.ckpt_dir = self.log_dir = None
        self.writes = self.directory is not None and distribute.is_chief(strategy)
        self.best_weights = None
        self.nonfinite = None
        self.trunk_layer = None  # where phase 2's trunk was cached in this call, if it was
        state = None
        if self.directory is not None:
            self.ckpt_dir = self.directory / "checkpoints"
            self.log_dir = self.directory / "logs"
            if resume:
                state = RunState.load(self.ckpt_dir)
                if state is None:
                    raise ValueError(
                        f"`resume=True` but there is no checkpoint in {self.ckpt_dir} "
                        "(no state.json). Run once without resume, or point `directory` at a "
                        f"previous run. Received: directory={str(directory)!r}"
                    )
                check_same_model(state.model, model_identity(model), self.directory)
            elif not overwrite and RunState.exists(self.ckpt_dir):
                raise FileExistsError(
                    f"{self.directory} holds the checkpoints of an earlier run; a new run would "
                    "delete them. Pass resume=True to continue it, overwrite=True to start "
                    f"over, or another directory. Received: directory={str(directory)!r}"
                )
            if self.writes:
                self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                self.log_dir.mkdir(parents=True, exist_ok=True)
                if not resume:  # a fresh run: a stale state must never be resumed later
                    for name in ("state.json", "best.npz", "phase1.npz", FINAL_WEIGHTS):
                        (self.ckpt_dir / name).unlink(missing_ok=True)
                    (self.log_dir / "train.log").unlink(missing_ok=True)  # a new run's log
        self.state = state or RunState(model=model_identity(model))
        if state is not None and state.best_epoch is not None and (self.ckpt_dir / "best.npz").exists():
            self.best_weights = load_arrays(self.ckpt_dir / "best.npz")

    def remaining(self, phase: int, epochs: int) -> bool:
        state = self.state
        if state.phase_done[str(phase)] or epochs == 0:
            return False
        return state.epochs_done[str(phase)] < epochs

    def fit_phase(self, phase, train_model, train_ds, val_ds, epochs, lr, multipliers, *,
                  class_weight, jit, label_smoothing, first_epoch_extra=0.0, trunk=None):
        """Fits `train_model` for the phase's remaining epochs.

        `trunk` (phase 2): a `tltf.training._trunk.TrunkCache`. When it gives a top model,
        that model (the same layers above the cut, and the head) trains on the cached trunk
        outputs with the optimizer of `train_model`, and `train_model` (the full model) is
        what the checkpoints hold and restore; its weights are restored before the trunk is
        read, so a resumed run caches the frozen weights it was saved with.
        """
        state = self.state
        if state.phase != phase:
            state.phase, state.weights_file, state.wait = phase, None, 0
        steps = num_batches(train_ds)
        schedule = warmup_cosine(lr, steps * epochs)
        with self.strategy.scope():
            if multipliers:
                optimizer = DiscriminativeAdam(multipliers, learning_rate=schedule)
            else:
                optimizer = keras.optimizers.Adam(learning_rate=schedule)
            compile_classifier(train_model, optimizer, label_smoothing=label_smoothing,
                               jit_compile=jit)
        monitor = _Monitor(self, phase, epochs, first_epoch_extra)
        cbs = [monitor]
        if self.tensorboard and self.writes:
            cbs.append(self._tensorboard(phase))
        fit_model, steps_per_epoch, top = train_model, None, None
        if trunk is not None:
            if self.writes:
                checkpoint = _FullModelCheckpoint(train_model, self.ckpt_dir, phase, state,
                                                  skip=lambda: self.nonfinite is not None)
                checkpoint.on_train_begin()  # the full model's weights back, then the trunk
                cbs.append(checkpoint)
            with self.strategy.scope():  # the top model must live where its optimizer does
                top = trunk(state.epochs_done[str(phase)])
                if top is not None:
                    if not optimizer.built:  # in the full model's order, as a restore builds it
                        optimizer.build(train_model.trainable_variables)
                    compile_classifier(top.model, optimizer, label_smoothing=label_smoothing,
                                       jit_compile=jit)
            if top is not None:
                self.trunk_layer = trunk.cut.layer
                fit_model, train_ds, val_ds = top.model, top.train, top.val
                steps_per_epoch = top.steps
                monitor.extra += top.seconds
        elif self.writes:
            cbs.append(PhaseCheckpoint(self.ckpt_dir, phase, state,
                                       skip=lambda: self.nonfinite is not None))
        elif self.ckpt_dir is not None:  # a worker that is not the chief: restore, never write
            cbs.append(distribute._restore_only(PhaseCheckpoint)(
                self.ckpt_dir, phase, state, skip=lambda: self.nonfinite is not None))
        cbs += self.user_callbacks
        # verbose=2 is the run's own line per epoch (printed by _Monitor), not Keras' two.
        with keras_steps_without_retracing_warning():
            fit_model.fit(train_ds, validation_data=val_ds, epochs=epochs,
                            initial_epoch=state.epochs_done[str(phase)],
                            class_weight=class_weight, callbacks=cbs, steps_per_epoch=steps_per_epoch,
                            verbose=1 if self.verbose == 1 else 0, shuffle=False)
        if trunk is not None:
            trunk.release()
        if self.nonfinite is not None:
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)
            epoch, batch, name, value = self.nonfinite
            where = f" The last good checkpoint is in {self.ckpt_dir}." if self.ckpt_dir else ""
            raise FloatingPointError(
                f"Training stopped: `{name}` became {value} in phase {phase}, epoch {epoch + 1}, "
                f"batch {batch}. The model now holds the best weights so far.{where} Lower the "
                f"learning rate (phase {phase}: peak {lr:.3g}) or check the data for bad "
                f"values. Received: {name}={value}"
            )

    def fit_convex(self, head_model, train_ds, val_ds, fit, *, jit, label_smoothing,
                   first_epoch_extra=0.0) -> None:
        """Phase 1 as one convex fit of the head (`fit()` writes its weights and returns the
        chosen C), recorded as one epoch: losses and metrics of the head model on the cached
        training and validation features, then best epoch and logs as after an Adam epoch."""
        state = self.state
        state.phase, state.weights_file, state.wait = 1, None, 0
        t0 = time.perf_counter()
        c = fit()
        with self.strategy.scope():
            compile_classifier(head_model, label_smoothing=label_smoothing, jit_compile=jit)
        with keras_steps_without_retracing_warning():
            logs = head_model.evaluate(train_ds, verbose=0, return_dict=True)
            if val_ds is not None:
                scores = head_model.evaluate(val_ds, verbose=0, return_dict=True)
                logs.update({f"val_{k}": v for k, v in scores.items()})
        logs = {k: float(v) for k, v in logs.items()}
        # The same keys as an Adam epoch's row; no gradient step was taken, at any rate.
        row = {"epoch": len(state.rows), "phase": 1, "phase_epoch": 0, **logs,
               "learning_rate": 0.0, "time": time.perf_counter() - t0 + first_epoch_extra}
        state.head_c = c
        line = _epoch_line(row, 1, title=f"phase 1 logistic regression, C {c:.3g}")
        self.record(row, logs, line)
        if self.verbose == 1:  # no Keras bar to show it
            print(line, flush=True)
        if self.tensorboard and self.writes:  # the scalars an Adam epoch would have written
            board = self._tensorboard(1)
            board.set_model(head_model)
            board.on_train_begin()
            board.on_epoch_end(0, logs)
            board.on_train_end()

    def _tensorboard(self, phase: int) -> keras.callbacks.TensorBoard:
        return keras.callbacks.TensorBoard(
            log_dir=str(self.directory / "tensorboard" / f"phase{phase}"), write_graph=False)

    def record(self, row: dict, logs: dict, line: str) -> bool:
        """Adds one epoch's row: history, epochs done, best epoch and weights, log files
        (where `line` goes). Returns True when early stopping says the phase should stop.
        """
        state = self.state
        state.rows.append(row)
        state.epochs_done[str(row["phase"])] = row["phase_epoch"] + 1
        stop = self._track_best(row, logs)
        self.write_log()
        self.log_epoch(line)
        return stop

    def _track_best(self, row, logs) -> bool:
        state = self.state
        if state.monitor is None:
            state.monitor, state.mode = _pick_monitor(logs)
        value = logs.get(state.monitor) if state.monitor else None
        if value is None:
            return False
        better = state.best_value is None or (
            value > state.best_value if state.mode == "max" else value < state.best_value)
        if better:
            state.best_value, state.best_epoch, state.wait = value, row["epoch"], 0
            state.best_metrics = dict(row)
            self.best_weights = self.model.get_weights()
            if self.writes:
                save_arrays(self.ckpt_dir / "best.npz", self.best_weights)
            return False
        state.wait += 1
        return self.patience is not None and state.wait >= self.patience

    def end_phase(self, phase: int) -> None:
        state = self.state
        if state.phase_done[str(phase)]:
            if phase == 2 and self.best_weights is not None:
                # Phase 2 was finished by an earlier process (a run from before `final.npz`):
                # the model gets the run's best weights, never the untrained ones it started with.
                self.model.set_weights(self.best_weights)
            if phase == 1 and not state.phase_done["2"] and self.ckpt_dir is not None:
                path = self.ckpt_dir / "phase1.npz"
                if path.exists() and state.epochs_done["2"] == 0:
                    self.model.set_weights(load_arrays(path))
            return
        if state.epochs_done[str(phase)] == 0:  # skipped: a resumed run may still do it
            return
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        state.phase_done[str(phase)] = True
        if self.writes:
            if phase == 1:
                save_arrays(self.ckpt_dir / "phase1.npz", self.model.get_weights())
            state.save(self.ckpt_dir)

    def finish(self) -> None:
        """Records the weights the model ends with, so that resuming a finished run keeps them."""
        state = self.state
        state.finished = True
        if self.writes:
            save_arrays(self.ckpt_dir / FINAL_WEIGHTS, self.model.get_weights())
            state.save(self.ckpt_dir)

    def restore_final(self) -> None:
        path = self.ckpt_dir / FINAL_WEIGHTS
        if not path.is_file():
            raise ValueError(
                f"The run in {self.directory} is marked finished but {path} is missing, so its "
                "final weights cannot be restored. Load the model saved by that run instead. "
                f"Received: directory={str(self.directory)!r}"
            )
        self.model.set_weights(load_arrays(path))

    def history(self) -> dict[str, list]:
        """One list per key over every epoch of both phases (NaN where an epoch lacks the key)."""
        rows = self.state.rows
        return {k: [row.get(k, float("nan")) for row in rows] for k in _columns(rows)}

    def best(self) -> tuple[int | None, dict]:
        """The best epoch and its logs; without validation, None and the last epoch's logs."""
        if self.state.best_epoch is None and self.state.rows:
            return None, dict(self.state.rows[-1])
        return self.state.best_epoch, dict(self.state.best_metrics)

    def write_log(self):
        if not self.writes:
            return
        rows = self.state.rows
        keys = _columns(rows)
        lines = [",".join(keys)] + [",".join(str(row.get(k, "")) for k in keys) for row in rows]
        atomic_write(self.log_dir / "history.csv", "\n".join(lines) + "\n")

    def note(self, line: str) -> None:
        """A line about the run that is not an epoch: printed unless silent, and logged."""
        if self.verbose == 1:
            print(line, flush=True)
        self.log_epoch(line)

    def log_epoch(self, line: str) -> None:
        """Appends one epoch's line to `logs/train.log` (and prints it in line mode)."""
        if self.verbose == 2:
            print(line, flush=True)
        if self.writes:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with open(self.log_dir / "train.log", "a", encoding="utf-8") as log:
                log.write(f"{stamp} {line}\n")


class _FullModelCheckpoint(PhaseCheckpoint):
    """A `PhaseCheckpoint` of the full model while its top trains on a cached trunk.

    Keras hands callbacks the model that `fit` trains (the top model); this one keeps the full
    model, which shares that model's layers and optimizer, so its files hold every weight and
    load into the full model whether or not a later run caches the trunk. It restores once,
    when called before `fit` (see `PhaseRun.fit_phase`).
    """

    def __init__(self, full_model, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.full_model, self.restored = full_model, False
        super().set_model(full_model)

    def set_model(self, model):
        super().set_model(self.full_model)

    def on_train_begin(self, logs=None):
        if not self.restored:
            self.restored = True
            super().on_train_begin(logs)


class _Monitor(keras.callbacks.Callback):
    """Per epoch: stop on a non-finite loss, record the merged history, track the best epoch,
    write the epoch's line."""

    def __init__(self, run: PhaseRun, phase: int, epochs: int, first_epoch_extra: float):
        super().__init__()
        self.run, self.phase, self.epochs, self.extra = run, phase, epochs, first_epoch_extra

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_now, self.t0 = epoch, time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get("loss")
        if value is not None and not math.isfinite(float(value)):
            self.run.nonfinite = (self.epoch_now, batch, "loss", float(value))
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        run, state = self.run, self.run.state
        logs = {k: float(v) for k, v in (logs or {}).items()}
        bad = [k for k in ("loss", "val_loss") if k in logs and not math.isfinite(logs[k])]
        if run.nonfinite is None and bad:
            run.nonfinite = (epoch, "end", bad[0], logs[bad[0]])
        if run.nonfinite is not None:
            self.model.stop_training = True
            return
        seconds = time.perf_counter() - self.t0
        if self.extra:
            seconds, self.extra = seconds + self.extra, 0.0
        row = {"epoch": len(state.rows), "phase": self.phase, "phase_epoch": epoch, **logs,
               "learning_rate": _current_lr(self.model), "time": seconds}
        logs.pop("learning_rate", None)
        if run.record(row, logs, _epoch_line(row, self.epochs)):
            self.model.stop_training = True


def _epoch_line(row: dict, epochs: int, title: str | None = None) -> str:
    """`phase 1 epoch 2/5 - loss 0.4123 - accuracy 0.8750 - val_loss ... - lr 9.05e-04 - 3.1s`;
    with a `title` (the convex head fit), `<title> - loss ... - 3.1s`."""
    parts = [title or f"phase {row['phase']} epoch {row['phase_epoch'] + 1}/{epochs}"]
    skip = {"epoch", "phase", "phase_epoch", "learning_rate", "time"}
    parts += [f"{key} {value:.4f}" for key, value in row.items() if key not in skip]
    parts += [] if title else [f"lr {row['learning_rate']:.3g}"]
    parts += [f"{row['time']:.1f}s"]
    return " - ".join(parts)


def _pick_monitor(logs: dict) -> tuple[str | None, str]:
    if "val_accuracy" in logs:
        return "val_accuracy", "max"
    for key in logs:
        if key.startswith("val_") and key != "val_loss":
            return key, "min" if "loss" in key or "error" in key else "max"
    if "val_loss" in logs:
        return "val_loss", "min"
    return None, "max"


def _current_lr(model) -> float:
    try:
        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except (AttributeError, TypeError, ValueError):
        return float("nan")




def _columns(rows: list[dict]) -> list[str]:
    """Every key of the history rows, in the order they first appear."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    return keys
