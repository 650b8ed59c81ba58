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

from dataclasses import dataclass, field
from pathlib import Path

import keras
import tensorflow as tf

from tltf._progress import resolve_verbose
from tltf.data._batches import batches
from tltf.models import precision
from tltf.models.classifier import compile_classifier
from tltf.models.parts import head_of
from tltf.training import _head_fit, _store, _trunk, distribute, runtime
from tltf.training._phases import PhaseRun
from tltf.training._train_data import (
    cached_features,
    check_args,
    check_tensorboard,
    class_weight_of,
    feature_place,
    images_at_most,
    mirrored,
    num_examples,
    with_cardinality,
)
from tltf.training.freeze import freeze_backbone, resolve_unfreeze
from tltf.training.freeze import unfreeze as unfreeze_layers
from tltf.training.schedules import _block_lr_multipliers, scaled_learning_rate

__all__ = ["FineTuneResult", "fine_tune"]

HEAD_BASE_LR = 1e-3
FINETUNE_BASE_LR = 1e-4
FINETUNE_EPOCHS = 10
# `finetune_epochs="auto"` skips phase 2 after a convex head fit without validation data
# below this many training images a class (see the argument's documentation).
SMALL_DATA_PER_CLASS = 100


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
        head_fit: str or None. How phase 1 trained the head: `"convex"` (one
            cross-validated logistic regression, one history row whose `learning_rate` is
            0), `"adam"` (`head_epochs` Adam epochs), or None (no phase 1 in the history).
        head_c: float or None. For a convex phase 1, the C chosen by cross-validation
            (inverse L2 strength on standardised features, as in scikit-learn).
        trunk_cache: str or None. The backbone layer at whose output phase 2 cached the
            frozen trunk (`trunk_cache`), or None when phase 2 trained the full model or did
            not run in this call.
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
    head_fit: str | None = None
    head_c: float | None = None
    trunk_cache: str | None = None


