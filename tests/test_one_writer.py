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
    from tltf.models import head_of
    from tltf.tune import TransferHyperModel, _head_key

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
