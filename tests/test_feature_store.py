"""Cached features and trunk outputs too large for memory go to disk, read memory-mapped."""

import numpy as np
import pytest
from _train_tiny import tiny_arrays, tiny_model

from tltf.data import _cache_choice
from tltf.training import _store
from tltf.training.recipe import fine_tune

FAST = dict(batch_size=8, seed=0, early_stopping=False, verbose=0)


def _disk_only(monkeypatch):
    monkeypatch.setattr(_cache_choice, "MEMORY_FRACTION", 1e-12)


def _nowhere(monkeypatch):
    monkeypatch.setattr(_cache_choice, "MEMORY_FRACTION", 1e-12)
    monkeypatch.setattr(_cache_choice, "DISK_FRACTION", 1e-12)


def _batches(ds, epochs=2):
    return [[(x.numpy(), y.numpy()) for x, y in ds] for _ in range(epochs)]


def test_a_memory_mapped_store_serves_the_batches_memory_does(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(37, 6)).astype("float32"), rng.integers(0, 3, 37)
    rows = _store.Rows(tmp_path, "train")
    for start in range(0, 37, 10):
        rows.append(x[start:start + 10])
    mapped = rows.array()
    assert isinstance(mapped, np.memmap) and mapped.shape == (37, 6)
    assert (tmp_path / "train.f32").stat().st_size == x.nbytes
    for shuffle in (True, False):
        a = _batches(_store.dataset(x, y, 8, seed=3, shuffle=shuffle))
        b = _batches(_store.dataset(mapped, y, 8, seed=3, shuffle=shuffle))
        assert [len(e) for e in b] == [5, 5]
        for epoch_a, epoch_b in zip(a, b, strict=True):
            for (xa, ya), (xb, yb) in zip(epoch_a, epoch_b, strict=True):
                np.testing.assert_array_equal(xa, xb)
                np.testing.assert_array_equal(ya, yb)
    first, second = _batches(_store.dataset(mapped, y, 37, seed=3))
    assert not np.array_equal(first[0][1], second[0][1])  # reshuffled every epoch
    assert sorted(first[0][1].tolist()) == sorted(y.tolist())


def test_choose_keeps_memory_when_it_fits_else_a_new_folder_else_nowhere(tmp_path, monkeypatch):
    assert _store.choose(1000, tmp_path, "features") == _store.Place(None, True, "")
    _disk_only(monkeypatch)
    place = _store.choose(1000, tmp_path, "features of 3 images")
    assert place.fits and place.folder.parent == tmp_path
    assert place.folder.name.startswith("tltf-features-") and place.folder.is_dir()
    assert place.reason.startswith("the features of 3 images take 0 MB, more than 0% of the ")
    _store.remove(place)
    assert not place.folder.exists()
    _nowhere(monkeypatch)
    place = _store.choose(1000, tmp_path, "features")
    assert not place.fits and place.folder is None
    assert f"free on the disk of {tmp_path}" in place.reason


def test_phase_1_on_disk_features_trains_as_in_memory_and_leaves_no_file(tmp_path,
                                                                          monkeypatch, capsys):
    data, val = tiny_arrays(40), tiny_arrays(16, seed=1)
    options = dict(head_epochs=2, finetune_epochs=0, head_fit="adam", **FAST)
    in_memory = fine_tune(tiny_model(), data, val, directory=tmp_path / "memory", **options)
    _disk_only(monkeypatch)
    model = tiny_model()
    on_disk = fine_tune(model, data, val, directory=tmp_path / "disk", **options)
    assert on_disk.cached_features
    np.testing.assert_allclose(on_disk.history["loss"], in_memory.history["loss"], rtol=1e-6)
    np.testing.assert_allclose(on_disk.history["val_loss"], in_memory.history["val_loss"],
                               rtol=1e-6)
    for a, b in zip(model.get_weights(), in_memory.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    log = (tmp_path / "disk" / "logs" / "train.log").read_text()
    assert f"phase 1: backbone features kept on disk in {tmp_path / 'disk'}" in log
    assert "read memory-mapped (the backbone features of up to 56 images" in log
    assert not list((tmp_path / "disk").glob("tltf-features-*"))  # removed when phase 1 ends


def test_head_fit_auto_uses_adam_on_disk_features_and_convex_says_why_not(monkeypatch):
    _disk_only(monkeypatch)
    data = tiny_arrays(40)
    result = fine_tune(tiny_model(), data, head_epochs=2, finetune_epochs=0, **FAST)
    assert result.head_fit == "adam" and result.cached_features
    with pytest.raises(ValueError, match="head_fit='convex'.*the features do not fit memory"):
        fine_tune(tiny_model(), data, head_epochs=2, finetune_epochs=0, head_fit="convex",
                  **FAST)


def test_features_that_fit_nowhere_train_the_head_on_the_full_model(tmp_path, monkeypatch):
    _nowhere(monkeypatch)
    data = tiny_arrays(24)
    result = fine_tune(tiny_model(), data, head_epochs=1, finetune_epochs=0, head_fit="adam",
                       directory=tmp_path, **FAST)
    assert not result.cached_features and result.history["phase"] == [1]
    log = (tmp_path / "logs" / "train.log").read_text()
    assert "phase 1: training the head on the full model (cache_features='auto': the backbone " \
           "features of up to 24 images" in log
    with pytest.raises(ValueError, match="Phase 1 cannot cache the backbone features: .*"
                                         "Received: cache_features=True"):
        fine_tune(tiny_model(), data, head_epochs=1, finetune_epochs=0, cache_features=True,
                  **FAST)


def test_trunk_outputs_on_disk_train_the_weights_memory_does(tmp_path, monkeypatch):
    data = tiny_arrays(32)
    options = dict(head_epochs=0, finetune_epochs=2, unfreeze="top_blocks:1",
                   trunk_cache=True, finetune_lr=1e-2, **FAST)
    memory_model, disk_model = tiny_model(), tiny_model()
    in_memory = fine_tune(memory_model, data, directory=tmp_path / "memory", **options)
    _disk_only(monkeypatch)
    on_disk = fine_tune(disk_model, data, directory=tmp_path / "disk", **options)
    assert in_memory.trunk_cache == on_disk.trunk_cache == "block2_relu"
    np.testing.assert_allclose(on_disk.history["loss"], in_memory.history["loss"], rtol=1e-6)
    for a, b in zip(disk_model.get_weights(), memory_model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    log = (tmp_path / "disk" / "logs" / "train.log").read_text()
    assert f"on disk in {tmp_path / 'disk'}" in log and "read memory-mapped" in log
    assert not list((tmp_path / "disk").glob("tltf-features-*"))  # removed when phase 2 ends
