"""Data at scale: the SQLite check cache (incremental, shared by processes, never fatal)."""

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tltf.data import _check_store
from tltf.data import checks as checks_module
from tltf.data.checks import FileCheck, check_files


def _jpegs(folder, n, size=(24, 32)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        path = folder / f"{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        files.append(str(path))
    return files


@pytest.fixture
def counted(monkeypatch):
    """The paths the per-file check opens, in order."""
    calls = []
    original = checks_module._check_one
    monkeypatch.setattr(checks_module, "_check_one",
                        lambda p, *a: calls.append(p) or original(p, *a))
    return calls


def test_stored_fields_follow_file_check():
    assert _check_store._FIELDS == tuple(f.name for f in dataclasses.fields(FileCheck))[1:]


def test_second_pass_reads_no_image_and_a_changed_file_is_checked_again(tmp_path, counted):
    files = _jpegs(tmp_path / "a", 6)
    (tmp_path / "a" / "bad.jpg").write_bytes(b"not a jpeg")
    files.append(str(tmp_path / "a" / "bad.jpg"))
    first = check_files(files, cache_dir=tmp_path / "c")
    assert len(counted) == 7
    assert (tmp_path / "c" / "file-checks.sqlite").is_file()
    counted.clear()
    assert check_files(files, cache_dir=tmp_path / "c") == first
    assert counted == []  # only stats and rows
    st = os.stat(files[2])
    os.utime(files[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    check_files(files, cache_dir=tmp_path / "c")
    assert counted == [files[2]]


def test_many_paths_under_one_folder_get_their_own_rows_and_no_others(tmp_path):
    # Over _CHUNK paths sharing a prefix are read by one range scan of the primary key; rows
    # of a sibling folder that shares the prefix's text, and of other versions, stay out.
    store = _check_store.CheckStore(tmp_path / "c", version=7)
    wanted = [f"/data/cls/{i:04d}.jpg" for i in range(_check_store._CHUNK + 100)]
    wanted.append(os.fsdecode(b"/data/cls/\xff\xfe.jpg"))  # not UTF-8, and the top byte
    for i, path in enumerate(wanted):
        store.put(path, i, 10 * i, [True, "", "JPEG", "RGB", i, 1, 1, "", False, path, True])
    for path in ("/data/cls2/0001.jpg", "/data/cl/x.jpg", "/data/cls/"):
        store.put(path, 1, 1, [False, "other", None, None, 0, 0, 1, "", False, path, False])
    store.flush()
    other = _check_store.CheckStore(tmp_path / "c", version=8)
    other.put(wanted[0], 0, 0, [False, "old", None, None, 0, 0, 1, "", False, wanted[0], False])
    other.close()
    asked = wanted[::-1][:-3]  # any order, and not every stored row of the folder
    found = store.get(asked)
    store.close()
    assert sorted(found) == sorted(asked)
    assert all(found[p][0] == wanted.index(p) and found[p][2][4] == wanted.index(p)
               for p in asked)


@pytest.mark.slow
def test_two_processes_check_one_folder_at_once(tmp_path):
    files = _jpegs(tmp_path / "a", 40)
    (tmp_path / "a" / "empty.jpg").write_bytes(b"")
    files.append(str(tmp_path / "a" / "empty.jpg"))
    (tmp_path / "files.json").write_text(json.dumps(files))
    script = (
        "import json, pathlib, sys, time\n"
        "from tltf.data.checks import check_files\n"
        "files = json.load(open(sys.argv[1]))\n"
        "ready = pathlib.Path(sys.argv[2]).parent\n"
        "(ready / f'ready{sys.argv[3]}').touch()\n"
        "while not all((ready / f'ready{i}').exists() for i in range(2)):\n"
        "    time.sleep(0.01)\n"  # both start checking together, both imports done
        "result = check_files(files, cache_dir=sys.argv[2], workers=1)\n"
        "print(json.dumps([[c.ok, c.reason] for c in result]))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-W", "error::UserWarning", "-c", script,
                               str(tmp_path / "files.json"), str(tmp_path / "c"), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    expected = [[True, ""]] * 40 + [[False, "empty file (0 bytes)"]]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1]) == expected
    with sqlite3.connect(tmp_path / "c" / "file-checks.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM checks").fetchone()[0] == 41


def test_corrupt_cache_falls_back_with_one_warning(tmp_path, counted):
    files = _jpegs(tmp_path / "a", 3)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "file-checks.sqlite").write_bytes(b"garbage " * 1000)
    with pytest.warns(UserWarning, match="file-check cache .* cannot be used") as caught:
        result = check_files(files, cache_dir=tmp_path / "c")
    assert len([w for w in caught if "file-check cache" in str(w.message)]) == 1
    assert [c.ok for c in result] == [True] * 3
    assert len(counted) == 3


def test_a_row_without_its_fields_is_checked_again(tmp_path, counted):
    files = _jpegs(tmp_path / "a", 3)
    first = check_files(files, cache_dir=tmp_path / "c")
    with sqlite3.connect(tmp_path / "c" / "file-checks.sqlite") as db:
        db.execute("UPDATE checks SET fields = '[true, \"\"]' WHERE path = ?",
                   (os.fsencode(files[1]),))
    counted.clear()
    assert check_files(files, cache_dir=tmp_path / "c") == first
    assert counted == [files[1]]
    counted.clear()
    check_files(files, cache_dir=tmp_path / "c")  # and stored whole again
    assert counted == []


def test_locked_cache_falls_back_with_one_warning(tmp_path, counted, monkeypatch):
    files = _jpegs(tmp_path / "a", 3)
    check_files(files[:1], cache_dir=tmp_path / "c")
    monkeypatch.setattr(_check_store, "_TIMEOUT", 0.1)
    holder = sqlite3.connect(tmp_path / "c" / "file-checks.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than the timeout
    try:
        counted.clear()
        with pytest.warns(UserWarning, match="cannot be used .*locked") as caught:
            result = check_files(files, cache_dir=tmp_path / "c")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len([w for w in caught if "file-check cache" in str(w.message)]) == 1
    assert [c.ok for c in result] == [True] * 3
    assert counted == files[1:]  # the row of the first file was still read


def test_old_json_cache_is_migrated_and_a_broken_one_ignored(tmp_path, counted):
    files = _jpegs(tmp_path / "a", 3)
    old = check_files(files, cache_dir=tmp_path / "c1")
    entries = {c.path: {"stat": [os.stat(c.path).st_size, os.stat(c.path).st_mtime_ns],
                        "check": dataclasses.asdict(c)} for c in old}
    (tmp_path / "c2").mkdir()
    (tmp_path / "c2" / "file-checks.json").write_text(
        json.dumps({"version": checks_module._CACHE_VERSION, "files": entries}))
    counted.clear()
    assert check_files(files, cache_dir=tmp_path / "c2") == old
    assert counted == []
    (tmp_path / "c3").mkdir()
    (tmp_path / "c3" / "file-checks.json").write_text('{"version": 2, "files": [1, ')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_files(files, cache_dir=tmp_path / "c3") == old
    assert len(counted) == 3


# --------------------------------------------------------------------------- cache="auto"


class _Memory:
    def __init__(self, available):
        self.available = available


class _Disk:
    def __init__(self, free):
        self.free = free


@pytest.fixture
def tiny(tmp_path):
    from tltf.data import load_arrays

    x = np.random.default_rng(0).integers(0, 255, (10, 16, 16, 3), dtype=np.uint8)
    return load_arrays(x, np.arange(10) % 2)


def _images(ds):
    return np.concatenate([x.numpy() for x, _ in ds])


def test_auto_cache_is_memory_when_it_fits(tiny, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = tiny.prepare(training=False, batch_size=4, cache_dir=tmp_path)
        assert _images(ds).shape == (10, 16, 16, 3)
    assert list(tmp_path.iterdir()) == []


def test_auto_cache_small_budget_goes_to_disk(tiny, tmp_path, monkeypatch):
    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: _Memory(1000))
    with pytest.warns(UserWarning, match=r"caches the decoded images on disk in .* \(the decoded 10 images at 16x16 take 0 MB, more than 25% of the 0 MB "
                      r"of memory available\)"):
        ds = tiny.prepare(training=False, batch_size=4, cache_dir=tmp_path)
    expected = _images(tiny.prepare(training=False, batch_size=4, cache=None))
    np.testing.assert_array_equal(_images(ds), expected)
    np.testing.assert_array_equal(_images(ds), expected)  # the second epoch reads the file
    (folder,) = tmp_path.glob("tltf-data-cache-*")
    assert any(p.name.startswith("images") and p.name.endswith(".index")
               for p in folder.iterdir())


def test_auto_cache_small_budget_and_no_disk_streams(tiny, tmp_path, monkeypatch):
    import psutil

    from tltf.data import _cache_choice

    monkeypatch.setattr(psutil, "virtual_memory", lambda: _Memory(1000))
    monkeypatch.setattr(_cache_choice.shutil, "disk_usage", lambda path: _Disk(free=100))
    with pytest.warns(UserWarning, match=r"decodes the images again every epoch \(streaming, no "
                      r"cache\): the decoded 10 images at 16x16 take .* more than 25% of .* "
                      r"memory available, and more than 50% of the 0 MB free on the disk of"):
        ds = tiny.prepare(training=True, batch_size=4, cache_dir=tmp_path, seed=0)
    assert _images(ds).shape == (10, 16, 16, 3)
    assert list(tmp_path.iterdir()) == []


def test_explicit_disk_cache_goes_under_cache_dir(tiny, tmp_path):
    ds = tiny.prepare(training=False, batch_size=4, cache="disk", cache_dir=tmp_path)
    _images(ds)
    assert len(list(tmp_path.glob("tltf-data-cache-*/images*"))) >= 1


def test_bad_cache_raises(tiny):
    with pytest.raises(ValueError, match="'auto', 'memory', 'disk'"):
        tiny.prepare(training=False, cache=3)


# --------------------------------------------------------------------------- remote folders


def _ram_folder(name, per_class=4):
    """A class folder on TensorFlow's in-memory file system, written with tf.io.gfile."""
    import io

    import tensorflow as tf

    root = f"ram://{name}"
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        tf.io.gfile.makedirs(f"{root}/{label}")
        for i in range(per_class):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(buffer, "JPEG")
            with tf.io.gfile.GFile(f"{root}/{label}/{i}.jpg", "wb") as f:
                f.write(buffer.getvalue())
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: re-encoded upright to a local PNG by the check
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(buffer, "JPEG",
                                                                             exif=exif)
    with tf.io.gfile.GFile(f"{root}/cat/rotated.jpg", "wb") as f:
        f.write(buffer.getvalue())
    with tf.io.gfile.GFile(f"{root}/dog/broken.jpg", "wb") as f:
        f.write(b"\xff\xd8 not really")
    with tf.io.gfile.GFile(f"{root}/dog/notes.txt", "wb") as f:
        f.write(b"ignored")
    return root


def test_remote_folder_loads_checks_once_and_trains(tmp_path, counted, monkeypatch):
    import keras
    import tensorflow as tf

    from tltf.data import load_image_folder
    from tltf.data.layout import class_folders, list_image_files

    root = _ram_folder("tltf-test-remote")
    assert class_folders(root) == ["cat", "dog"]
    asked, isdir = [], tf.io.gfile.isdir
    monkeypatch.setattr(tf.io.gfile, "isdir", lambda p: asked.append(p) or isdir(p))
    assert list_image_files(f"{root}/dog") == [f"{root}/dog/{n}.jpg" for n in
                                               ("0", "1", "2", "3", "broken")]
    # One request per name on gs://: an image name is taken for a file without one.
    assert asked == [f"{root}/dog", f"{root}/dog/notes.txt"]
    monkeypatch.setattr(tf.io.gfile, "isdir", isdir)
    with pytest.warns(UserWarning, match=r"(?s)Left out 1 unusable file.*ram://tltf-test-remote/dog/"
                      r"broken.jpg: not an image"):
        train, val = load_image_folder(root, image_size=32, validation_split=0.5, seed=0,
                                       cache_dir=tmp_path / "c")
    assert train.class_counts == {"cat": 3, "dog": 2} and len(val) == 4
    assert all(f.startswith("ram://tltf-test-remote/") for f in train.files + val.files)
    (rotated,) = check_files([f"{root}/cat/rotated.jpg"], cache_dir=tmp_path / "c")
    assert rotated.orientation == 6 and rotated.decoded_path.startswith(str(tmp_path / "c"))
    x, y = next(iter(train.prepare(training=True, batch_size=5, seed=0)))
    assert tuple(x.shape) == (5, 32, 32, 3) and float(np.ptp(x.numpy())) > 0
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert np.isfinite(model.train_on_batch(x, y))  # one training step on remote images
    counted.clear()
    with pytest.warns(UserWarning, match="Left out 1 unusable file"):
        load_image_folder(root, image_size=32, cache_dir=tmp_path / "c")
    assert counted == []  # the verdicts of the remote files come from the cache


def test_remote_missing_folder_and_file(tmp_path):
    from tltf.data import load_image_folder

    with pytest.raises(FileNotFoundError, match="ram://tltf-nothing-here does not exist"):
        load_image_folder("ram://tltf-nothing-here", cache_dir=tmp_path)
    (check,) = check_files(["ram://tltf-nothing-here/a.jpg"], cache_dir=tmp_path)
    assert not check.ok and check.reason.startswith("cannot be read: NotFoundError")


# --------------------------------------------------------------------------- TFRecords


def test_records_give_the_folder_pixels_without_listing(tmp_path, counted):
    import tensorflow as tf

    from tltf.data import load_image_folder
    from tltf.data.records import load_records, write_records

    for label in ("cat", "dog"):
        _jpegs(tmp_path / "f" / label, 5, size=(60, 80))
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(tmp_path / "f/cat/rot.jpg", exif=exif)
    Image.fromarray(np.arange(300, dtype=np.uint8).reshape(15, 20)).save(tmp_path / "f/dog/g.png")
    data = load_image_folder(tmp_path / "f", image_size=24, cache_dir=tmp_path / "c")
    counted.clear()
    out = write_records(data, tmp_path / "r", shard_size=4, cache_dir=tmp_path / "c")
    assert counted == []  # the verdicts come from the cache
    assert len(list(out.glob("*.tfrecord"))) == 3
    for resize in ("stretch", "pad"):
        folder = load_image_folder(tmp_path / "f", image_size=24, resize=resize,
                                   cache_dir=tmp_path / "c")
        records = load_records(out, image_size=24, resize=resize)
        assert records.class_counts == folder.class_counts == {"cat": 6, "dog": 6}
        expected = folder.prepare(training=False, batch_size=5, cache=None)
        got = records.prepare(training=False, batch_size=5, cache=None)
        for (x1, y1), (x2, y2) in zip(expected, got, strict=True):
            np.testing.assert_array_equal(x1.numpy(), x2.numpy())
            np.testing.assert_array_equal(y1.numpy(), y2.numpy())
    shuffled = records.prepare(training=True, batch_size=4, seed=0)
    assert sorted(np.concatenate([y.numpy() for _, y in shuffled]).tolist()) == [0] * 6 + [1] * 6
    for name in tf.io.gfile.listdir(os.fspath(out)):  # the same shards read from a URL
        tf.io.gfile.makedirs("ram://tltf-test-records")
        tf.io.gfile.copy(os.fspath(out / name), f"ram://tltf-test-records/{name}", overwrite=True)
    remote = load_records("ram://tltf-test-records", image_size=24, resize="pad")
    x, _ = next(iter(remote.prepare(training=False, batch_size=12, cache=None)))
    np.testing.assert_array_equal(x.numpy(), np.concatenate([a.numpy() for a, _ in expected]))


def test_records_errors(tmp_path):
    from tltf.data import load_arrays
    from tltf.data.records import load_records, write_records

    with pytest.raises(ValueError, match="in-memory data"):
        write_records(load_arrays(np.zeros((2, 8, 8, 3), "uint8"), np.array([0, 1])), tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no records.json"):
        load_records(tmp_path)


@pytest.mark.parametrize("counts", [[3], [3, 3, 3], [3, 2], [3, "3"], "6"])
def test_records_with_damaged_shard_counts_say_so(tmp_path, counts):
    from image_cases import photo_folder

    from tltf.data import load_image_folder
    from tltf.data.records import load_records, write_records

    folder = load_image_folder(photo_folder(tmp_path / "p", n=3), image_size=16,
                               cache_dir=tmp_path / "c")
    out = write_records(folder, tmp_path / "r", shard_size=3, cache_dir=tmp_path / "c")
    manifest = json.loads((out / "records.json").read_text())
    assert manifest["shard_counts"] == [3, 3]
    manifest["shard_counts"] = counts
    (out / "records.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"records.json is damaged: `shard_counts`.*Received"):
        load_records(out, image_size=16)


def test_fine_tune_caches_images_too_large_for_memory_in_the_run_folder(tmp_path, monkeypatch):
    import psutil

    from tltf.data import load_arrays
    from tltf.training import fine_tune

    sys.path.insert(0, str(Path(__file__).parent))
    from _train_tiny import tiny_model

    rng = np.random.default_rng(0)
    train = load_arrays(rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8), np.arange(16) % 2)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: _Memory(1000))
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match=rf"caches the decoded images on disk in {run}"):
        fine_tune(tiny_model(), train, None, head_epochs=1, finetune_epochs=1, batch_size=8,
                  directory=run, verbose=0, seed=0)
    (folder,) = run.glob("tltf-data-cache-*")  # removed when the process ends
    assert any(p.name.endswith(".index") for p in folder.iterdir())
