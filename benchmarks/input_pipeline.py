"""Input pipeline throughput: Keras' image_dataset_from_directory vs tltf vs a training step.

Prints images/second, side by side and in one run, for
  (a) `keras.utils.image_dataset_from_directory` + the Keras transfer-learning guide's
      augmentation (RandomFlip + RandomRotation(0.1)) mapped in tf.data;
  (b) tltf: `load_image_folder` (validation pass, cold and cached) and
      `ImageDataset.prepare(training=True, augment="light")`, first epoch (decode) and cached
      epochs; also with augmentation left to the model (`augment=None` here);
  (c) the training-step rate of mobilenet_v2 at 160 px on this machine (frozen backbone as in
      phase 1, and fully unfrozen), fed from memory.
and the ratios against the targets: first epoch >= 1.5x (a), cached >= 5x (a), and every
tltf rate above (c) so training is never input-bound.

Usage:
    .venv/bin/python benchmarks/input_pipeline.py [--data ../shared/datasets/cats_and_dogs_filtered]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cats_and_dogs_filtered"
)
SIZE = 160
BATCH = 32


def _rate(ds, limit=None) -> tuple[float, int]:
    n = 0
    start = time.perf_counter()
    for x, _ in ds:
        n += int(x.shape[0])
        if limit and n >= limit:
            break
    return n / (time.perf_counter() - start), n


def keras_baseline(train_dir: Path):
    import keras
    import tensorflow as tf

    ds = keras.utils.image_dataset_from_directory(
        train_dir, image_size=(SIZE, SIZE), batch_size=BATCH, shuffle=True, seed=0, verbose=False
    )
    augmentation = keras.Sequential(
        [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.1)]
    )
    ds = ds.map(
        lambda x, y: (augmentation(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def tltf_load(root: Path, cache_dir: Path):
    from tltf.data.folder import load_image_folder

    start = time.perf_counter()
    train, _ = load_image_folder(root, image_size=SIZE, cache_dir=cache_dir)
    return train, time.perf_counter() - start


def training_rate(trainable: bool, steps: int = 12) -> float:
    import keras
    import numpy as np
    import tensorflow as tf

    try:
        from tltf.models.classifier import build_classifier, compile_classifier
        from tltf.models.parts import backbone_of

        model = build_classifier("mobilenet_v2", 2, image_size=SIZE, weights=None)
        backbone_of(model).trainable = trainable
        if trainable:  # as tltf's unfreeze does: BatchNorm stays in inference mode
            for layer in backbone_of(model).layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        compile_classifier(model, learning_rate=1e-4)
    except ImportError:
        base = keras.applications.MobileNetV2(
            input_shape=(SIZE, SIZE, 3), include_top=False, weights=None, pooling="avg"
        )
        base.trainable = trainable
        inputs = keras.Input((SIZE, SIZE, 3))
        x = keras.applications.mobilenet_v2.preprocess_input(inputs)
        outputs = keras.layers.Dense(2, activation="softmax")(base(x, training=False))
        model = keras.Model(inputs, outputs)
        model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.uniform(0, 255, (BATCH, SIZE, SIZE, 3)).astype("float32")
    y = np.random.randint(0, 2, (BATCH,))
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0)  # trace and warm up
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * BATCH / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--epochs", type=int, default=3, help="tltf epochs per round (1 decode + cached)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds (medians are shown)"
    )
    args = parser.parse_args()
    if not (args.data / "train").is_dir():
        raise SystemExit(f"needs the cats_and_dogs_filtered folder; {args.data} has no train/")

    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, images {SIZE}px, batch {BATCH}")
    a, b, b_model = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        train, load_cold = tltf_load(args.data, Path(tmp))
        _, load_warm = tltf_load(args.data, Path(tmp))
        n = len(train)
        baseline = keras_baseline(args.data / "train")
        # Interleaved rounds, so load changes on a shared machine hit every pipeline alike.
        # Each round builds new tltf pipelines: a fresh memory cache, so a real first epoch.
        for _ in range(args.rounds):
            a.append(_rate(baseline)[0])
            ds = train.prepare(training=True, batch_size=BATCH, augment="light", cache="memory")
            b.append([_rate(ds)[0] for _ in range(args.epochs)])
            ds = train.prepare(training=True, batch_size=BATCH, augment=None, cache="memory")
            b_model.append([_rate(ds)[0] for _ in range(args.epochs)])
    c_frozen = training_rate(trainable=False)
    c_full = training_rate(trainable=True)

    def median(values):
        return statistics.median(values)

    a_rate = median(a)
    first = median([r[0] for r in b])
    cached = median([r for rs in b for r in rs[1:]])
    first_model = median([r[0] for r in b_model])
    cached_model = median([r for rs in b_model for r in rs[1:]])
    rows = [
        ("(a) image_dataset_from_directory + guide aug", a_rate),
        ("(b) tltf first epoch, aug 'light' in tf.data", first),
        ("(b) tltf first epoch + cold validation pass", n / (load_cold + n / first)),
        ("(b) tltf cached epochs, aug 'light' in tf.data", cached),
        ("(b) tltf first epoch, aug in the model", first_model),
        ("(b) tltf cached epochs, aug in the model", cached_model),
        ("(c) mobilenet_v2 160px train step, frozen backbone", c_frozen),
        ("(c) mobilenet_v2 160px train step, all unfrozen", c_full),
    ]
    print(
        f"\n{n} training images; tltf validation pass: cold {load_cold:.1f} s, cached {load_warm:.2f} s"
    )
    print(
        f"(a) epochs: {', '.join(f'{r:.0f}' for r in a)} img/s; medians of {args.rounds} rounds below"
    )
    print(f"{'pipeline':<52} {'images/s':>10}")
    for name, rate in rows:
        print(f"{name:<52} {rate:>10.0f}")
    print("\nTargets:")
    checks = [
        ("tltf first epoch / (a)", first / a_rate, 1.5),
        ("tltf cached epochs / (a)", cached / a_rate, 5.0),
        ("tltf first epoch / (c) frozen", first / c_frozen, 1.0),
        ("tltf cached epochs / (c) frozen", cached / c_frozen, 1.0),
        ("aug in model: first epoch / (a)", first_model / a_rate, 1.5),
        ("aug in model: cached epochs / (a)", cached_model / a_rate, 5.0),
    ]
    for name, ratio, target in checks:
        print(
            f"  {name:<34} {ratio:6.2f}x  (target >= {target}x)  {'PASS' if ratio >= target else 'MISS'}"
        )


if __name__ == "__main__":
    main()
