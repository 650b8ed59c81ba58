"""One source of truth: the single atomic writer, the tune head files, one image_size check."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from tltf._io import atomic_path, atomic_write, load_arrays, save_arrays


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------- atomic_write


def test_atomic_write_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    atomic_write(path, "new")
    assert path.read_text() == "new"
    atomic_write(path, b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"
    assert _leftovers(tmp_path) == []


def test_a_failing_check_keeps_the_old_file_and_removes_the_temp_file(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"good")
    seen = []

    def check(tmp):
        seen.append((tmp.parent, tmp.read_bytes()))
        raise RuntimeError("does not run")

    with pytest.raises(RuntimeError, match="does not run"):
        atomic_write(path, b"broken", check=check)
    assert seen == [(tmp_path, b"broken")]  # the check saw the new content, beside the target
    assert path.read_bytes() == b"good"
    assert _leftovers(tmp_path) == []


def test_a_writer_that_raises_keeps_the_old_file_and_removes_the_temp_file(tmp_path):
    path = tmp_path / "best.npz"
    save_arrays(path, [np.arange(3)])
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_bytes(b"half a fi")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of Keras' save
    assert load_arrays(path)[0].tolist() == [0, 1, 2]
    assert _leftovers(tmp_path) == []


def test_a_failing_write_of_a_new_file_leaves_nothing(tmp_path):
    class Unencodable:
        pass

    with pytest.raises(TypeError):
        atomic_write(tmp_path / "a.json", Unencodable())  # not bytes: fails at write
    assert list(tmp_path.iterdir()) == []


def test_the_temp_file_keeps_the_name_ending_writers_insist_on(tmp_path):
    with atomic_path(tmp_path / "model.weights.h5") as tmp:
        assert tmp.name.endswith(".weights.h5") and tmp.parent == tmp_path
        tmp.write_bytes(b"x")


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_write_gives_umask_permissions_not_private_ones(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "labels.txt", "cat\n")
        save_arrays(tmp_path / "head.npz", [np.zeros(1)])
    finally:
        os.umask(previous)
    for name in ("labels.txt", "head.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask


def test_concurrent_writers_of_one_file_never_share_a_temp_name(tmp_path):
    with atomic_path(tmp_path / "a") as first, atomic_path(tmp_path / "a") as second:
        assert first != second
        first.write_text("1")
        second.write_text("2")
    assert (tmp_path / "a").read_text() == "1"  # the last to finish wins, whole
    assert _leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- arrays


def test_save_arrays_round_trips_in_order(tmp_path):
    arrays = [np.ones((2, 3), "float32"), np.arange(4), np.zeros(0)]
    save_arrays(tmp_path / "w.npz", arrays)
    loaded = load_arrays(tmp_path / "w.npz")
    assert [a.dtype for a in loaded] == [a.dtype for a in arrays]
    for a, b in zip(loaded, arrays):
        np.testing.assert_array_equal(a, b)


def test_a_tune_head_file_with_the_old_w_keys_still_loads(tmp_path):
    # tltf 0.1's search wrote its warm-start heads as w0, w1, ... (12 keys: w10 sorts before w2)
    arrays = [np.full((i + 1,), i, "float32") for i in range(12)]
    np.savez(tmp_path / "head.npz", **{f"w{i}": a for i, a in enumerate(arrays)})
    loaded = load_arrays(tmp_path / "head.npz")
    assert [a.tolist() for a in loaded] == [a.tolist() for a in arrays]


def test_load_arrays_never_unpickles(tmp_path):
    np.savez(tmp_path / "evil.npz", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_arrays(tmp_path / "evil.npz")


def test_the_tune_warm_start_reuses_a_head_saved_with_old_keys(tmp_path):
    import keras

    import tltf
    from tltf.models.parts import head_of
    from tltf.tune.hypermodel import TransferHyperModel, _head_key

    hypermodel = TransferHyperModel("mobilenet_v2", 2, image_size=32, weights=None,
                                    warm_start=tmp_path, head_epochs=1, seed=0)
    model = tltf.build_classifier("mobilenet_v2", 2, image_size=32, weights=None)
    head = head_of(model)
    old = [np.full(w.shape, 0.5, w.dtype) for w in head.get_weights()]
    k = {"backbone": "mobilenet_v2", "head_lr": 1e-3, "dropout": 0.2, "label_smoothing": 0.0,
         "augment": None}
    folder = tmp_path / _head_key(k, 1, 32, None, 0)
    folder.mkdir()
    np.savez(folder / "head.npz", **{f"w{i}": w for i, w in enumerate(old)})
    info = hypermodel._phase1(model, None, None, k, {})
    assert info["head_reused"] is True
    for got, want in zip(head.get_weights(), old):
        np.testing.assert_array_equal(got, want)
    keras.backend.clear_session()


# ----------------------------------------------------------------------------- one of each


@pytest.mark.parametrize("size", [0, -3, 4097, 100000, (224, 5000), (32,), (32, 32, 3), "big",
                                  32.0, True, (32, None), [32, False]])
def test_one_image_size_check_for_data_models_and_the_cli(tmp_path, size):
    import tltf
    from tltf.data.decode import _image_size
    from tltf.runs.train import _check_arguments

    message = r"`image_size` must be an int or a \(height, width\) pair of ints, between 1 and 4096"
    with pytest.raises(ValueError, match=message + r".*Received: image_size="):
        _image_size(size)
    with pytest.raises(ValueError, match=message):
        tltf.build_classifier("mobilenet_v2", 2, image_size=size, weights=None)
    with pytest.raises(ValueError, match=message):
        tltf.load_arrays(np.zeros((2, 8, 8, 3), "uint8"), np.array([0, 1]), image_size=size)
    (tmp_path / "data").mkdir()
    config = {"data": {"path": str(tmp_path / "data"), "image_size": size}, "train": {},
              "export": {}, "model": {}}
    with pytest.raises(ValueError, match=message):
        _check_arguments(config)


@pytest.mark.parametrize("size, expected", [(32, (32, 32)), ((24, 40), (24, 40)),
                                            ([4096, 1], (4096, 1)), (np.int64(8), (8, 8))])
def test_the_image_size_check_accepts_ints_and_pairs(size, expected):
    from tltf.data.decode import _image_size

    assert _image_size(size) == expected


def test_compile_classifier_resolves_jit_auto_as_runtime_does():
    import tensorflow as tf

    import tltf
    from tltf.models.precision import resolve_jit_compile

    model = tltf.build_classifier("mobilenet_v2", 2, image_size=32, weights=None)
    tltf.compile_classifier(model)
    assert model.jit_compile is resolve_jit_compile("auto") is False  # CPU
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        assert resolve_jit_compile("auto") is False
    with pytest.raises(ValueError, match="Received: jit_compile='yes'"):
        tltf.compile_classifier(model, jit_compile="yes")


def test_build_classifier_uses_the_runtime_dtype_policy_scope():
    import keras

    import tltf

    before = keras.config.dtype_policy().name
    with pytest.raises(ValueError, match="Received: policy='half'"):
        tltf.build_classifier("mobilenet_v2", 2, image_size=32, weights=None, dtype_policy="half")
    assert keras.config.dtype_policy().name == before


def test_one_restore_only_callback_for_both_backups(tmp_path):
    import keras

    from tltf.training.checkpoint import PhaseCheckpoint, RunState
    from tltf.training.distribute import _restore_only, _RestoreOnly

    for cls, args in [(keras.callbacks.BackupAndRestore, (str(tmp_path / "b"),)),
                      (PhaseCheckpoint, (tmp_path / "c", 1, RunState()))]:
        worker = _restore_only(cls)(*args)
        assert isinstance(worker, _RestoreOnly) and isinstance(worker, cls)
        assert _restore_only(cls) is type(worker)  # one class per base, made once
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        model.fit(np.zeros((4, 2)), np.zeros(4), epochs=2, verbose=0, callbacks=[worker])
        assert not os.path.exists(worker._scratch)  # the scratch folder is gone after fit
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()  # never wrote
