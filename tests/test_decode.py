"""Validation pass and decoding: every format right, bad files named, the cache honest."""

import os
import sqlite3

import numpy as np
import pytest
import tensorflow as tf
from image_cases import BAD, GOOD, IGNORED, H, W, make_odd_folder, rotated_source
from PIL import Image, ImageOps

from tltf.data import checks as checks_module
from tltf.data import decode
from tltf.data.checks import check_files, default_cache_dir
from tltf.data.decode import decode_image_file, resize_image
from tltf.data.layout import list_image_files


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    return make_odd_folder(tmp_path_factory.mktemp("odd"))


@pytest.fixture(scope="module")
def checks(odd, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    files = list_image_files(odd)
    return cache, {os.path.relpath(c.path, odd): c for c in check_files(files, cache_dir=cache)}


def test_list_image_files_ignores_non_images(odd):
    found = {os.path.relpath(p, odd) for p in list_image_files(odd)}
    assert found == set(GOOD) | set(BAD)
    assert not found & set(IGNORED)


def test_list_image_files_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        list_image_files(tmp_path / "nope")


def test_bad_files_found_with_reasons(checks):
    _, by_name = checks
    assert {n for n, c in by_name.items() if not c.ok} == set(BAD)
    for name, word in BAD.items():
        assert word in by_name[name].reason, (name, by_name[name].reason)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_every_format_decodes_like_pillow(checks, odd, name):
    _, by_name = checks
    check = by_name[name]
    assert check.ok, check.reason
    image = decode_image_file(tf.constant(check.decoded_path)).numpy()
    with Image.open(odd / name) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode == "I;16":
            expected = np.repeat((np.asarray(im) // 257).astype(np.uint8)[..., None], 3, -1)
        else:
            expected = np.asarray(im.convert("RGB"))
    assert image.dtype == np.uint8 and image.shape == expected.shape
    # JPEG decoders differ by a few levels (CMYK, chroma upsampling); other formats match
    tolerance = 12 if check.format == "JPEG" else 1
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= tolerance


def test_exif_rotation_is_honoured(checks):
    _, by_name = checks
    check = by_name["dogs/rotated.jpg"]
    assert check.orientation == 6 and check.upright_size == (W, H)
    image = decode_image_file(tf.constant(check.decoded_path)).numpy()
    assert image.shape == (W, H, 3)  # tall, as the phone meant it
    assert image[: W // 2 - 2].mean() > 200 and image[W // 2 + 2 :].mean() < 50  # white on top
    assert rotated_source()[:, : W // 2].mean() == 255  # stored: white on the left


def test_only_odd_files_are_reencoded(checks):
    _, by_name = checks
    reencoded = {n for n, c in by_name.items() if c.ok and c.decoded_path != c.path}
    assert reencoded == {"dogs/rotated.jpg", "dogs/palette.bmp"}


def test_extension_mismatch_flagged(checks):
    _, by_name = checks
    assert by_name["dogs/png named as.jpg"].extension_mismatch
    assert not by_name["cats/baseline.jpg"].extension_mismatch


def test_cache_reused_and_invalidated(odd, checks, monkeypatch):
    cache, by_name = checks
    with sqlite3.connect(cache / "file-checks.sqlite") as db:
        (rows,) = db.execute("SELECT COUNT(*) FROM checks").fetchone()
    assert rows == len(by_name)
    calls = []
    original = checks_module._check_one
    monkeypatch.setattr(checks_module, "_check_one", lambda p, *a: calls.append(p) or original(p, *a))
    files = list_image_files(odd)
    check_files(files, cache_dir=cache)
    assert calls == []  # nothing re-read
    target = odd / "cats/gray.png"
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    check_files(files, cache_dir=cache)
    assert calls == [str(target)]


def test_check_files_bad_workers(tmp_path):
    with pytest.raises(ValueError, match="workers"):
        check_files([], cache_dir=tmp_path, workers=0)


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "tltf"


@pytest.mark.parametrize("mode", ["stretch", "crop", "pad"])
def test_resize_modes(mode):
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, 10:30] = 200  # a centred bright square
    out = resize_image(tf.constant(image), (10, 10), mode).numpy()
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    if mode == "crop":
        assert out.min() >= 190  # only the centre square survives
    elif mode == "pad":
        assert out[:2].max() == 0 and out[-2:].max() == 0  # black bars top and bottom
        assert out[4:6, 4:6].min() >= 190
    else:
        assert out[:, :2].max() < 20 and out[:, 4:6].min() >= 190  # squeezed horizontally


def test_resize_is_antialiased():
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2] = 255
    out = resize_image(tf.constant(stripes), (8, 8)).numpy()
    assert np.abs(out.astype(int) - 128).max() <= 8  # averaged, not aliased to 0 or 255


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((30, 40), lambda x, s: tf.image.resize(x, s)),  # under 2x both ways: Keras' bilinear
        ((30, 20), lambda x, s: tf.image.resize(x, s, method="area")),  # over 2x on one side
        ((24, 40), lambda x, s: tf.image.resize(x, s)),  # exactly 2x on one side: bilinear
        # exactly 2x both ways: bilinear, whose taps are then the box filter's own means
        ((24, 32), lambda x, s: tf.image.resize(x, s, method="area")),
        ((12, 16), lambda x, s: tf.image.resize(x, s, method="area")),
        ((60, 40), lambda x, s: tf.image.resize(x, s, antialias=True)),  # one side grows
        ((48, 64), lambda x, s: tf.cast(x, tf.float32)),  # the same size: untouched
    ],
)
def test_resize_filter_follows_the_shrink_known_or_not_when_built(size, expected):
    image = tf.constant(np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8))
    want = tf.cast(tf.clip_by_value(tf.round(expected(image, size)), 0, 255), tf.uint8).numpy()
    np.testing.assert_array_equal(resize_image(image, size).numpy(), want)
    unknown = tf.function(lambda x: resize_image(x, size),
                          input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    np.testing.assert_array_equal(unknown(image).numpy(), want)


def test_resize_bad_mode():
    with pytest.raises(ValueError, match="Expected `resize` to be one of"):
        resize_image(tf.zeros((4, 4, 3)), (2, 2), "squash")


def _ratio(check, size, resize):
    return int(decode._decode_ratio(check.height, check.width, check.is_jpeg, size, resize))


def test_decode_ratio_one_rule_for_a_folder_and_a_record():
    """The same ratios for arrays (every file of a folder) and per scalar tensor (a record)."""
    heights, widths = [100, 100, 100, 100, 50, 100, 100], [100, 60, 100, 100, 50, 800, 100]
    jpeg = [True, True, True, True, True, True, False]
    sizes = (50, 25, 12, 11, 50, 50, 10)
    for resize, want in (("stretch", [2, 2, 8, 8, 1, 2, 0]), ("pad", [2, 4, 8, 8, 1, 8, 0])):
        for (h, w, j, s, expect) in zip(heights, widths, jpeg, sizes, want, strict=True):
            got = decode._decode_ratio(tf.constant(h), tf.constant(w), tf.constant(j), (s, s),
                                       resize)
            assert int(got) == expect, (h, w, s, resize)
        # one call over all the files (as for a folder): the same answers
        for s in set(sizes):
            row = decode._decode_ratio(heights, widths, jpeg, (s, s), resize).numpy().tolist()
            assert row == [int(decode._decode_ratio(h, w, j, (s, s), resize))
                           for h, w, j in zip(heights, widths, jpeg, strict=True)]


def test_jpeg_decoded_at_reduced_scale(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(np.full((256, 320, 3), 90, np.uint8)).save(path)
    (check,) = check_files([path], cache_dir=tmp_path / "c")
    assert _ratio(check, (64, 64), "stretch") == 4
    assert _ratio(check, (64, 64), "pad") == 4
    assert _ratio(check, (200, 200), "crop") == 1
    small = decode_image_file(tf.constant(str(path)), 4).numpy()
    assert small.shape == (64, 80, 3) and abs(int(small.mean()) - 90) <= 2


def _same_size_jpegs(folder, n=4, size=(48, 64)):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / c / f"{i}.jpg", quality=90)


@pytest.mark.parametrize(
    ("h", "w"),
    [  # 48x64 files, read at DCT ratio 2 (24x32) for the first three, 1 for the last two
        (14, 20),  # 24x32 -> 14x20: under 2x both ways, bilinear
        (16, 16),  # 24x32 -> 16x16: 1.5x and exactly 2x, bilinear
        (16, 8),  # 24x32 -> 16x8: 1.5x and 4x, area
        (40, 40),  # 48x64 -> 40x40: bilinear
        (96, 96),  # enlarged: antialiased bilinear
    ],
)
def test_same_size_jpegs_decode_as_each_file_alone(tmp_path, h, w):
    from tltf.data import load_image_folder

    _same_size_jpegs(tmp_path / "d")
    data = load_image_folder(tmp_path / "d", image_size=(h, w), cache_dir=tmp_path / "c")
    checks = check_files(data.files, cache_dir=tmp_path / "c")
    got = [x.numpy() for x, _ in data.dataset]
    for image, check in zip(got, checks, strict=True):
        ratio = _ratio(check, (h, w), "stretch")
        alone = resize_image(decode_image_file(tf.constant(check.path), tf.constant(ratio)),
                             (h, w)).numpy()
        np.testing.assert_array_equal(image, alone)


def test_same_size_jpeg_resized_after_the_check_is_named(tmp_path):
    from tltf.data import load_image_folder
    from tltf.data.dataset import _batches_in_order

    _same_size_jpegs(tmp_path / "d")
    data = load_image_folder(tmp_path / "d", image_size=16, cache_dir=tmp_path / "c")
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "d" / "b" / "1.jpg")
    with pytest.raises(ValueError, match=r"Cannot decode .*b/1\.jpg although it passed"):
        list(_batches_in_order(data, 4))
    # Training leaves the changed file out (with a logged warning) and keeps the epoch.
    assert sum(len(y) for _, y in data.prepare(training=True, batch_size=3, cache=None)) == 7


def test_cached_pass_restores_the_cycle_collector(tmp_path, monkeypatch):
    import gc

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    check_files([tmp_path / "a.png"], cache_dir=tmp_path / "c")
    assert gc.isenabled()
    monkeypatch.setattr(checks_module, "CheckStore", _raising_store)
    with pytest.raises(RuntimeError, match="store down"):
        check_files([tmp_path / "a.png"], cache_dir=tmp_path / "c")
    assert gc.isenabled()  # still on after a pass that raised inside the pause
    monkeypatch.undo()
    gc.disable()
    try:
        check_files([tmp_path / "a.png"], cache_dir=tmp_path / "c2")
        assert not gc.isenabled()  # a caller's own choice is left as it was
    finally:
        gc.enable()


def _raising_store(*args, **kwargs):
    raise RuntimeError("store down")
