"""One batching entry point, one head accessor, one class-name rule: each branch, each error."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tltf.data import load_arrays
from tltf.data._batches import batches
from tltf.data._class_names import resolve_class_names
from tltf.evaluation.metrics import evaluate
from tltf.models.heads import ClassificationHead
from tltf.models.parts import head_of, head_or_none

X = np.random.default_rng(0).uniform(0, 255, (6, 4, 4, 3)).astype("float32")
Y = np.array([0, 1, 2, 0, 1, 2])


# ----------------------------------------------------------------------------- class names


def test_no_names_anywhere_gives_indices():
    r = resolve_class_names(3)
    assert (r.names, r.label_map, r.source) == (["0", "1", "2"], None, "index")


@pytest.mark.parametrize("where", ["given", "data", "head"])
def test_only_one_source_is_used(where):
    r = resolve_class_names(2, **{where: ["cat", "dog"]})
    assert r.names == ["cat", "dog"] and r.label_map is None


def test_explicit_names_must_equal_the_data_names():
    assert resolve_class_names(2, given=["a", "b"], data=["a", "b"]).names == ["a", "b"]
    with pytest.raises(ValueError, match=r"disagrees with the class names recorded in the data "
                                         r".*Received: class_names=\['b', 'a'\]"):
        resolve_class_names(2, given=["b", "a"], data=["a", "b"])


def test_data_in_another_order_is_reordered_to_the_head():
    r = resolve_class_names(3, data=["b", "c", "a"], head=["a", "b", "c"])
    assert r.names == ["a", "b", "c"] and r.source == "head"
    assert r.label_map.tolist() == [1, 2, 0]
    assert r.relabel(np.array([0, 1, 2])).tolist() == [1, 2, 0]  # b, c, a as head outputs
    one_hot = np.eye(3)[[0, 1, 2]]
    np.testing.assert_array_equal(r.relabel(one_hot), np.eye(3)[[1, 2, 0]])


@pytest.mark.parametrize("source, arg", [("given", "class_names"), ("data", "data.class_names")])
def test_other_classes_than_the_head_raise(source, arg):
    with pytest.raises(ValueError, match=rf"trained on classes \['a', 'b'\] .*"
                                         rf"Received: {arg}=\['a', 'x'\]"):
        resolve_class_names(2, head=["a", "b"], **{source: ["a", "x"]})


@pytest.mark.parametrize("where, arg", [("given", "class_names"), ("data", "data.class_names"),
                                        ("head", "head.class_names")])
def test_a_list_of_the_wrong_length_always_raises(where, arg):
    with pytest.raises(ValueError, match=rf"3 outputs but 2 class names were found .*"
                                         rf"Received: {arg}=\['a', 'b'\]"):
        resolve_class_names(3, **{where: ["a", "b"]})


def test_a_repeated_name_raises():
    with pytest.raises(ValueError, match=r"names a class twice.*Received: data.class_names="):
        resolve_class_names(2, data=["a", "a"])


def test_verify_no_longer_skips_a_list_of_the_wrong_length(tmp_path):
    # Before, verify_tflite silently fell back to the next source; now it raises like the rest.
    pytest.importorskip("ai_edge_litert")
    from tltf.export.tflite import export_tflite
    from tltf.export.verify import verify_tflite

    model = _model(["a", "b", "c"])
    path = export_tflite(model, tmp_path / "m.tflite", metadata=False).path
    with pytest.raises(ValueError, match=r"3 outputs but 2 class names.*`class_names=`"):
        verify_tflite(path, model, (X, Y), class_names=["a", "b"])
    data = load_arrays(X.astype("uint8"), Y, class_names=["c", "a", "b"])
    report = verify_tflite(path, model, data)
    assert set(report.per_class_accuracy_change) <= {"a", "b", "c"}


def test_evaluate_reorders_the_data_to_the_head():
    model = _model(["a", "b", "c"])
    forward = evaluate(model, load_arrays(X.astype("uint8"), Y, class_names=["a", "b", "c"]))
    swapped = evaluate(model, load_arrays(X.astype("uint8"), (Y + 1) % 3,
                                          class_names=["c", "a", "b"]))
    assert forward.class_names == swapped.class_names == ["a", "b", "c"]
    assert forward.accuracy == swapped.accuracy
    np.testing.assert_array_equal(forward.confusion_matrix, swapped.confusion_matrix)


# ----------------------------------------------------------------------------- head


def _model(names=None):
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, ClassificationHead(3, class_names=names, name="head")(x))


def test_head_of_and_head_or_none():
    model = _model(["a", "b", "c"])
    assert head_of(model) is head_or_none(model) and head_of(model).class_names == ["a", "b", "c"]
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="head")])
    assert head_or_none(plain) is None and head_or_none("not a model") is None
    with pytest.raises(ValueError, match="has no ClassificationHead layer named 'head'"):
        head_of(plain)


# ----------------------------------------------------------------------------- batches


def _forms():
    ds = tf.data.Dataset.from_tensor_slices((X, Y)).batch(4)
    return {
        "image_dataset": load_arrays(X.astype("uint8"), Y),
        "tf_data": ds,
        "arrays": (X, Y),
        "generator": lambda: iter([(X[:4], Y[:4]), (X[4:], Y[4:])]),
    }


@pytest.mark.parametrize("form", ["image_dataset", "tf_data", "arrays", "generator"])
def test_every_form_gives_the_same_labelled_batches(form):
    b = batches(_forms()[form], batch_size=4)
    got = list(b)
    assert [len(y) for _, y in got] == [4, 2]
    assert all(x.dtype == np.float32 and x.ndim == 4 for x, _ in got)
    assert sorted(np.concatenate([y for _, y in got]).tolist()) == sorted(Y.tolist())


@pytest.mark.parametrize("form", ["image_dataset", "tf_data", "arrays"])
def test_every_form_fits(form):
    b = batches(_forms()[form], "train", training=True, batch_size=4, seed=0, num_classes=3,
                fit=True)
    assert isinstance(b.data, tf.data.Dataset)
    assert sum(int(y.shape[0]) for _, y in b.data) == 6


def test_a_generator_cannot_be_trained_on():
    with pytest.raises(TypeError, match=r"read only once.*from_generator.*Received: train="):
        batches(_forms()["generator"], "train", training=True, fit=True)


def test_images_without_labels_only_where_labels_are_optional():
    assert [len(x) for x, y in batches(X, labels=False, batch_size=4)] == [4, 2]
    images_only = tf.data.Dataset.from_tensor_slices(X).batch(4)
    assert all(y is None for _, y in batches(images_only, labels=False))
    with pytest.raises(TypeError, match=r"Images alone have no labels.*Received: data=ndarray"):
        batches(X)
    with pytest.raises(ValueError, match=r"yields images without labels.*Received: data"):
        batches(images_only)
    with pytest.raises(ValueError, match=r"yielded images without labels"):
        list(batches(lambda: iter([X])))


@pytest.mark.parametrize("fit", [False, True])
def test_the_same_errors_for_every_caller(fit):
    unbatched = tf.data.Dataset.from_tensor_slices((X, Y))
    with pytest.raises(ValueError, match=r"must be batched.*batch it with"):
        batches(unbatched, fit=fit)
    with pytest.raises(ValueError, match=r"yielded no images \(it is empty\)"):
        batches((X[:0], Y[:0]), fit=fit)
    with pytest.raises(ValueError, match=r"equal length.*Received: 6 images and 5 labels"):
        batches((X, Y[:5]), fit=fit)
    with pytest.raises(ValueError, match=r"has label 3, but the model has 3 classes"):
        batches((X, Y + 1), num_classes=3, fit=fit)
    with pytest.raises(TypeError, match=r"must be a tltf.ImageDataset or a batched"):
        batches([1, 2, 3], fit=fit)


def test_relabelling_checks_the_range_first():
    names = resolve_class_names(3, data=["b", "a", "c"], head=["a", "b", "c"])
    assert names.relabel(np.array([0, 1, 2])).tolist() == [1, 0, 2]
    for bad in (-1, 3):
        with pytest.raises(ValueError, match=rf"Labels must be in \[0, 2\].*label={bad}"):
            names.relabel(np.array([0, bad]))


def test_calibration_images_from_other_folders_do_not_decide_the_names():
    from tltf.export._conversion import _resolve_class_names

    class Calibration:  # e.g. one folder of unlabelled photos
        class_names = ["images"]

    model = _model(["x", "y", "z"])
    assert _resolve_class_names(None, model, Calibration(), None) == ["x", "y", "z"]
    Calibration.class_names = ["p", "q", "r"]
    assert _resolve_class_names(None, _model(), Calibration(), None) == ["p", "q", "r"]
