"""Loaders and `ImageDataset.prepare`: right labels, bad files left out and named, fast paths."""

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from image_cases import BAD, GOOD, H, W, make_odd_folder, pattern
from PIL import Image

from tltf.data import load_arrays, load_csv, load_image_folder, load_tfds


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    return make_odd_folder(tmp_path_factory.mktemp("odd"))


@pytest.fixture(scope="module")
def odd_data(odd, tmp_path_factory):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_image_folder(odd, image_size=(H, W), cache_dir=tmp_path_factory.mktemp("cache"))
    return data, caught


def _folder(root, counts, size=(20, 20)):
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            array = np.full((*size, 3), (i * 7) % 256, np.uint8)
            Image.fromarray(array).save(root / name / f"{i}.png")
    return root


def test_odd_folder_good_files_loaded_with_labels(odd, odd_data):
    data, _ = odd_data
    assert data.class_names == ["cats", "dogs"]
    relative = [os.path.relpath(f, odd) for f in data.files]
    assert sorted(relative) == sorted(GOOD)
    for rel, label in zip(relative, data.labels, strict=True):
        assert data.class_names[label] == rel.split("/")[0]
    counts = {c: sum(r.startswith(c + "/") for r in GOOD) for c in ("cats", "dogs")}
    assert data.class_counts == counts and len(data) == len(GOOD)


def test_odd_folder_bad_files_reported_by_path(odd, odd_data):
    data, caught = odd_data
    assert sorted(os.path.relpath(p, odd) for p, _ in data.skipped) == sorted(BAD)
    message = "\n".join(str(w.message) for w in caught)
    for rel in BAD:
        assert str(odd / rel) in message


