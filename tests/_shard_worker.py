"""Subprocess of tests/test_sharding.py: one of two workers that report the files they decode.

    python tests/_shard_worker.py <image folder> <check cache dir>   # TF_CONFIG in the env

Trains a tiny classifier on the folder under `MultiWorkerMirroredStrategy`, through the data
path of `fine_tune` (`batches(..., training=True, fit=True)` then `fit`), twice: first as
`tf.distribute` shards the dataset by itself ("unsharded"), then with this worker's share of
the files (`shard=`, "sharded"); then `fine_tune` itself, with the strategy, on the images
("fine_tune") and on cached features ("features").
tltf's decode of an image file is patched to note the
path, so the record says which files this process decoded, each time it decoded one. The
last stdout line is a JSON record per mode.
"""

import json
import os
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from _worker import IMAGE_SIZE, classifier, emit, multiworker_setup  # noqa: E402

import tltf.data._checked_files  # noqa: E402
from tltf.data import load_image_folder  # noqa: E402
from tltf.data._batches import batches  # noqa: E402
from tltf.training import distribute  # noqa: E402
from tltf.training._train_data import with_cardinality  # noqa: E402
from tltf.training.recipe import fine_tune  # noqa: E402

PER_REPLICA_BATCH = 4
_decoded: list[str] = []
_lock = threading.Lock()


def _note(path):
    with _lock:
        _decoded.append(os.fsdecode(path.numpy()))
    return 0


def _logging_decode(decode):
    def decode_and_note(path, ratio):
        noted = tf.py_function(_note, [path], tf.int32)
        with tf.control_dependencies([noted]):
            return decode(path, ratio)

    return decode_and_note


class _Steps(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.per_epoch = []

    def on_epoch_begin(self, epoch, logs=None):
        self.per_epoch.append(0)

    def on_train_batch_end(self, batch, logs=None):
        self.per_epoch[-1] += 1


def train(data, strategy, sharded: bool) -> dict:
    del _decoded[:]
    global_batch = distribute.global_batch_size(PER_REPLICA_BATCH, strategy)
    source = batches(data, "train", training=True, batch_size=global_batch, seed=0, fit=True,
                     cache="memory",
                     shard=distribute.worker_shard(strategy) if sharded else None)
    # fine_tune fixes the size of the unsharded data; the sharded size is counted by Keras.
    ds = source.data if sharded else with_cardinality(source.data)
    keras.utils.set_random_seed(0)
    steps = _Steps()
    with strategy.scope():
        model = classifier()
        model.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss="sparse_categorical_crossentropy")
    # Two epochs show that the cache holds the share; one shows what the unsharded run reads.
    history = model.fit(ds, epochs=2 if sharded else 1, verbose=0, callbacks=[steps])
    return {"decoded": list(_decoded), "steps": steps.per_epoch, "num_batches":
            source.num_batches, "global_batch": global_batch, "loss": history.history["loss"]}


def train_with_fine_tune(data, strategy, cache_features=False) -> dict:
    """Phase 1 of `fine_tune`, two epochs: on the images, or on their cached features."""
    del _decoded[:]
    steps = _Steps()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = classifier()
    result = fine_tune(model, data, None, head_epochs=2, finetune_epochs=0, head_fit="adam",
                       cache_features=cache_features, batch_size=PER_REPLICA_BATCH, seed=0,
                       strategy=strategy, callbacks=[steps], verbose=0)
    head = [w.tolist() for w in model.get_layer("head").get_weights()]
    return {"decoded": list(_decoded), "steps": steps.per_epoch,
            "loss": result.history["loss"], "cached": result.cached_features, "head": head}


def main(folder: str, cache_dir: str) -> None:
    tltf.data._checked_files.decode_image_file = _logging_decode(
        tltf.data._checked_files.decode_image_file)
    strategy, _, _ = multiworker_setup()
    # One check cache per worker, as on machines that do not share a home folder.
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    data = load_image_folder(folder, image_size=IMAGE_SIZE, cache_dir=f"{cache_dir}/{index}")
    emit(event="done", files=data.files, shard=list(distribute.worker_shard(strategy)),
         unsharded=train(data, strategy, sharded=False),
         sharded=train(data, strategy, sharded=True),
         fine_tune=train_with_fine_tune(data, strategy),
         features=train_with_fine_tune(data, strategy, cache_features=True))


if __name__ == "__main__":
    main(*sys.argv[1:])
