"""Time to accuracy: the TensorFlow tutorial's fine-tuning recipe against `tltf.fine_tune`.

On ../shared/datasets/cats_and_dogs_filtered, MobileNetV2 at 160 px with ImageNet weights
(from ../shared/keras_weights, through a seeded KERAS_HOME), in one process, side by side:

(a)  the recipe of the TensorFlow tutorial "Transfer learning and fine-tuning" as published:
     augmentation layers (flip, rotation 0.2) in the model, 10 frozen epochs with Adam 1e-4,
     then `base_model.trainable = True` with layers below 100 frozen, 10 epochs RMSprop 1e-5
     (BatchNorm layers trainable: under Keras 3 they then run in training mode);
(a') the same recipe with BatchNorm layers kept frozen in phase 2;
(b)  `tltf.fine_tune` with its defaults on `tltf.build_classifier("mobilenet_v2", ...)`
     (phase 2 on a cached trunk: the frozen layers' output at the unfreeze boundary is
     computed once and only the top blocks and the head train on it);
(b') the same with `trunk_cache=False` (phase 2 trains the full model every epoch);
(c)  `tltf.fine_tune` with its defaults on `build_classifier(..., augment="flip")`: the
     recipe's flip, which both phases cache exactly (both views of every training image;
     each epoch draws one), where any other augmentation layer stops both caches.

Printed for each: wall time, final and best validation accuracy, and the wall time at which
each first reached (a')'s final validation accuracy; then, for (b) and (b'), the phase-2
epoch times (the first cached epoch includes the pass that computes the trunk outputs) and
the time at which (b) reached (b')'s final accuracy. `--tltf-only` runs (b), (b') and (c)
alone. Data decoding (shared by all runs) is
not timed. The tutorial splits 20% of the validation images off as a test set; here all
validation images are used for validation, the same for the three runs.

Run (about 40-90 minutes on 2 CPU cores; `--quick` is ~10x shorter):

    .venv/bin/python benchmarks/time_to_accuracy.py
    .venv/bin/python benchmarks/time_to_accuracy.py --train-per-class 300 --val-per-class 200 \
        --epochs-scale 0.5
    .venv/bin/python benchmarks/time_to_accuracy.py --quick --tltf-only
    .venv/bin/python benchmarks/time_to_accuracy.py --skip-published   # (a'), (b), (b') only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IMG = 160


def _seed_keras_home() -> None:
    """Seeds KERAS_HOME from ../shared/keras_weights (before keras is imported)."""
    sys.path.insert(0, str(ROOT / "tools"))
    from seed_keras_home import use_shared_weights

    if use_shared_weights() is None:
        raise SystemExit(f"no weights in {SHARED / 'keras_weights'}; this benchmark needs them")


def _load(split: str, per_class: int | None):
    import numpy as np
    import tensorflow as tf

    folder = SHARED / "datasets" / "cats_and_dogs_filtered" / split
    images, labels = [], []
    for label, cls in enumerate(("cats", "dogs")):
        files = sorted((folder / cls).glob("*.jpg"))[:per_class]
        for f in files:
            img = tf.io.decode_jpeg(tf.io.read_file(str(f)), channels=3)
            img = tf.image.resize(img, (IMG, IMG))  # bilinear, as image_dataset_from_directory
            images.append(np.asarray(img, dtype="float32"))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype="int32")


class _Clock:
    """Keras callback: wall time and val accuracy at the end of every epoch."""

    def __init__(self, start: float):
        import keras

        outer = self

        class CB(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                outer.points.append((time.perf_counter() - outer.start,
                                     float(logs.get("val_binary_accuracy", logs.get("val_accuracy")))))
                print(f"    epoch {len(outer.points)}: t={outer.points[-1][0]:.0f}s "
                      f"val_acc={outer.points[-1][1]:.4f}", flush=True)

        self.start, self.points, self.callback = start, [], CB()


def tutorial(train, val, epochs1, epochs2, *, freeze_bn: bool, seed: int):
    """The published recipe, verbatim where Keras 3 allows."""
    import keras

    keras.utils.set_random_seed(seed)
    data_augmentation = keras.Sequential([keras.layers.RandomFlip("horizontal"),
                                          keras.layers.RandomRotation(0.2)])
    preprocess_input = keras.applications.mobilenet_v2.preprocess_input
    base_model = keras.applications.MobileNetV2(input_shape=(IMG, IMG, 3), include_top=False,
                                                weights="imagenet")
    base_model.trainable = False
    inputs = keras.Input(shape=(IMG, IMG, 3))
    x = data_augmentation(inputs)
    x = preprocess_input(x)
    x = base_model(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(1)(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-4),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy(threshold=0, name="accuracy")])
    clock = _Clock(time.perf_counter())
    history = model.fit(train, epochs=epochs1, validation_data=val, callbacks=[clock.callback],
                        verbose=0)
    base_model.trainable = True
    for layer in base_model.layers[:100]:
        layer.trainable = False
    if freeze_bn:
        for layer in base_model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    model.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  optimizer=keras.optimizers.RMSprop(learning_rate=1e-5),
                  metrics=[keras.metrics.BinaryAccuracy(threshold=0, name="accuracy")])
    model.fit(train, epochs=epochs1 + epochs2, initial_epoch=len(history.epoch),
              validation_data=val, callbacks=[clock.callback], verbose=0)
    return clock.points


def tltf_defaults(train, val, head_epochs, finetune_epochs, *, seed: int, build=None,
                  **options):
    import keras

    sys.path.insert(0, str(ROOT))
    import tltf
    from tltf.training.recipe import fine_tune

    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    model = tltf.build_classifier("mobilenet_v2", 2, image_size=IMG, **(build or {}))
    kwargs = dict(options)
    if head_epochs is not None:
        kwargs.update(head_epochs=head_epochs, finetune_epochs=finetune_epochs)
    result = fine_tune(model, train, val, seed=seed, verbose=0, **kwargs)
    build = time.perf_counter() - start - sum(result.history["time"])
    t, points = build, []
    for seconds, acc, phase in zip(result.history["time"], result.history["val_accuracy"],
                                   result.history["phase"], strict=True):
        t += seconds
        points.append((t, acc))
        print(f"    epoch {len(points)} (phase {phase}): t={t:.0f}s val_acc={acc:.4f}", flush=True)
    return points, result


def _phase2_epochs(result):
    """Seconds of every phase-2 epoch of a `fine_tune` result."""
    return [t for t, phase in zip(result.history["time"], result.history["phase"], strict=True)
            if phase == 2]


def _report_trunk(runs, results):
    """Phase-2 epoch cost with and without the trunk cache, and (b)'s time to (b')'s accuracy."""
    import statistics

    print("\nphase-2 epochs (s): first (with the trunk pass when cached), median of the others")
    medians = {}
    for name, result in results.items():
        times = _phase2_epochs(result)
        if not times:
            print(f"{name:28s} no phase 2")
            continue
        medians[name] = statistics.median(times[1:]) if len(times) > 1 else times[0]
        print(f"{name:28s} first {times[0]:6.1f}  others {medians[name]:6.2f}  "
              f"({len(times)} epochs, cut at {result.trunk_cache or 'none: full model'})")
    cached, full = "(b) tltf.fine_tune", "(b') tltf, trunk_cache=False"
    if len(medians) == 2:
        print(f"a cached phase-2 epoch costs {medians[cached] / medians[full]:.2f} of a "
              "full-model one")
    target = runs[full][-1][1]
    reach = {name: _first_reach(runs[name], target) for name in (cached, full)}
    print(f"time to (b')'s final val acc {target:.4f}: " + ", ".join(
        f"{name} {'never' if t is None else f'{t:.0f}s'}" for name, t in reach.items()))
    print("wall time and final val acc: " + ", ".join(
        f"{name} {runs[name][-1][0]:.0f}s {runs[name][-1][1]:.4f}" for name in (cached, full)))


