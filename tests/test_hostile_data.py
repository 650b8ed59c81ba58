"""Hostile or odd input data: one clear line, fast, bounded memory, nothing silently lost.

Each test reproduces a reported failure (a decompression bomb, a FIFO named `.jpg`, a name
that is not UTF-8, a BMP TensorFlow cannot decode, two decode paths, ...) and asserts the
exact outcome: which file or argument the message names, and what still loads.
"""

import os
import signal
import struct
import sys
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tltf
from tltf.cli import main
from tltf.data import checks, load_arrays, load_image_folder
from tltf.data._batches import batches
from tltf.data.checks import check_files
from tltf.data.layout import list_image_files
from tltf.evaluation.metrics import evaluate
from tltf.evaluation.prediction import _read_files, predict


@pytest.fixture(autouse=True)
def _no_hang():
    """A hang (a FIFO read, /dev/zero) fails the test after a minute instead of blocking."""
    def fail(*_):
        raise TimeoutError("hung on hostile input")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _png_header_only(path, width, height):
    """A valid PNG signature and IHDR announcing width x height, with a tiny IDAT."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                           + chunk(b"IEND", b""))


def _rgb555_bmp(path, h, w, rgb=(0, 0, 31)):
    """A valid 16-bit (RGB555, BI_RGB) BMP: Pillow reads it, tf.io.decode_image does not."""
    v = (rgb[0] << 10) | (rgb[1] << 5) | rgb[2]
    row = np.full(w, v, "<u2").tobytes() + b"\0" * ((-2 * w) % 4)
    body = row * h
    header = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 16, 0, len(body), 2835, 2835, 0, 0)
    Path(path).write_bytes(b"BM" + struct.pack("<IHHI", 54 + len(body), 0, 0, 54) + header + body)


def _colour(path, channel, size=(12, 16)):
    pixels = np.zeros((*size, 3), "uint8")
    pixels[..., channel] = 200
    Image.fromarray(pixels).save(path)


def _folder(root, counts, ext=".png"):
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _colour(root / name / f"{i}{ext}", c % 3)


def _mean_colour_model(size=8, names=None):
    """Class = the dominant colour channel (r, g, b): predictions are known per file."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Softmax()(x))


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# 1. A decompression bomb is refused from its header, before any decoding.


def test_huge_image_refused_from_header_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 12000, 12000)
    tracemalloc.start()
    (check,) = check_files([bomb], cache_dir=tmp_path / "c")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert not check.ok
    assert "12000x12000" in check.reason and "max_pixels=89,478,485" in check.reason
    assert "pass a larger `max_pixels`" in check.reason
    assert peak < 50 * 2**20  # the 432 MB array was never allocated


def test_max_pixels_is_configurable_and_not_cached(tmp_path):
    _folder(tmp_path / "d", {"a": 2, "b": 2})
    Image.fromarray(np.zeros((40, 40, 3), "uint8")).save(tmp_path / "d" / "b" / "big.png")
    cache = tmp_path / "c"
    with pytest.warns(UserWarning, match=r"big\.png: image too large \(40x40 = 1,600 pixels"):
        data = load_image_folder(tmp_path / "d", image_size=8, cache_dir=cache, max_pixels=1000)
    assert len(data) == 4
    assert [(Path(p).name, "max_pixels=1,000" in r) for p, r in data.skipped] == [
        ("big.png", True)]
    # The same cache, the default limit: the file is accepted now.
    again = load_image_folder(tmp_path / "d", image_size=8, cache_dir=cache)
    assert len(again) == 5 and again.skipped == []
    with pytest.raises(ValueError, match="Received: max_pixels=0"):
        check_files([], cache_dir=cache, max_pixels=0)


# 2. FIFOs, devices and links to them are named and never opened; huge files by size.