def test_odd_folder_decodes_without_crash(odd_data):
    data, _ = odd_data
    images, labels = [], []
    for image, label in data.dataset:
        images.append(image.numpy())
        labels.append(int(label))
    assert labels == list(data.labels)
    assert all(i.shape == (H, W, 3) and i.dtype == np.uint8 for i in images)
    rotated = data.files.index(next(f for f in data.files if f.endswith("rotated.jpg")))
    upright = images[rotated]  # stretched back to (H, W): the white half must be on top
    assert upright[: H // 2 - 2].mean() > 200 and upright[H // 2 + 2 :].mean() < 50


def test_strict_mode_raises_naming_files(odd, tmp_path):
    with pytest.raises(ValueError, match="truncated.jpg"):
        load_image_folder(odd, image_size=16, strict=True, cache_dir=tmp_path)


def test_one_class_raises(tmp_path):
    _folder(tmp_path, {"only": 2})
    with pytest.raises(ValueError, match="at least two classes"):
        load_image_folder(tmp_path, image_size=16, cache_dir=tmp_path / ".c")


def test_empty_class_folder_raises_naming_it(tmp_path):
    _folder(tmp_path, {"a": 2, "b": 0})
    (tmp_path / "b" / "notes.txt").write_text("no images here")
    (tmp_path / "b" / "bad.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"Class folder\(s\) \[.*/b'\] hold no usable image"):
        load_image_folder(tmp_path, image_size=16, cache_dir=tmp_path / ".c")


def test_no_class_folders_raises(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "x.png")
    with pytest.raises(ValueError, match="one subfolder per class"):
        load_image_folder(tmp_path, image_size=16)


def test_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "nope")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": 0}, "image_size"),
        ({"image_size": (16, 16, 3)}, "image_size"),
        ({"validation_split": 1.5}, "validation_split"),
        ({"validation_split": 0.6, "test_split": 0.5}, "leave images for training"),
        ({"resize": "squash"}, "resize"),
        ({"class_names": ["a", "zzz"]}, "class folder .* for class 'zzz'"),
        ({"max_per_class": 0}, "`max_per_class` must be a positive integer"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    _folder(tmp_path, {"a": 2, "b": 2})
    with pytest.raises(ValueError, match=match):
        load_image_folder(tmp_path, cache_dir=tmp_path / ".c", **kwargs)


def test_stratified_split_is_seeded(tmp_path):
    _folder(tmp_path, {"a": 20, "b": 10})
    kw = dict(image_size=16, validation_split=0.2, test_split=0.1, cache_dir=tmp_path / ".c")
    train, val, test = load_image_folder(tmp_path, seed=1, **kw)
    assert val.class_counts == {"a": 4, "b": 2} and test.class_counts == {"a": 2, "b": 1}
    assert len(train) + len(val) + len(test) == 30
    assert not set(train.files) & set(val.files) and not set(val.files) & set(test.files)
    again = load_image_folder(tmp_path, seed=1, **kw)
    other = load_image_folder(tmp_path, seed=2, **kw)
    assert again[1].files == val.files
    assert other[1].files != val.files


def test_split_folder_layout(tmp_path):
    _folder(tmp_path / "train", {"a": 3, "b": 3})
    _folder(tmp_path / "validation", {"a": 2, "b": 1})
    _folder(tmp_path / "test", {"a": 1, "b": 1})
    train, val, test = load_image_folder(tmp_path, image_size=16, cache_dir=tmp_path / ".c")
    assert (len(train), len(val), len(test)) == (6, 3, 2)
    assert val.class_names == train.class_names == ["a", "b"]
    with pytest.raises(ValueError, match="already holds a validation folder"):
        load_image_folder(tmp_path, validation_split=0.2, cache_dir=tmp_path / ".c")


def test_max_per_class_takes_the_first_files_of_every_class_and_split(tmp_path):
    _folder(tmp_path / "train", {"a": 5, "b": 2})
    _folder(tmp_path / "validation", {"a": 4, "b": 4})
    train, val = load_image_folder(tmp_path, image_size=16, max_per_class=3,
                                   cache_dir=tmp_path / ".c")
    assert train.class_counts == {"a": 3, "b": 2} and val.class_counts == {"a": 3, "b": 3}
    assert [Path(f).name for f in train.files[:3]] == ["0.png", "1.png", "2.png"]


def test_split_folder_with_unknown_class_raises(tmp_path):
    _folder(tmp_path / "train", {"a": 2, "b": 2})
    _folder(tmp_path / "val", {"a": 1, "c": 1})
    with pytest.raises(ValueError, match=r"class folders \['c'\]"):
        load_image_folder(tmp_path, image_size=16, cache_dir=tmp_path / ".c")


@pytest.mark.shared
def test_cats_and_dogs_layout(cats_dogs_dir, tmp_path):
    from tltf.data.folder import _scan_classes
    from tltf.data.layout import find_split_folders

    splits = find_split_folders(cats_dogs_dir)
    assert set(splits) == {"train", "validation"}
    files, labels, _ = _scan_classes(splits["train"], ["cats", "dogs"], required=True)
    assert len(files) == 2000 and np.bincount(labels).tolist() == [1000, 1000]
    files, labels, _ = _scan_classes(splits["validation"], ["cats", "dogs"], required=True)
    assert np.bincount(labels).tolist() == [500, 500]


def test_prepare_batches_and_labels():
    x = np.random.default_rng(0).integers(0, 255, (10, 8, 8, 3), dtype=np.uint8)
    data = load_arrays(x, np.arange(10) % 3, class_names=["a", "b", "c"])
    batches = list(data.prepare(training=False, batch_size=4, one_hot=True))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    images = np.concatenate([b[0] for b in batches])
    assert images.dtype == np.float32 and np.array_equal(images, x.astype(np.float32))
    labels = np.concatenate([b[1] for b in batches])
    assert np.array_equal(labels.argmax(1), np.arange(10) % 3) and labels.dtype == np.float32
    ints = next(iter(data.prepare(training=False, batch_size=4)))[1]
    assert ints.dtype == tf.int32


def _order(ds):
    return [tuple(y.numpy()) for _, y in ds]


@pytest.mark.parametrize("cache", [None, "memory", "file"])
def test_prepare_reshuffles_every_epoch_and_is_seeded(tmp_path, cache):
    cache_arg = str(tmp_path / "tfcache" / "train") if cache == "file" else cache
    x = np.arange(24, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
    data = load_arrays(x, np.arange(24) % 2)

    def epoch(ds):
        return np.concatenate([b[0][:, 0, 0, 0].numpy() for b in ds])

    ds = data.prepare(training=True, batch_size=8, cache=cache_arg, seed=3)
    first, second = epoch(ds), epoch(ds)
    assert sorted(first.tolist()) == list(range(24))
    assert not np.array_equal(first, second)  # a new order each epoch
    other_file = str(tmp_path / "tfcache" / "again")
    again = data.prepare(
        training=True, batch_size=8, cache=other_file if cache == "file" else cache, seed=3
    )
    assert np.array_equal(epoch(again), first)  # same seed, same order
    if cache == "file":
        assert any(p.name.startswith("train") for p in (tmp_path / "tfcache").iterdir())


def test_prepare_from_files_decodes_once_with_cache(tmp_path):
    _folder(tmp_path, {"a": 3, "b": 3})
    data = load_image_folder(tmp_path, image_size=8, cache_dir=tmp_path / ".c")
    ds = data.prepare(training=False, batch_size=8, cache="memory")
    first = next(iter(ds))[0].numpy()
    for f in data.files:
        os.remove(f)  # a cached epoch must not read the files again
    assert np.array_equal(next(iter(ds))[0].numpy(), first)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"training": True, "batch_size": 0}, "batch_size"),
        ({"training": True, "cache": 3}, "cache"),
        ({"training": False, "augment": "light"}, "only applies to training"),
        ({"training": True, "augment": ["mixup"]}, "one_hot=True"),
        ({"training": True, "augment": "wild"}, "Expected `augment`"),
    ],
)
def test_prepare_errors(kwargs, match):
    data = load_arrays(np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=match):
        data.prepare(**kwargs)


