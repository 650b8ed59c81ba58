"""Subprocess entry point for the tests in test_distributed.py and test_runtime.py.

Each mode runs in a fresh Python process because what it tests is process-global and must
happen before TensorFlow initialises (logical CPU devices, TF_CONFIG for a worker) or cannot
be undone (op determinism). It prints one JSON object per line on stdout; the last line is
the result the test reads.

    python tests/_worker.py mirrored
    python tests/_worker.py multiworker <backup_dir> <epochs>   # TF_CONFIG in the environment
    python tests/_worker.py multiworker_fine_tune <run_dir> <head_epochs> <finetune_epochs>
    python tests/_worker.py repro <seed> [<seed> ...]
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

IMAGE_SIZE = 32
NUM_CLASSES = 2
CACHE = os.environ.get("TLTF_TEST_CACHE_FEATURES", "0") == "1"


def emit(**record):
    print(json.dumps(record), flush=True)


def configure_cpus(count: int) -> None:
    """Splits the physical CPU into `count` logical devices; must run before TF initialises."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )


def images_and_labels(n: int, seed: int = 0):
    """Dark images are class 0, bright ones class 1: learnable in a few steps from scratch."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n).astype("int32")
    base = np.where(labels[:, None, None, None] == 1, 200.0, 50.0)
    noise = rng.uniform(-30, 30, (n, IMAGE_SIZE, IMAGE_SIZE, 3))
    return (base + noise).astype("float32"), labels


def tiny_backbone():
    import keras

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="block1_conv")(x)
    x = keras.layers.BatchNormalization(name="block1_bn")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="block2_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, x, name="tiny")


def classifier():
    from tltf import build_classifier

    model = build_classifier(tiny_backbone(), NUM_CLASSES, image_size=IMAGE_SIZE, weights=None)
    model.get_layer("backbone").trainable = True
    return model


def run_mirrored() -> None:
    configure_cpus(2)
    from tltf.training import distribute, runtime
    from tltf.training.recipe import fine_tune

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x, y = images_and_labels(128)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(distribute.global_batch_size(8, strategy))
    val = tf.data.Dataset.from_tensor_slices(images_and_labels(32, seed=2)).batch(16)

    # Built outside the scope, as a user would: fine_tune places it with match_runtime.
    model = classifier()
    placed = runtime.match_runtime(model, strategy=strategy)
    variable = placed.get_layer("head").predictions.kernel.value
    before = [w.copy() for w in model.get_weights()]
    result = fine_tune(
        model,
        train,
        val,
        head_epochs=2,
        finetune_epochs=2,
        unfreeze="all",
        batch_size=8,
        cache_features=CACHE,
        head_lr=1e-2,
        finetune_lr=1e-2,
        early_stopping=False,
        strategy=strategy,
        seed=0,
        verbose=0,
    )
    emit(
        replicas=strategy.num_replicas_in_sync,
        global_batch=distribute.global_batch_size(8, strategy),
        rebuilt=placed is not model,
        mirrored_type=type(variable).__name__,
        devices=sorted({v.device for v in getattr(variable, "values", [variable])}),
        phases=result.history["phase"],
        loss=result.history["loss"],
        val_accuracy=result.history["val_accuracy"],
        weights_changed=any(
            not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True)
        ),
        head_fit=result.head_fit,
        replicas_equal=all(  # the convex head fit assigned every replica's copy
            np.array_equal(v.numpy(), variable.values[0].numpy()) for v in variable.values
        ),
    )


class _Progress:
    """Keras callback that reports epochs on stdout and slows epochs down a little."""

    def __new__(cls, pause: float):
        import keras

        class Progress(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                emit(event="epoch_begin", epoch=epoch)

            def on_epoch_end(self, epoch, logs=None):
                emit(event="epoch_end", epoch=epoch, loss=float(logs["loss"]))
                time.sleep(pause)

        return Progress()


def multiworker_setup():
    """The strategy of this worker (TF_CONFIG) and its dataset, sharded by elements."""
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    from tltf.training import distribute
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=30)
    strategy = distribute.resolve_strategy(
        tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    )
    emit(
        event="start",
        replicas=strategy.num_replicas_in_sync,
        chief=distribute.is_chief(strategy),
        task=json.loads(os.environ["TF_CONFIG"])["task"],
    )
    shard = tf.data.Options()
    shard.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    batch = distribute.global_batch_size(8, strategy)

    def dataset(n, seed):
        data = tf.data.Dataset.from_tensor_slices(images_and_labels(n, seed=seed))
        return data.batch(batch).with_options(shard)

    return strategy, dataset(64, 0), dataset(32, 2)


def run_multiworker(backup_dir: str, epochs: int) -> None:
    """Plain `fit` + `distribute.backup_and_restore`, the building blocks of fine_tune."""
    import keras

    from tltf.training import distribute
    strategy, data, _ = multiworker_setup()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = classifier()
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
        history = model.fit(
            data,
            epochs=epochs,
            verbose=0,
            callbacks=[
                distribute.backup_and_restore(backup_dir, strategy=strategy),
                _Progress(pause=1.0),
            ],
        )
    emit(event="done", epochs_run=len(history.history["loss"]), loss=history.history["loss"])


def run_multiworker_fine_tune(run_dir: str, head_epochs: int, finetune_epochs: int) -> None:
    """`fine_tune(..., strategy=, directory=, resume=)`; resumes when a checkpoint exists."""
    import keras

    from tltf.training.recipe import fine_tune

    strategy, train, val = multiworker_setup()
    resume = os.path.exists(os.path.join(run_dir, "checkpoints", "state.json"))
    keras.utils.set_random_seed(0)
    result = fine_tune(
        classifier(),
        train,
        val,
        head_epochs=head_epochs,
        finetune_epochs=finetune_epochs,
        unfreeze="all",
        cache_features=False,
        early_stopping=False,
        head_lr=1e-2,
        finetune_lr=1e-2,
        directory=run_dir,
        resume=resume,
        strategy=strategy,
        callbacks=[_Progress(pause=1.0)],
        verbose=0,
    )
    emit(event="done", resumed=resume, phase=result.history["phase"], loss=result.history["loss"])


def seeded_fine_tune(seed: int) -> dict:
    """One short seeded `fine_tune` (both phases) on a fresh model; returns its history."""
    from tltf.training import runtime
    from tltf.training.recipe import fine_tune

    runtime.set_seed(seed, deterministic=True)
    x, y = images_and_labels(64, seed=1)
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(64, seed=seed).batch(16)
    val = tf.data.Dataset.from_tensor_slices(images_and_labels(32, seed=2)).batch(16)
    result = fine_tune(
        classifier(),
        train,
        val,
        head_epochs=2,
        finetune_epochs=2,
        unfreeze="all",
        early_stopping=False,
        seed=seed,
        verbose=0,
    )
    return {k: v for k, v in result.history.items() if k != "time"}


def run_repro(seeds: list[int]) -> None:
    # Several runs in one process, each seeded anew: op determinism, once on, stays on.
    emit(histories=[seeded_fine_tune(seed) for seed in seeds])


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "mirrored":
        run_mirrored()
    elif mode == "multiworker":
        run_multiworker(sys.argv[2], int(sys.argv[3]))
    elif mode == "multiworker_fine_tune":
        run_multiworker_fine_tune(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "repro":
        run_repro([int(seed) for seed in sys.argv[2:]])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