def test_fifo_device_link_and_huge_file_are_named_never_opened(tmp_path):
    _folder(tmp_path, {"a": 2, "b": 2})
    os.mkfifo(tmp_path / "a" / "pipe.jpg")  # opening it would block forever
    os.symlink("/dev/zero", tmp_path / "b" / "zero.jpg")  # reading it would never end
    with open(tmp_path / "b" / "huge.jpg", "wb") as f:  # sparse: no disk used
        f.truncate(300 * 2**20)
    start = time.perf_counter()
    data = _quiet(load_image_folder, tmp_path, image_size=8, cache_dir=tmp_path / ".c")
    assert time.perf_counter() - start < 30
    assert len(data) == 4
    reasons = {Path(p).name: r for p, r in data.skipped}
    assert reasons["pipe.jpg"] == "not a regular file (FIFO)"
    assert reasons["zero.jpg"] == "not a regular file (character device)"
    assert reasons["huge.jpg"].startswith("file too large (300 MB")
    report = tltf.audit(tmp_path, cache_dir=tmp_path / ".c")
    assert {Path(p).name for p, _ in report.unreadable} == {"pipe.jpg", "zero.jpg", "huge.jpg"}


def test_cli_audit_on_a_fifo_returns(tmp_path, capsys):
    _folder(tmp_path, {"a": 2, "b": 2})
    os.mkfifo(tmp_path / "a" / "pipe.jpg")
    assert main(["audit", str(tmp_path)]) == 0
    assert "pipe.jpg" in capsys.readouterr().out


# 3. Names that are not UTF-8 load like any other.


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system with byte names")
def test_non_utf8_file_name_loads(tmp_path):
    _folder(tmp_path, {"a": 2, "b": 2})
    raw = os.path.join(os.fsencode(tmp_path / "a"), b"caf\xe9.png")
    Image.fromarray(np.full((12, 16, 3), 7, "uint8")).save(raw, format="PNG")
    data = load_image_folder(tmp_path, image_size=8, cache_dir=tmp_path / ".c")
    assert len(data) == 5 and data.skipped == []
    name = [f for f in data.files if os.fsencode(f).endswith(b"caf\xe9.png")]
    assert len(name) == 1
    images = [x for x, _ in data.dataset.as_numpy_iterator()]
    assert len(images) == 5 and (images[data.files.index(name[0])] == 7).all()


# 4. A file TensorFlow cannot decode is caught by the check; evaluation never shifts files.


def test_rgb555_bmp_is_reencoded_and_evaluate_attributes_every_file(tmp_path):
    _folder(tmp_path, {"r": 5, "g": 5, "b": 3})
    _rgb555_bmp(tmp_path / "r" / "0a_blue16.bmp", 12, 16)  # blue, in the red class: a mistake
    (check,) = check_files([tmp_path / "r" / "0a_blue16.bmp"], cache_dir=tmp_path / ".c")
    assert check.ok and not check.tf_decodes and check.decoded_path.endswith(".png")
    data = load_image_folder(tmp_path, image_size=8, class_names=["r", "g", "b"],
                             cache_dir=tmp_path / ".c")
    assert len(data) == 14
    # A second mistake after the BMP: a red image in the blue class.
    _colour(tmp_path / "b" / "2.png", 0)
    data = load_image_folder(tmp_path, image_size=8, class_names=["r", "g", "b"],
                             cache_dir=tmp_path / ".c")
    report = evaluate(_mean_colour_model(), data)
    assert report.num_samples == 14
    assert sorted(Path(m.file).name for m in report.mistakes) == ["0a_blue16.bmp", "2.png"]
    for m in report.mistakes:
        assert Path(m.file).name == Path(data.files[m.index]).name


def test_file_broken_after_the_check_fails_evaluate_naming_it(tmp_path):
    # Three classes for the 3-output model: 2 names for 3 outputs now raise before reading.
    _folder(tmp_path, {"a": 3, "b": 3, "c": 3})
    data = load_image_folder(tmp_path, image_size=8, cache_dir=tmp_path / ".c")
    (tmp_path / "a" / "1.png").write_bytes(b"garbage written after the check")
    with pytest.raises(ValueError, match=r"Cannot decode .*a/1\.png although it passed"):
        evaluate(_mean_colour_model(), data, class_names=["a", "b", "c"])