def test_prepare_with_mixup_gives_soft_labels():
    x = np.random.default_rng(0).integers(0, 255, (16, 16, 16, 3), dtype=np.uint8)
    data = load_arrays(x, np.arange(16) % 2)
    ds = data.prepare(training=True, batch_size=8, augment=["flip", "mixup"], seed=0, one_hot=True)
    _, labels = next(iter(ds))
    labels = labels.numpy()
    assert np.allclose(labels.sum(1), 1.0)
    assert ((labels > 0.01) & (labels < 0.99)).any()  # mixed, not hard


def test_class_weight_balances():
    data = load_arrays(np.zeros((6, 4, 4, 3), np.uint8), np.array([0, 0, 0, 0, 1, 1]))
    weights = data.class_weight()
    assert weights == pytest.approx({0: 0.75, 1: 1.5})
    assert weights[0] * 4 == pytest.approx(weights[1] * 2)


def test_load_arrays_gray_resize_and_one_hot():
    x = np.random.default_rng(0).integers(0, 255, (6, 10, 12), dtype=np.uint8)
    y = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    data = load_arrays(x, y, image_size=(8, 8))
    image, label = next(iter(data.dataset))
    assert image.shape == (8, 8, 3) and data.class_names == ["0", "1", "2"] and int(label) == 0
    assert np.array_equal(image[..., 0], image[..., 2])
    train, val = load_arrays(x, y, validation_split=0.34, seed=0)
    assert len(train) + len(val) == 6 and val.class_counts == {"0": 1, "1": 1, "2": 1}


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.zeros((4, 8, 8, 2)), np.zeros(4), "Expected `x`"),
        (np.zeros((4, 8, 8, 3)), np.zeros(3), "one label per image"),
        (np.zeros((4, 8, 8, 3)), np.zeros(4), "at least two classes"),
        (np.zeros((4, 8, 8, 3)), np.array([0, 1, 2, -1]), "labels in"),
    ],
)
def test_load_arrays_errors(x, y, match):
    with pytest.raises(ValueError, match=match):
        load_arrays(x, y)


