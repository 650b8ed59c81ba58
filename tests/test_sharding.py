"""Multi-worker input: each worker decodes only its own share of the image files.

`ImageDataset.prepare(shard=...)` alone, and two local workers under
`MultiWorkerMirroredStrategy` (tests/_shard_worker.py, started by tests/test_distributed.py's
`_Cluster`) that report every file they decode.
"""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import test_distributed
from image_cases import photo_folder

from tltf.data import load_arrays, load_image_folder
from tltf.data._batches import batches
from tltf.data.records import load_records, write_records
from tltf.training import distribute

SHARD_WORKER = Path(__file__).with_name("_shard_worker.py")


def _numbered(size: int):
    """An `ImageDataset` whose element i is an image of value i."""
    x = np.arange(size, dtype="uint8")[:, None, None, None] * np.ones((1, 4, 4, 3), "uint8")
    return load_arrays(x, np.arange(size) % 2)


def _values(ds) -> list[int]:
    """The number of every image of `ds`, in order."""
    return [int(v) for images, _ in ds for v in images[:, 0, 0, 0].numpy()]


@pytest.mark.parametrize("size, batch_size, length", [(10, 4, 6), (11, 4, 6), (12, 4, 6),
                                                      (12, 2, 6), (3, 64, 32)])
def test_shards_are_disjoint_cover_the_data_and_fill_whole_steps(size, batch_size, length):
    data = _numbered(size)
    shares = [_values(data.prepare(training=True, batch_size=batch_size, seed=0,
                                   shard=(2, i))) for i in (0, 1)]
    assert set(shares[0]).isdisjoint(shares[1])
    assert set(shares[0]) | set(shares[1]) == set(range(size))
    # One length, a whole number of steps of batch_size / 2 images (a worker's part of a
    # global batch): every worker runs the same full steps. Padding repeats own elements.
    assert len(shares[0]) == len(shares[1]) == length


def test_a_shard_keeps_its_elements_every_epoch_and_is_not_sharded_again():
    ds = _numbered(9).prepare(training=True, batch_size=2, shard=(3, 1))
    assert sorted(_values(ds)) == sorted(_values(ds)) == [1, 4, 7]
    policy = ds.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.OFF
    whole = _numbered(9).prepare(training=True, batch_size=2)  # tf.distribute may shard it
    assert whole.options().experimental_distribute.auto_shard_policy != policy


def test_a_cache_file_prefix_is_one_per_shard(tmp_path):
    prefix = tmp_path / "cache" / "images"
    for index in (0, 1):
        _values(_numbered(6).prepare(training=False, cache=prefix, shard=(2, index)))
    names = {p.name.split(".")[1] for p in prefix.parent.iterdir()}
    assert names == {"shard-0-of-2", "shard-1-of-2"}


def test_records_are_sharded_before_decoding(tmp_path):
    folder = load_image_folder(photo_folder(tmp_path / "photos", n=12), image_size=16,
                               cache_dir=tmp_path / "checks")
    write_records(folder, tmp_path / "records", shard_size=3, cache_dir=tmp_path / "checks")
    data = load_records(tmp_path / "records", image_size=16)

    def sums(ds):  # every photo has its own noise: its pixels name it
        return {image.tobytes() for images, _ in ds for image in images.numpy()}

    everything = sums(data.prepare(training=False))
    assert len(everything) == 24
    # Read in parallel and unseeded (no order promised), each pass gives the same share.
    for _ in range(3):
        shares = [sums(data.prepare(training=True, batch_size=4, cache=None, shard=(2, i)))
                  for i in (0, 1)]
        assert shares[0].isdisjoint(shares[1]) and shares[0] | shares[1] == everything


def test_each_worker_reads_only_its_own_record_files(tmp_path):
    folder = load_image_folder(photo_folder(tmp_path / "photos", n=12), image_size=16,
                               cache_dir=tmp_path / "checks")
    out = write_records(folder, tmp_path / "records", shard_size=5, cache_dir=tmp_path / "checks")
    data = load_records(out, image_size=16)
    in_order = [image.tobytes() for images, _ in data.prepare(training=False)
                for image in images.numpy()]
    of_file = [set(in_order[j:j + 5]) for j in range(0, 24, 5)]  # files hold 5, 5, 5, 5, 4
    shares = [[image.tobytes() for images, _ in data.prepare(
        training=True, batch_size=4, cache=None, shard=(2, i)) for image in images.numpy()]
        for i in (0, 1)]
    # Worker 0 reads files 0, 2 and 4 (14 images), worker 1 files 1 and 3 (10 images).
    assert set(shares[0]) == of_file[0] | of_file[2] | of_file[4]
    assert set(shares[1]) == of_file[1] | of_file[3]
    # Both run 7 steps of 2 images: the smaller share repeats 4 of its own images.
    assert len(shares[0]) == len(shares[1]) == 14
    assert batches(data, training=True, batch_size=4, shard=(2, 1)).num_batches == 7