def fine_tune(
    model: keras.Model,
    train,
    val=None,
    *,
    head_epochs: int = 5,
    finetune_epochs: int | str = "auto",
    head_fit: str = "auto",
    unfreeze: str = "auto",
    head_lr: float | str = "auto",
    finetune_lr: float | str = "auto",
    batch_size: int = 32,
    label_smoothing: float = 0.1,
    train_bn: bool = False,
    early_stopping: bool | int = True,
    class_weight: dict[int, float] | str | None = None,
    discriminative_lr: float | None = None,
    cache_features: bool | str = "auto",
    trunk_cache: bool | str = "auto",
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
    so they are computed once and the head (the very same layer object) is trained on them.
    A linear single-label head is then fitted in one step as the L2-regularised logistic
    regression it is, its strength chosen by cross-validation (`head_fit`); other heads
    train for `head_epochs` Adam epochs. Phase 2 unfreezes the top of the
    backbone (`unfreeze`), keeps BatchNormalization layers in inference mode (unless
    `train_bn=True`), recompiles with a fresh optimizer and a lower learning rate, and trains
    the whole model. Each Adam phase uses a learning rate scaled to the batch size,
    linear warmup over its first 10% of steps and cosine decay to 0, label smoothing, and
    early stopping on the validation metric; the model ends with the best weights of
    either phase. Either phase can be skipped with 0 epochs.

    Args:
        model: keras.Model. A classifier from `tltf.build_classifier`.
        train: `tltf.ImageDataset` (its `prepare` is called with `batch_size` and
            `seed`), a batched `tf.data.Dataset` of `(images, labels)`, or a tuple
            `(images, labels)` of arrays (shuffled with `seed`).
        val: same types as `train`, or None (no early stopping, no best epoch). Defaults to
            None.
        head_epochs: int >= 0. Phase 1 epochs when the head trains with Adam; 0 skips
            phase 1 (any other value gives one row when the head is fitted convexly).
            Defaults to `5`.
        finetune_epochs: int >= 0 or `"auto"`. Phase 2 epochs. `"auto"` is 10, or 0 when
            phase 1 fitted the head convexly (`head_fit`), `val` is None and there are
            fewer than 100 training images a class: without validation data nothing can
            stop phase 2 or choose its best epoch, and on such data it made the fitted head
            worse. Measured (MobileNetV2, 160 px, 3 seeds, no validation data): on 20
            images a class, 10 phase-2 epochs lowered the accuracy of the fitted head on
            every seed, from 80.3% to 77.6% on flowers and from 94.8% to 93.3% on cats and
            dogs; 3 epochs, a 10 times lower learning rate or a head kept fixed in phase 2
            lowered it too; on 100 a class phase 2 changed nothing on average. Pass
            `val` (early stopping then guards phase 2) or an int to fine-tune anyway.
            Defaults to `"auto"`.
        head_fit: str. How phase 1 trains the head. `"convex"`: fit it as a multinomial
            logistic regression on the cached features (L-BFGS on standardised features,
            folded back into the Dense weights; the L2 strength chosen by stratified
            `min(5, smallest class count)`-fold cross-validation on the training data, by
            log loss; `class_weight` respected; `head_lr` and `label_smoothing` unused). The
            loss is convex, so this reaches the best head where a few Adam epochs stop
            short: on 20 images a class (MobileNetV2, 160 px) the head scored 79% on
            flowers and 95% on cats and dogs against 44% and 72% after 5 Adam epochs.
            Needs cached features, a linear (`hidden_units=None`) single-label head, a
            single worker, and 2 training images of every class; otherwise it raises.
            `"adam"`: `head_epochs` Adam epochs. `"auto"`: `"convex"` when it can run and
            training images x classes <= 1,000,000, else `"adam"` (so an augmentation
            layer, a hidden layer, a multi-label head or a multi-worker strategy keep
            Adam). A resumed run whose phase 1 began with Adam goes on with Adam.
            Defaults to `"auto"`.
        unfreeze: str. What phase 2 unfreezes: `"top_blocks:N"`, `"fraction:F"`,
            `"from:<layer name>"` or `"all"` (see `tltf.unfreeze`), or `"auto"`:
            `"top_blocks:4"` with validation data (which keeps the best epoch and stops a
            phase that no longer improves), `"top_blocks:2"` without. Defaults to `"auto"`.
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
        trunk_cache: bool or `"auto"`. Phase 2 on a cached trunk: the frozen part's output
            at the unfreeze boundary is computed once and only the model's own layers above
            it and the head train on it (the same result as the full model, up to float
            rounding and the epochs' image order). Needs no augmentation layer, nothing
            random below the boundary, one tensor there that all above reads, one worker, no
            `callbacks` (they would see only the top model) and outputs within a quarter of
            free memory (see the training guide). `"auto"`:
            when possible, else the full model, saying why. Defaults to `"auto"`.
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
        callbacks: list of Keras callbacks, passed to every `fit` call (the convex head
            fit makes none). Defaults to None.
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
            `head_fit` (or `"convex"` where it cannot run),
            `verbose`, `tensorboard` without `directory`,
            `cache_features` with an augmentation layer, `trunk_cache=True` where the
            trunk cannot be cached (see above), `resume` without `directory` or
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
    _head_fit.check_head_fit(head_fit)
    _trunk.check_option(trunk_cache)
    unfreeze = resolve_unfreeze(unfreeze, validated=val is not None)
    verbose = resolve_verbose(verbose)
    if tensorboard:
        check_tensorboard(directory)
    if seed is not None:
        runtime.set_seed(seed, deterministic=False)
    strategy = distribute.resolve_strategy(strategy)
    policy = precision.resolve_mixed_precision(mixed_precision)
    work = runtime.match_runtime(
        model, dtype_policy=None if mixed_precision == "auto" and policy == "float32" else policy,
        strategy=strategy)
    global_batch = distribute.global_batch_size(batch_size, strategy)
    jit = precision.resolve_jit_compile(jit_compile, strategy=strategy)
    # A horizontal flip alone is cached exactly (both views of every image); any other
    # augmentation layer gives new features every epoch.
    mirror = mirrored(work)
    has_augmentation = "augmentation" in [layer.name for layer in work.layers] and not mirror
    if cache_features is True and has_augmentation:
        raise ValueError(
            "`cache_features=True` would train the head on un-augmented features, but the model "
            "has an augmentation layer (other than a horizontal flip alone, which is cached "
            "exactly). Use cache_features='auto' or False. "
            f"Received: cache_features={cache_features!r}"
        )
    cached = bool(cache_features) and not has_augmentation and head_epochs > 0
    fit_plan = _head_fit.plan(head_fit, work, cached, strategy) if head_epochs else "adam"
    cut, no_cut = (_trunk.plan(trunk_cache, work, unfreeze, has_augmentation, strategy,
                               callbacks)
                   if finetune_epochs else (None, ""))
    class_weight = class_weight_of(class_weight, train)
    num_classes = int(work.outputs[0].shape[-1])
    # A decoded set too large for memory is cached on the run folder's disk (cache="auto");
    # with several workers, each decodes (and caches) only its share of the files.
    shard = distribute.worker_shard(strategy)
    train_ds = batches(train, "train", training=True, batch_size=global_batch, seed=seed,
                       num_classes=num_classes, fit=True, cache_dir=directory, shard=shard).data
    val_ds = None if val is None else batches(val, "val", training=False, batch_size=global_batch,
                                              seed=seed, num_classes=num_classes, fit=True,
                                              cache_dir=directory).data
    # Known sizes: raises on an infinite dataset, counts at most once, and spares Keras the
    # "input ran out of data" warning it gives for a dataset of unknown size. A worker's
    # share keeps the size tf.data knows: counting it would give 1/num_workers of the steps.
    train_ds = train_ds if shard[0] > 1 else with_cardinality(train_ds)
    val_ds = None if val_ds is None else with_cardinality(val_ds)
    run = PhaseRun(work, directory, resume, overwrite, strategy, verbose, callbacks, early_stopping,
               tensorboard)
    if run.state.finished and not (run.remaining(1, head_epochs) or run.remaining(
            2, _phase2_epochs(finetune_epochs, run, val, train, train_ds, num_classes))):
        # A finished run stays finished: the model gets its final weights, nothing trains.
        run.restore_final()
        if work is not model:
            model.set_weights(work.get_weights())
        if getattr(model, "optimizer", None) is None:  # compiled, as fine_tune leaves a model
            compile_classifier(model, label_smoothing=label_smoothing)
        return _result(run, model, cached)
    fit_kwargs = dict(class_weight=class_weight, jit=jit, label_smoothing=label_smoothing)
    trunk = None if cut is None else _trunk.TrunkCache(
        trunk_cache, work, cut, train, train_ds, val, val_ds, global_batch, seed, verbose,
        run.note, directory)

    if run.remaining(1, head_epochs):
        freeze_backbone(work)
        lr = _peak_lr(head_lr, HEAD_BASE_LR, global_batch)
        place = feature_place(work, train, train_ds, val_ds, global_batch, directory, dict(
            cache_features=cache_features, head_fit=head_fit), run.note,
            mirror=mirror) if cached else None
        cached = place is not None
        if cached:
            with strategy.scope():  # the head-only model must live where its optimizer will
                # One pass of the images through the frozen trunk serves both phases: phase
                # 1's features are the layers above the cut run on its stored outputs.
                shared = (trunk.outputs(for_phase1=True)
                          if trunk is not None and _phase2_will_run(
                              finetune_epochs, val, fit_plan, train, train_ds, global_batch,
                              num_classes) else None)
                c = cached_features(work, train, train_ds, val_ds, global_batch, seed, verbose,
                                    place, shard, trunk=shared, mirror=mirror)
            # A resumed phase 1 that began with Adam epochs goes on with them.
            if (fit_plan == "convex" and not run.state.epochs_done["1"]
                    and _head_fit.data_allows(head_fit, c.y, num_classes, c.x)):
                run.fit_convex(c.head_model, c.train, c.val, lambda: _head_fit.fit_linear_head(
                    head_of(work), c.x, c.y, class_weight=class_weight, seed=seed,
                    mirror=c.x_mirror),
                    jit=jit, label_smoothing=label_smoothing, first_epoch_extra=c.seconds)
            else:
                run.fit_phase(1, c.head_model, c.train, c.val, head_epochs, lr, None,
                              first_epoch_extra=c.seconds, **fit_kwargs)
            _store.remove(place)
        else:
            run.fit_phase(1, work, train_ds, val_ds, head_epochs, lr, None, **fit_kwargs)
    run.end_phase(1)
    phase2_epochs = _phase2_epochs(finetune_epochs, run, val, train, train_ds, num_classes)
    if finetune_epochs == "auto" and phase2_epochs == 0:
        run.note(f"phase 2 skipped (finetune_epochs='auto'): no validation data and fewer than "
                 f"{SMALL_DATA_PER_CLASS} training images a class, where fine-tuning made the "
                 "fitted head worse; pass val, or finetune_epochs=N to fine-tune anyway")
    if run.remaining(2, phase2_epochs):
        unfreeze_layers(work, unfreeze, train_bn=train_bn)
        lr = _peak_lr(finetune_lr, FINETUNE_BASE_LR, global_batch)
        multipliers = _block_lr_multipliers(work, discriminative_lr)
        if cut is None and trunk_cache == "auto":
            run.note(f"phase 2: training the full model (trunk_cache='auto': {no_cut})")
        run.fit_phase(2, work, train_ds, val_ds, phase2_epochs, lr, multipliers, trunk=trunk,
                      **fit_kwargs)
    if trunk is not None:  # computed for a phase 2 that did not run (or ran and freed it)
        trunk.release()
    run.end_phase(2)
    run.finish()
    if work is not model:
        model.set_weights(work.get_weights())
    return _result(run, model, cached)


def _result(run: PhaseRun, model: keras.Model, cached: bool) -> FineTuneResult:
    best_epoch, best_metrics = run.best()
    state = run.state
    head_fit = ("convex" if state.head_c is not None
                else "adam" if any(row["phase"] == 1 for row in state.rows) else None)
    return FineTuneResult(model=model, history=run.history(), best_epoch=best_epoch,
                          best_metrics=best_metrics, monitor=state.monitor,
                          directory=run.directory, checkpoint_dir=run.ckpt_dir,
                          log_dir=run.log_dir, cached_features=cached, head_fit=head_fit,
                          head_c=state.head_c, trunk_cache=run.trunk_layer)


def _phase2_epochs(option, run: PhaseRun, val, train, train_ds, num_classes: int) -> int:
    """`finetune_epochs` as a number: `"auto"` is 10, or 0 after a convex head fit with no
    validation data and fewer than `SMALL_DATA_PER_CLASS` training images a class."""
    if option != "auto":
        return option
    if val is not None or run.state.head_c is None:
        return FINETUNE_EPOCHS
    small = num_examples(train, train_ds) < SMALL_DATA_PER_CLASS * num_classes
    return 0 if small else FINETUNE_EPOCHS


def _phase2_will_run(option, val, fit_plan, train, train_ds, batch_size, num_classes) -> bool:
    """Whether phase 2 will run, as far as is known before phase 1: not when `_phase2_epochs`
    will make `"auto"` 0 (a convex head fit, no validation data, few images a class)."""
    if option != "auto" or val is not None or fit_plan != "convex":
        return True
    return images_at_most(train, train_ds, batch_size) >= SMALL_DATA_PER_CLASS * num_classes


# ----------------------------------------------------------------------------------------------
# Learning rates.


def _peak_lr(option, base, global_batch) -> float:
    return scaled_learning_rate(base, global_batch) if option == "auto" else float(option)