def test_load_csv_and_dataframe(tmp_path):
    names = []
    for i in range(6):
        name = f"img {i}.png"
        Image.fromarray(pattern(i)).save(tmp_path / name)
        names.append(name)
    (tmp_path / "gone.png").write_bytes(b"")
    frame = pd.DataFrame({"file": [*names, "gone.png"], "kind": ["x", "y", "z"] * 2 + ["x"]})
    frame.to_csv(tmp_path / "list.csv", index=False)
    with pytest.warns(UserWarning, match="gone.png"):
        data = load_csv(
            tmp_path / "list.csv",
            path_column="file",
            label_column="kind",
            image_size=8,
            cache_dir=tmp_path / "c",
        )
    assert data.class_names == ["x", "y", "z"] and len(data) == 6
    assert [data.class_names[i] for i in data.labels] == ["x", "y", "z"] * 2
    data = load_csv(
        frame.iloc[:6],
        path_column="file",
        label_column="kind",
        root=tmp_path,
        class_names=["z", "y", "x"],
        image_size=8,
        cache_dir=tmp_path / "c",
    )
    assert data.labels.tolist() == [2, 1, 0, 2, 1, 0]  # order as given
    ints = pd.DataFrame({"path": names, "label": [0, 1] * 3})
    assert load_csv(ints, root=tmp_path, image_size=8, cache_dir=tmp_path / "c").class_names == [
        "0",
        "1",
    ]


def test_load_csv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="CSV file"):
        load_csv(tmp_path / "none.csv")
    frame = pd.DataFrame({"path": ["a.png", "b.png"], "label": ["x", "y"]})
    with pytest.raises(ValueError, match="column 'file'"):
        load_csv(frame, path_column="file")
    with pytest.raises(ValueError, match="not among the class names"):
        load_csv(frame, class_names=["x", "w"])


def test_load_tfds_mock():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        data = load_tfds("mnist", split="train", image_size=16)
        train, test = load_tfds("mnist", split=["train", "test"], image_size=16)
        image, label = next(iter(data.dataset))
    assert data.class_names == [str(i) for i in range(10)] and len(data) == 6
    assert sum(data.class_counts.values()) == 6
    assert image.shape == (16, 16, 3) and image.dtype == tf.uint8
    assert 0 <= int(label) < 10 and len(test) == 6


def test_load_tfds_bad_key():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=2), pytest.raises(ValueError, match="image_key"):
        load_tfds("mnist", image_key="label")


def test_file_broken_after_validation_does_not_kill_the_epoch(tmp_path):
    _folder(tmp_path, {"a": 3, "b": 3})
    data = load_image_folder(tmp_path, image_size=8, cache_dir=tmp_path / ".c")
    (tmp_path / "b" / "1.png").write_bytes(b"garbage written after the check")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labels = np.concatenate([y for _, y in data.prepare(training=False, batch_size=4)])
    assert labels.tolist() == [0, 0, 0, 1, 1]  # the broken file is dropped, the rest trains


def test_cached_shuffle_mixes_classes_beyond_the_buffer(monkeypatch):
    from tltf.data import dataset
    monkeypatch.setattr(dataset, "_SHUFFLE_IMAGE_BYTES", 4 * 4 * 3 * 8)  # a buffer of 8 images
    x = np.zeros((64, 4, 4, 3), np.uint8)
    data = load_arrays(x, np.repeat([0, 1], 32))  # sorted by class, like a folder
    _, labels = next(iter(data.prepare(training=True, batch_size=16, cache="memory", seed=0)))
    assert 0 < int(np.sum(labels)) < 16  # both classes in the first batch