def test_record_files_fewer_than_workers_are_shared_by_element(tmp_path):
    folder = load_image_folder(photo_folder(tmp_path / "photos", n=3), image_size=16,
                               cache_dir=tmp_path / "checks")
    out = write_records(folder, tmp_path / "records", shard_size=3, cache_dir=tmp_path / "checks")
    data = load_records(out, image_size=16)  # two files of 3 images, for three workers
    shares = [{image.tobytes() for images, _ in data.prepare(
        training=True, batch_size=3, cache=None, shard=(3, i)) for image in images.numpy()}
        for i in range(3)]
    assert [len(s) for s in shares] == [2, 2, 2]
    assert not (shares[0] & shares[1] or shares[1] & shares[2] or shares[0] & shares[2])


@pytest.mark.parametrize("shard, match", [
    ((2, 2), "0 <= index < num_shards"),
    ((0, 0), "0 <= index < num_shards"),
    (2, "Received: shard=2"),
    ((2.0, 1), r"Received: shard=\(2.0, 1\)"),
    ((5, 0), "only 4"),
])
def test_a_bad_shard_raises(shard, match):
    with pytest.raises(ValueError, match=match):
        _numbered(4).prepare(training=True, shard=shard)


@pytest.mark.parametrize("cluster, task, expected", [
    ({"worker": ["a:1", "b:1"]}, ("worker", 0), (2, 0)),
    ({"worker": ["a:1", "b:1"]}, ("worker", 1), (2, 1)),
    ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, ("chief", 0), (3, 0)),
    ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, ("worker", 1), (3, 2)),
    ({"chief": ["c:1"], "worker": ["a:1"], "evaluator": ["e:1"]}, ("evaluator", 0), (1, 0)),
    ({"worker": ["a:1"]}, ("worker", 0), (1, 0)),
])
def test_worker_shard_numbers_the_chief_first(cluster, task, expected):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task[0], task_id=task[1])
    assert distribute._shard_of(resolver) == expected
    assert distribute.worker_shard(None) == (1, 0)  # no cluster: everything


def test_one_process_reads_everything():
    source = batches(_numbered(5), training=True, batch_size=2, fit=True, shard=None)
    assert source.num_batches == 3 and sorted(_values(source.data)) == list(range(5))


@pytest.mark.slow
def test_two_workers_decode_disjoint_halves_of_the_files(tmp_path, monkeypatch):
    folder = photo_folder(tmp_path / "photos", n=21)
    (folder / "red" / "20.png").unlink()  # 41 files: the shares differ by one
    files = sorted(str(p) for p in folder.rglob("*.png"))
    monkeypatch.setattr(test_distributed, "WORKER", SHARD_WORKER)
    cluster = test_distributed._Cluster(tmp_path, [str(folder), str(tmp_path / "checks")])
    try:
        cluster.start()
        cluster.wait_all(timeout=240)
    finally:
        cluster.kill_all()
    runs = [cluster.records(i, "done")[-1] for i in (0, 1)]
    assert [run["shard"] for run in runs] == [[2, 0], [2, 1]]
    assert all(sorted(run["files"]) == files for run in runs)

    # As tf.distribute shards it alone (by element): every worker decodes every file.
    for run in runs:
        assert sorted(set(run["unsharded"]["decoded"])) == files

    sharded = [run["sharded"] for run in runs]
    mine = [set(run["decoded"]) for run in sharded]
    assert mine[0].isdisjoint(mine[1])
    assert sorted(mine[0] | mine[1]) == files
    assert sorted(len(m) for m in mine) == [20, 21]
    # Decoded in the first epoch only (the cache holds the share); each share repeats its
    # first files up to 6 full steps of 4 images.
    assert [len(run["decoded"]) for run in sharded] == [24, 24]
    # Every worker runs every step with batch_size images per replica: 6 steps of a global
    # batch of 8 (4 from each worker) on both workers, every epoch.
    for run in sharded:
        assert run["global_batch"] == 8
        assert run["steps"] == [run["num_batches"]] * 2 == [6, 6]
        assert all(np.isfinite(run["loss"]))

    # fine_tune under the strategy reads the same way: its own share, all steps, every epoch.
    tuned = [run["fine_tune"] for run in runs]
    mine = [set(run["decoded"]) for run in tuned]
    assert mine[0].isdisjoint(mine[1]) and sorted(mine[0] | mine[1]) == files
    for run in tuned:
        assert run["steps"] == [6, 6] and all(np.isfinite(run["loss"]))

    # Phase 1 on cached features: each worker computes the features of its own share only
    # (once: 24 decodes with the padding), trains on them in the same steps, and the
    # all-reduce keeps both copies of the head equal.
    cached = [run["features"] for run in runs]
    assert all(run["cached"] for run in cached)
    mine = [set(run["decoded"]) for run in cached]
    assert mine[0].isdisjoint(mine[1]) and sorted(mine[0] | mine[1]) == files
    assert [len(run["decoded"]) for run in cached] == [24, 24]
    for run in cached:
        assert run["steps"] == [6, 6] and all(np.isfinite(run["loss"]))
    for a, b in zip(cached[0]["head"], cached[1]["head"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