# 5. One decode path: a file gives the same pixels in training, evaluation and predict.


def test_predict_reads_files_with_the_training_pipeline(tmp_path):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:960, 0:1280]
    big = np.stack([127 + 120 * np.sin(x / (7 + 9 * k) + y / 13) for k in range(3)], -1)
    big = (big + rng.normal(0, 20, big.shape)).clip(0, 255).astype("uint8")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    Image.fromarray(big).save(tmp_path / "a" / "photo.jpg", quality=90)
    _colour(tmp_path / "b" / "0.png", 1)
    data = load_image_folder(tmp_path, image_size=224, cache_dir=tmp_path / ".c")
    trained = next(iter(data.dataset))[0].numpy()
    files, batches, skipped = _read_files([str(tmp_path / "a" / "photo.jpg")], (224, 224),
                                          "stretch")
    predicted = np.concatenate(list(batches))
    assert skipped == [] and predicted.shape == (1, 224, 224, 3)
    assert predicted[0].astype("uint8").tobytes() == trained.tobytes()


# 6. predict: one bad file costs nothing but itself; the CLI warns once per file.


def test_predict_folder_with_a_bad_file_predicts_the_others(tmp_path):
    (tmp_path / "imgs").mkdir()
    _colour(tmp_path / "imgs" / "red.png", 0)
    _colour(tmp_path / "imgs" / "blue.png", 2)
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match=r"broken\.jpg: not an image"):
        out = predict(_mean_colour_model(), tmp_path / "imgs", class_names="rgb")
    assert [(Path(p.file).name, p.label) for p in out] == [("blue.png", "b"), ("red.png", "r")]
    assert [(Path(p).name, r) for p, r in out.skipped] == [
        ("broken.jpg", "not an image (content is no known image format)")]
    with pytest.raises(ValueError, match=r"None of the 1 file\(s\) is a readable image: .*broken"):
        predict(_mean_colour_model(), tmp_path / "imgs" / "broken.jpg")


def test_cli_predict_prints_good_files_and_one_warning_per_bad_file(tmp_path, capsys):
    model_file = tmp_path / "m.keras"
    _mean_colour_model().save(model_file)
    (tmp_path / "imgs").mkdir()
    _colour(tmp_path / "imgs" / "red.png", 0)
    (tmp_path / "imgs" / "empty.jpg").write_bytes(b"")
    assert main(["predict", str(model_file), str(tmp_path / "imgs")]) == 0
    out, err = capsys.readouterr()
    assert "red.png\t0 " in out and "empty.jpg" not in out
    assert err.strip().splitlines() == [
        f"tltf: warning: skipped {tmp_path / 'imgs' / 'empty.jpg'}: empty file (0 bytes)"]
    assert main(["predict", str(model_file), str(tmp_path / "imgs" / "empty.jpg")]) == 1
    assert "empty.jpg: empty file" in capsys.readouterr().err


# 7. A class folder the model does not know is an error, not a silent omission.


def test_unknown_class_folder_with_class_names_raises(tmp_path):
    _folder(tmp_path, {"cat": 2, "dog": 2, "bird": 2})
    with pytest.raises(ValueError, match=r"class folder\(s\) \['bird'\] that are not among the "
                                         r"classes \['cat', 'dog'\]"):
        load_image_folder(tmp_path, image_size=8, class_names=["cat", "dog"],
                          cache_dir=tmp_path / ".c")


