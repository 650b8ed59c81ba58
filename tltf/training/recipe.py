"""`fine_tune`: train the head on a frozen backbone, then fine-tune the top of the backbone.

The routine, in five statements (see `fine_tune`):

1. freeze the backbone, train the head (on cached backbone features when nothing random runs
   before the head);
2. unfreeze the top blocks, BatchNorm kept in inference mode;
3. recompile with a fresh optimizer and a lower learning rate, warmup then cosine decay;
4. fit again, with early stopping on the validation metric;
5. restore the best weights seen in either phase.

Every epoch writes an atomic checkpoint when `directory` is given, so `resume=True` continues
a run that was killed, with the optimizer state it had.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import tensorflow as tf

from tltf._io import atomic_write, load_arrays, save_arrays
from tltf._progress import keras_steps_without_retracing_warning, resolve_verbose
from tltf.data._batches import batches
from tltf.models import precision
from tltf.models.classifier import backbone_of, compile_classifier, spec_of
from tltf.training import distribute, runtime
from tltf.training._train_data import (
    cached_features,
    check_args,
    class_weight_of,
    num_batches,
    with_cardinality,
)
from tltf.training.checkpoint import (
    FINAL_WEIGHTS,
    PhaseCheckpoint,
    RunState,
    check_same_model,
    model_identity,
)
from tltf.training.freeze import freeze_backbone, parse_unfreeze
from tltf.training.freeze import unfreeze as unfreeze_layers
from tltf.training.schedules import DiscriminativeAdam, scaled_learning_rate, warmup_cosine

# freeze_backbone and unfreeze (from tltf.training.freeze) are re-exported so that `tltf` imports the
# whole training surface from here.
__all__ = ["FineTuneResult", "fine_tune", "freeze_backbone", "unfreeze"]

unfreeze = unfreeze_layers

HEAD_BASE_LR = 1e-3
FINETUNE_BASE_LR = 1e-4
DEFAULT_PATIENCE = 3


@dataclass
class FineTuneResult:
    """What `fine_tune` returns.

    Attributes:
        model: keras.Model. The trained classifier (the model passed in), holding the best
            weights.
        history: dict of lists, one entry per epoch over both phases: every Keras log
            (`loss`, `accuracy`, `val_loss`, `val_accuracy`, ...) plus `epoch` (0-based,
            counted over both phases), `phase` (1 or 2), `phase_epoch`, `learning_rate`
            (at the end of the epoch) and `time` (seconds, including validation and, for the
            first cached head epoch, the one pass that computes the features).
        best_epoch: int or None. Index into the history of the epoch whose weights the model
            holds (None without validation data: the model holds the last weights).
        best_metrics: dict. The logs of that epoch.
        monitor: str or None. The validation metric used for early stopping and best epoch.
        directory: Path or None. The run folder (`checkpoints/`, `logs/history.csv`).
        checkpoint_dir: Path or None. Where the per-epoch checkpoints are.
        log_dir: Path or None. Where `history.csv` is.
        cached_features: bool. Whether phase 1 trained the head on cached features.
    """

    model: keras.Model
    history: dict[str, list] = field(default_factory=dict)
    best_epoch: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    monitor: str | None = None
    directory: Path | None = None
    checkpoint_dir: Path | None = None
    log_dir: Path | None = None
    cached_features: bool = False


def fine_tune(
    model: keras.Model,
    train,
    val=None,
    *,
    head_epochs: int = 5,
    finetune_epochs: int = 10,
    unfreeze: str = "top_blocks:2",
    head_lr: float | str = "auto",
    finetune_lr: float | str = "auto",
    batch_size: int = 32,
    label_smoothing: float = 0.1,
    train_bn: bool = False,
    early_stopping: bool | int = True,
    class_weight: dict[int, float] | str | None = None,
    discriminative_lr: float | None = None,
    cache_features: bool | str = "auto",
    directory: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    mixed_precision: str = "auto",
    jit_compile: bool | str = "auto",
    strategy: tf.distribute.Strategy | None = None,
    seed: int | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    tensorboard: bool = False,
    verbose: int | str = "auto",
) -> FineTuneResult:
    """Fine-tunes a classifier in two phases: the head on a frozen backbone, then the top blocks.

    Phase 1 freezes the backbone and trains the head. When no augmentation layer runs in the
    model (`cache_features="auto"`), the backbone's features cannot change between epochs,
    so they are computed once and the head (the very same layer object) is trained on them:
    later head epochs cost a small fraction of the first. Phase 2 unfreezes the top of the
    backbone (`unfreeze`), keeps BatchNormalization layers in inference mode (unless
    `train_bn=True`), recompiles with a fresh optimizer and a lower learning rate, and trains
    the whole model. Each phase uses Adam with a learning rate scaled to the batch size,
    linear warmup over its first 10% of steps and cosine decay to 0, label smoothing, and
    early stopping on the validation metric; the model ends with the best weights of
    either phase. Either phase can be skipped with 0 epochs.

    Args:
        model: keras.Model. A classifier from `tltf.build_classifier`.
        train: `tltf.data.folder.ImageDataset` (its `prepare` is called with `batch_size` and
            `seed`), a batched `tf.data.Dataset` of `(images, labels)`, or a tuple
            `(images, labels)` of arrays (shuffled with `seed`).
        val: same types as `train`, or None (no early stopping, no best epoch). Defaults to
            None.
        head_epochs: int >= 0. Phase 1 epochs. Defaults to `5`.
        finetune_epochs: int >= 0. Phase 2 epochs. Defaults to `10`.
        unfreeze: str. What phase 2 unfreezes: `"top_blocks:N"`, `"fraction:F"`,
            `"from:<layer name>"` or `"all"` (see `tltf.unfreeze`). Defaults to
            `"top_blocks:2"`.
        head_lr: float or `"auto"`. Peak learning rate of phase 1; `"auto"` is 1e-3 at batch
            size 32, scaled by sqrt(global batch size / 32). Defaults to `"auto"`.
        finetune_lr: float or `"auto"`. Peak learning rate of phase 2; `"auto"` is 1e-4 at
            batch size 32, scaled the same way. Defaults to `"auto"`.
        batch_size: int. Images per replica per step. Defaults to `32`.
        label_smoothing: float in [0, 1). Defaults to `0.1`.
        train_bn: bool. Train BatchNorm layers in training mode in phase 2. Defaults to
            `False` (the right choice for pretrained backbones; see the training guide).
        early_stopping: bool or int. Stop a phase when the validation metric has not improved
            for this many epochs (`True` means 3); the best weights are restored in any case.
            Defaults to `True`.
        class_weight: dict `{class index: weight}`, `"balanced"` (from the training data's
            class counts, `ImageDataset` only) or None. Defaults to None.
        discriminative_lr: float in (0, 1] or None. In phase 2, the top unfrozen block trains
            at `finetune_lr * f`, the next one down at `finetune_lr * f**2`, and so on (the
            head at `finetune_lr`). Defaults to None (one rate).
        cache_features: bool or `"auto"`. Train the head on cached backbone features in
            phase 1. `"auto"`: when the model has no augmentation layer. Defaults to `"auto"`.
        directory: str, Path or None. Run folder for checkpoints (every epoch, atomic),
            `logs/history.csv` and `logs/train.log` (one line per epoch, appended). None
            writes nothing (no resume). Defaults to None.
        resume: bool. Continue the run saved in `directory`. The run must have been made
            with the same model (backbone, input size, class names in the same order):
            anything else raises, naming both values. Resuming a finished run trains nothing
            and leaves the model with the run's final weights. Defaults to `False`.
        overwrite: bool. Start a new run in a `directory` that holds an earlier run's
            checkpoints, deleting them. Without it (and without `resume`) such a directory
            is refused, so a run is never lost by accident. Defaults to `False`.
        mixed_precision: str. `"auto"`, `"float32"`, `"float16"` or `"bfloat16"` (see
            `tltf.models.precision.resolve_mixed_precision`). Defaults to `"auto"`.
        jit_compile: bool or `"auto"` (see `tltf.models.precision.resolve_jit_compile`). Defaults to
            `"auto"`.
        strategy: `tf.distribute.Strategy` or None (the current one). Defaults to None.
        seed: int or None. Seeds Python, NumPy, TensorFlow (and the data pipeline); with
            `tltf.training.runtime.set_seed(seed)` (op determinism) two runs give the same history on
            CPU. Defaults to None.
        callbacks: list of Keras callbacks, passed to every `fit` call. Defaults to None.
        tensorboard: bool. Write TensorBoard event files of both phases to
            `directory/tensorboard/phase1` and `phase2` (view them with
            `tensorboard --logdir DIRECTORY/tensorboard`). Needs `directory` and the
            `tensorboard` package (`pip install "tltf[tensorboard]"`). Defaults to `False`.
        verbose: 0 (silent), 1 (Keras' progress bar), 2 (one line per epoch) or `"auto"`:
            the bar when stdout is a terminal, one line per epoch when it is a file or a CI
            log. Defaults to `"auto"`.

    Returns:
        A `FineTuneResult`.

    Raises:
        ValueError: bad epochs, learning rates, batch size, `unfreeze`, `class_weight`,
            `verbose`, `tensorboard` without `directory`,
            `cache_features` with an augmentation layer, `resume` without `directory` or
            without a checkpoint there, `resume` with a model other than the run's, or data
            that is not batched `(images, labels)`.
        FileExistsError: `directory` holds an earlier run and neither `resume` nor
            `overwrite` is set.
        FloatingPointError: the loss became NaN or infinite; the model is left with the best
            weights so far and the last good checkpoint stays on disk.
        ImportError: `tensorboard=True` without the `tensorboard` package.

    Example:

    ```python
    import numpy as np, tensorflow as tf
    x = np.random.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    y = np.random.randint(0, 2, 16)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model = tltf.build_classifier("mobilenet_v2", 2, image_size=32, weights=None)
    result = tltf.fine_tune(model, ds, ds, head_epochs=1, finetune_epochs=1, verbose=0)
    result.history["phase"]  # [1, 2]
    ```
    """
    check_args(head_epochs, finetune_epochs, batch_size, label_smoothing, early_stopping,
                discriminative_lr, cache_features, resume, directory, head_lr, finetune_lr)
    parse_unfreeze(unfreeze)
    verbose = resolve_verbose(verbose)
    if tensorboard:
        _check_tensorboard(directory)
    if seed is not None:
        runtime.set_seed(seed, deterministic=False)
    strategy = distribute.resolve_strategy(strategy)
    policy = precision.resolve_mixed_precision(mixed_precision)
    work = runtime.match_runtime(
        model, dtype_policy=None if mixed_precision == "auto" and policy == "float32" else policy,
        strategy=strategy)
    global_batch = distribute.global_batch_size(batch_size, strategy)
    jit = precision.resolve_jit_compile(jit_compile, strategy=strategy)
    has_augmentation = "augmentation" in [layer.name for layer in work.layers]
    if cache_features is True and has_augmentation:
        raise ValueError(
            "`cache_features=True` would train the head on un-augmented features, but the model "
            "has an augmentation layer. Use cache_features='auto' or False. "
            f"Received: cache_features={cache_features!r}"
        )
    cached = bool(cache_features) and not has_augmentation and head_epochs > 0
    class_weight = class_weight_of(class_weight, train)
    num_classes = int(work.outputs[0].shape[-1])
    train_ds = batches(train, "train", training=True, batch_size=global_batch, seed=seed,
                       num_classes=num_classes, fit=True).data
    val_ds = None if val is None else batches(val, "val", training=False, batch_size=global_batch,
                                              seed=seed, num_classes=num_classes, fit=True).data
    # Known sizes: raises on an infinite dataset, counts at most once, and spares Keras the
    # "input ran out of data" warning it gives for a dataset of unknown size.
    train_ds = with_cardinality(train_ds)
    val_ds = None if val_ds is None else with_cardinality(val_ds)
    run = _Run(work, directory, resume, overwrite, strategy, verbose, callbacks, early_stopping,
               tensorboard)
    if run.state.finished and not (run.remaining(1, head_epochs)
                                   or run.remaining(2, finetune_epochs)):
        # A finished run stays finished: the model gets its final weights, nothing trains.
        run.restore_final()
        if work is not model:
            model.set_weights(work.get_weights())
        if getattr(model, "optimizer", None) is None:  # compiled, as fine_tune leaves a model
            compile_classifier(model, label_smoothing=label_smoothing)
        return run.result(model, cached)
    fit_kwargs = dict(class_weight=class_weight, jit=jit, label_smoothing=label_smoothing)

    if run.remaining(1, head_epochs):
        freeze_backbone(work)
        lr = _peak_lr(head_lr, HEAD_BASE_LR, global_batch)
        if cached:
            with strategy.scope():  # the head-only model must live where its optimizer will
                head_model, tr, va, extract_time = cached_features(work, train, train_ds, val_ds,
                                                                    global_batch, seed, verbose)
            run.fit_phase(1, head_model, tr, va, head_epochs, lr, None,
                          first_epoch_extra=extract_time, **fit_kwargs)
        else:
            run.fit_phase(1, work, train_ds, val_ds, head_epochs, lr, None, **fit_kwargs)
    run.end_phase(1)
    if run.remaining(2, finetune_epochs):
        unfreeze_layers(work, unfreeze, train_bn=train_bn)
        lr = _peak_lr(finetune_lr, FINETUNE_BASE_LR, global_batch)
        multipliers = _lr_multipliers(work, unfreeze, discriminative_lr)
        run.fit_phase(2, work, train_ds, val_ds, finetune_epochs, lr, multipliers, **fit_kwargs)
    run.end_phase(2)
    run.finish()
    if work is not model:
        model.set_weights(work.get_weights())
    return run.result(model, cached)


# ----------------------------------------------------------------------------------------------
# The run: phases, bookkeeping, callbacks.


class _Run:
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
                  class_weight, jit, label_smoothing, first_epoch_extra=0.0):
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
            cbs.append(keras.callbacks.TensorBoard(
                log_dir=str(self.directory / "tensorboard" / f"phase{phase}"), write_graph=False))
        if self.writes:
            cbs.append(PhaseCheckpoint(self.ckpt_dir, phase, state,
                                       skip=lambda: self.nonfinite is not None))
        elif self.ckpt_dir is not None:  # a worker that is not the chief: restore, never write
            cbs.append(distribute._restore_only(PhaseCheckpoint)(
                self.ckpt_dir, phase, state, skip=lambda: self.nonfinite is not None))
        cbs += self.user_callbacks
        # verbose=2 is the run's own line per epoch (printed by _Monitor), not Keras' two.
        with keras_steps_without_retracing_warning():
            train_model.fit(train_ds, validation_data=val_ds, epochs=epochs,
                            initial_epoch=state.epochs_done[str(phase)],
                            class_weight=class_weight, callbacks=cbs,
                            verbose=1 if self.verbose == 1 else 0, shuffle=False)
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

    def result(self, model, cached) -> FineTuneResult:
        rows = self.state.rows
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        history = {k: [row.get(k, float("nan")) for row in rows] for k in keys}
        best = self.state.best_epoch
        metrics = dict(self.state.best_metrics)
        if best is None and rows:
            best, metrics = None, dict(rows[-1])
        return FineTuneResult(model=model, history=history, best_epoch=best,
                              best_metrics=metrics, monitor=self.state.monitor,
                              directory=self.directory, checkpoint_dir=self.ckpt_dir,
                              log_dir=self.log_dir, cached_features=cached)

    def write_log(self):
        if not self.writes:
            return
        rows = self.state.rows
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        lines = [",".join(keys)] + [",".join(str(row.get(k, "")) for k in keys) for row in rows]
        atomic_write(self.log_dir / "history.csv", "\n".join(lines) + "\n")

    def log_epoch(self, line: str) -> None:
        """Appends one epoch's line to `logs/train.log` (and prints it in line mode)."""
        if self.verbose == 2:
            print(line, flush=True)
        if self.writes:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with open(self.log_dir / "train.log", "a", encoding="utf-8") as log:
                log.write(f"{stamp} {line}\n")


class _Monitor(keras.callbacks.Callback):
    """Per epoch: stop on a non-finite loss, record the merged history, track the best epoch,
    write the epoch's line."""

    def __init__(self, run: _Run, phase: int, epochs: int, first_epoch_extra: float):
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
        state.rows.append(row)
        state.epochs_done[str(self.phase)] = epoch + 1
        self._track_best(row, logs)
        run.write_log()
        run.log_epoch(_epoch_line(row, self.epochs))

    def _track_best(self, row, logs):
        run, state = self.run, self.run.state
        if state.monitor is None:
            state.monitor, state.mode = _pick_monitor(logs)
        value = logs.get(state.monitor) if state.monitor else None
        if value is None:
            return
        better = state.best_value is None or (
            value > state.best_value if state.mode == "max" else value < state.best_value)
        if better:
            state.best_value, state.best_epoch, state.wait = value, row["epoch"], 0
            state.best_metrics = dict(row)
            run.best_weights = run.model.get_weights()
            if run.writes:
                save_arrays(run.ckpt_dir / "best.npz", run.best_weights)
        else:
            state.wait += 1
            if run.patience is not None and state.wait >= run.patience:
                self.model.stop_training = True


def _epoch_line(row: dict, epochs: int) -> str:
    """`phase 1 epoch 2/5 - loss 0.4123 - accuracy 0.8750 - val_loss ... - lr 9.05e-04 - 3.1s`."""
    parts = [f"phase {row['phase']} epoch {row['phase_epoch'] + 1}/{epochs}"]
    skip = {"epoch", "phase", "phase_epoch", "learning_rate", "time"}
    parts += [f"{key} {value:.4f}" for key, value in row.items() if key not in skip]
    parts += [f"lr {row['learning_rate']:.3g}", f"{row['time']:.1f}s"]
    return " - ".join(parts)


def _check_tensorboard(directory) -> None:
    if directory is None:
        raise ValueError(
            "`tensorboard=True` writes event files into the run folder, so it needs "
            "`directory`. Pass directory=... or tensorboard=False. Received: directory=None"
        )
    try:
        import tensorboard  # noqa: F401  (Keras' callback writes; this package reads them)
    except ImportError:
        raise ImportError(
            "`tensorboard=True` needs the tensorboard package, which TensorFlow no longer "
            'installs. Install it with: pip install "tltf[tensorboard]"'
        ) from None


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


# ----------------------------------------------------------------------------------------------
# Learning rates.


def _peak_lr(option, base, global_batch) -> float:
    return scaled_learning_rate(base, global_batch) if option == "auto" else float(option)


def _lr_multipliers(model, how, factor):
    """Variable path -> learning-rate factor: f for the top unfrozen block, f**2 below, ..."""
    if factor is None or factor == 1.0:
        return None
    backbone = backbone_of(model)
    layers = backbone.layers
    spec = spec_of(model)
    from tltf.backbones.registry import block_start_indices

    starts = block_start_indices(spec, backbone) if spec is not None else [0]
    starts = sorted(set([0, *starts]))
    multipliers = {}
    for depth, start in enumerate(reversed(starts)):
        end = len(layers) if depth == 0 else list(reversed(starts))[depth - 1]
        for layer in layers[start:end]:
            for variable in layer.trainable_weights:
                multipliers[variable.path] = factor ** (depth + 1)
    return multipliers