def _first_reach(points, target):
    return next((t for t, acc in points if acc >= target - 1e-9), None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-per-class", type=int, default=None,
                        help="training images per class (default: all 1000)")
    parser.add_argument("--val-per-class", type=int, default=None,
                        help="validation images per class (default: all 500)")
    parser.add_argument("--epochs-scale", type=float, default=1.0,
                        help="multiply every epoch count (the recipe's 10+10, tltf's 5+10)")
    parser.add_argument("--quick", action="store_true",
                        help="= --train-per-class 200 --val-per-class 100 --epochs-scale 0.4")
    parser.add_argument("--tltf-only", action="store_true",
                        help="run (b) and (b') only, not the tutorial's recipe")
    parser.add_argument("--skip-published", action="store_true",
                        help="leave out (a), the recipe with BatchNorm in training mode (the "
                             "targets are measured against (a') alone)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.train_per_class, args.val_per_class, args.epochs_scale = 200, 100, 0.4
    if not (SHARED / "datasets" / "cats_and_dogs_filtered").is_dir():
        print(f"needs {SHARED}/datasets/cats_and_dogs_filtered", file=sys.stderr)
        return 2
    _seed_keras_home()
    import tensorflow as tf

    t0 = time.perf_counter()
    xt, yt = _load("train", args.train_per_class)
    xv, yv = _load("validation", args.val_per_class)
    print(f"decoded {len(yt)} train / {len(yv)} val images at {IMG} px in "
          f"{time.perf_counter() - t0:.0f}s (not timed below)", flush=True)
    bs = args.batch_size
    train = tf.data.Dataset.from_tensor_slices((xt, yt)).shuffle(
        len(yt), seed=args.seed, reshuffle_each_iteration=True).batch(bs).prefetch(2)
    val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(bs).prefetch(2)
    e = args.epochs_scale
    r1, r2 = max(1, round(10 * e)), max(1, round(10 * e))
    h, f = max(1, round(5 * e)), max(1, round(10 * e))
    runs, results = {}, {}
    if not args.tltf_only and not args.skip_published:
        print(f"(a) tutorial as published: {r1}+{r2} epochs", flush=True)
        runs["(a) tutorial"] = tutorial(train, val, r1, r2, freeze_bn=False, seed=args.seed)
    if not args.tltf_only:
        print(f"(a') tutorial, BN frozen in phase 2: {r1}+{r2} epochs", flush=True)
        runs["(a') tutorial+frozen BN"] = tutorial(train, val, r1, r2, freeze_bn=True,
                                                   seed=args.seed)
    epochs = (None, None) if e == 1.0 else (h, f)
    for name, options in (("(b) tltf.fine_tune", {}),
                          ("(b') tltf, trunk_cache=False", {"trunk_cache": False}),
                          ("(c) tltf, augment='flip'", {"build": {"augment": "flip"}})):
        print(f"{name}: {h}+{f} epochs", flush=True)
        runs[name], results[name] = tltf_defaults(train, val, *epochs, seed=args.seed, **options)

    if not args.tltf_only:
        target = runs["(a') tutorial+frozen BN"][-1][1]
        ref_time = runs["(a') tutorial+frozen BN"][-1][0]
        print(f"\ntarget = final val acc of (a') = {target:.4f}; (a') wall time {ref_time:.0f}s")
        print(f"{'run':28s} {'wall s':>7s} {'final':>7s} {'best':>7s} "
              f"{'t(reach target) s':>18s}")
        for name, points in runs.items():
            reach = _first_reach(points, target)
            print(f"{name:28s} {points[-1][0]:7.0f} {points[-1][1]:7.4f} "
                  f"{max(a for _, a in points):7.4f} "
                  f"{'never' if reach is None else f'{reach:.0f}':>18s}")
        for name in ("(b) tltf.fine_tune", "(c) tltf, augment='flip'"):
            points = runs[name]
            reach = _first_reach(points, target)
            for share in (3, 8):
                ok = reach is not None and reach <= ref_time / share and points[-1][1] >= target
                print(f"{name}: target met (reach <= 1/{share} of (a') wall time and final >= "
                      f"(a') final): {ok}" + ("" if reach is None else
                                              f" ({reach:.0f}s = 1/{ref_time / reach:.1f})"))
    _report_trunk(runs, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