def test_cli_evaluate_names_the_unknown_class(tmp_path, capsys):
    model = tltf.build_classifier("mobilenet_v2", 2, image_size=32, weights=None,
                                  class_names=["cat", "dog"])
    model.save(tmp_path / "m.keras")
    _folder(tmp_path / "data", {"cat": 2, "dog": 2, "bird": 2})
    assert main(["evaluate", str(tmp_path / "m.keras"), str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "['bird']" in err and "['cat', 'dog']" in err


# 8. Labels out of range in a tf.data input raise before training.


def test_out_of_range_label_in_tf_data_raises(tmp_path):
    x = np.zeros((8, 32, 32, 3), "float32")
    ds = tf.data.Dataset.from_tensor_slices((x, np.array([0, 1, 7, 0, 1, 0, 1, 0]))).batch(4)
    with pytest.raises(ValueError, match=r"has label 7, but the model has 2 classes.*"
                                         r"Received: label=7, num_classes=2"):
        batches(ds, "train", training=True, batch_size=4, seed=0, num_classes=2, fit=True)
    late = tf.data.Dataset.from_tensor_slices((x, np.array([0, 1, 0, 1, 0, 1, 0, 9]))).batch(4)
    checked = batches(late, "train", training=True, batch_size=4, seed=0, num_classes=2,
                      fit=True).data
    with pytest.raises(tf.errors.InvalidArgumentError, match="label outside 0..1"):
        list(checked)
    model = tltf.build_classifier("mobilenet_v2", 2, image_size=32, weights=None)
    with pytest.raises(ValueError, match="has label 7, but the model has 2 classes"):
        tltf.fine_tune(model, ds, head_epochs=1, finetune_epochs=0, verbose=0)
    with pytest.raises(ValueError, match="has label 7, but the model has 2 classes"):
        tltf.fine_tune(model, ds, head_epochs=1, finetune_epochs=0, cache_features=False,
                       verbose=0)


# 9. Empty or too-small data: one error that says what to change.


def test_class_too_small_for_the_split_raises(tmp_path):
    _folder(tmp_path, {"a": 1, "b": 5})
    with pytest.raises(ValueError, match=r"at least 2 usable images per class .* a \(1\) .*"
                                         r"Received: validation_split=0.2"):
        load_image_folder(tmp_path, image_size=8, validation_split=0.2, cache_dir=tmp_path / ".c")
    with pytest.raises(ValueError, match=r"at least 2 usable images per class .* 0 \(1\)"):
        load_arrays(np.zeros((6, 4, 4, 3), "uint8"), np.array([0, 1, 1, 1, 1, 1]),
                    validation_split=0.2)


def test_empty_data_raises(tmp_path):
    with pytest.raises(ValueError, match=r"at least one image.*Received: x.shape=\(0, 8, 8, 3\)"):
        load_arrays(np.zeros((0, 8, 8, 3), "uint8"), np.zeros(0, int), class_names=["a", "b"])
    empty = tf.data.Dataset.from_tensor_slices(
        (np.zeros((0, 32, 32, 3), "float32"), np.zeros(0, "int32"))).batch(4)
    with pytest.raises(ValueError, match=r"`train` is an empty tf.data.Dataset"):
        batches(empty, "train", training=True, batch_size=4, seed=0, fit=True)


def test_folder_with_only_train_is_not_one_class_named_train(tmp_path):
    _folder(tmp_path / "train", {"a": 2, "b": 2})
    with pytest.raises(ValueError, match=r"holds only the split folder\(s\) train/.*"
                                         r"Point `path` at .*train"):
        load_image_folder(tmp_path, image_size=8, cache_dir=tmp_path / ".c")


# 10. Absurd image sizes are refused at once.


@pytest.mark.parametrize("size", [100000, 0, (224, 5000), -3])
def test_absurd_image_size_is_refused_immediately(tmp_path, size):
    _folder(tmp_path, {"a": 1, "b": 1})
    start = time.perf_counter()
    with pytest.raises(ValueError, match=rf"Received: image_size={size!r}".replace("(", r"\(")
                       .replace(")", r"\)")):
        load_image_folder(tmp_path, image_size=size, cache_dir=tmp_path / ".c")
    with pytest.raises(ValueError, match="image_size"):
        tltf.build_classifier("mobilenet_v2", 2, image_size=size, weights=None)
    assert time.perf_counter() - start < 5


def test_list_image_files_lists_special_entries_for_the_check(tmp_path):
    os.mkfifo(tmp_path / "p.png")
    assert [Path(p).name for p in list_image_files(tmp_path)] == ["p.png"]
    assert checks._check_one(str(tmp_path / "p.png")).reason == "not a regular file (FIFO)"
