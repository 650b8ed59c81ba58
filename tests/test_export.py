"""export_tflite / export_saved_model: quantization modes, I/O types, metadata, atomic writes.

The model is a real `build_classifier` model on a tiny backbone (so each conversion takes
seconds), trained a few steps on images whose class is their dominant colour, so its outputs
are confident and far from uniform: agreement numbers then mean something.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from tltf.data import load_arrays
from tltf.export.metadata import read_metadata
from tltf.export.saved_model import export_saved_model, exportable_model
from tltf.export.selection import export_best
from tltf.export.tflite import ExportResult, export_tflite
from tltf.export.verify import verify_tflite
from tltf.models.classifier import build_classifier, compile_classifier
from tltf.models.precision import dtype_policy_scope
from tltf.training.freeze import unfreeze

CLASSES = ["red", "green", "blue"]
SIZE = 32


def _images(n, seed):
    """Random images whose label is the channel that was brightened."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.uniform(0, 160, (n, SIZE, SIZE, 3))
    images[np.arange(n), :, :, labels] += rng.uniform(40, 95, (n, 1, 1))
    return images.astype("float32"), labels.astype("int32")


def _tiny_backbone():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, -1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Conv2D(16, 1)(x)
    x = keras.layers.ReLU()(x)
    return keras.Model(inputs, x, name="tiny")


def _classifier(**kwargs):
    keras.utils.set_random_seed(0)
    model = build_classifier(_tiny_backbone(), 3, class_names=CLASSES, dropout=0.0, **kwargs)
    unfreeze(model, "all")  # BatchNorm stays in inference mode; the convolutions learn
    compile_classifier(model, learning_rate=1e-2)
    x, y = _images(192, seed=1)
    model.fit(x, y, batch_size=32, epochs=6, verbose=0)
    return model


@pytest.fixture(scope="module")
def model():
    return _classifier()


@pytest.fixture(scope="module")
def calibration():
    return _images(64, seed=2)


@pytest.fixture(scope="module")
def validation():
    return _images(64, seed=3)


def test_the_model_is_not_trivial(model, validation):
    x, y = validation
    probs = model.predict(x, verbose=0)
    assert np.mean(probs.argmax(-1) == y) > 0.8
    assert probs.max(-1).mean() > 0.6


def test_float32_matches_keras_on_random_inputs(model, tmp_path):
    result = export_tflite(model, tmp_path / "m.tflite")
    assert isinstance(result, ExportResult)
    assert (result.quantization, result.input_dtype, result.output_dtype) == (
        "float32", "float32", "float32")
    rng = np.random.default_rng(5)
    images = rng.uniform(0, 255, (40, SIZE, SIZE, 3)).astype("float32")
    report = verify_tflite(result.path, model, images)
    assert report.top1_agreement == 1.0
    assert report.max_abs_diff < 1e-4
    assert report.keras_accuracy is None  # no labels given
    assert report.file_size_bytes == result.size_bytes == result.path.stat().st_size
    assert report.median_latency_ms > 0
    umask = os.umask(0)
    os.umask(umask)
    assert result.path.stat().st_mode & 0o777 == 0o666 & ~umask  # not a private temp file


@pytest.mark.parametrize(
    "quantization, input_dtype, expected_io, min_agreement",
    [
        ("float16", "auto", ("float32", "float32"), 0.97),
        ("dynamic", "auto", ("float32", "float32"), 0.9),
        ("int8", "auto", ("float32", "float32"), 0.85),
        ("int8_io", "auto", ("uint8", "uint8"), 0.85),
        ("int8_io", "int8", ("int8", "int8"), 0.85),
        ("float32", "uint8", ("uint8", "float32"), 1.0),
        ("int8", "uint8", ("uint8", "float32"), 0.85),
    ],
)
def test_quantization_modes(model, calibration, validation, tmp_path, quantization, input_dtype,
                            expected_io, min_agreement):
    result = export_tflite(model, tmp_path / "m.tflite", quantization=quantization,
                           input_dtype=input_dtype, representative_data=calibration,
                           num_calibration_samples=32)
    assert (result.input_dtype, result.output_dtype) == expected_io
    interpreter = Interpreter(model_path=str(result.path))
    inp = interpreter.get_input_details()[0]
    assert tuple(inp["shape_signature"][1:]) == (SIZE, SIZE, 3)  # the model's size
    report = verify_tflite(result.path, model, validation)
    assert report.top1_agreement >= min_agreement
    assert abs(report.accuracy_drop) <= 1 - min_agreement + 1e-9
    tensor_types = {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    if quantization in ("int8", "int8_io"):
        # Full integer: convolution weights and activations are int8, not float.
        weights = [t for t in interpreter.get_tensor_details()
                   if len(t["shape"]) == 4 and t["shape"][0] in (8, 16) and t["shape"][-1] in (3, 8)]
        assert weights and all(np.dtype(t["dtype"]) == np.int8 for t in weights)
    if quantization == "float16":
        assert "float16" in tensor_types
    if quantization == "int8_io" and input_dtype == "auto":
        assert inp["quantization"] == (0.0, 0)  # raw bytes, not a rescaled input


def test_float32_uint8_input_takes_raw_bytes(model, tmp_path):
    result = export_tflite(model, tmp_path / "m.tflite", input_dtype="uint8")
    images = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3)).astype("uint8")
    interpreter = Interpreter(model_path=str(result.path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(inp["index"], images[:1])
    interpreter.invoke()
    expected = model.predict(images[:1].astype("float32"), verbose=0)
    np.testing.assert_allclose(interpreter.get_tensor(out["index"]), expected, atol=1e-5)


def test_calibration_sources_and_sample_bound(model, calibration, tmp_path):
    x, y = calibration
    seen = []

    def generator():
        for i in range(0, len(x), 8):
            seen.append(i)
            yield x[i:i + 8], y[i:i + 8]

    export_tflite(model, tmp_path / "g.tflite", quantization="int8",
                  representative_data=generator, num_calibration_samples=12)
    # 12 samples need two batches of 8; a first peek checks the source is not empty.
    assert len(seen) <= 3
    dataset = load_arrays(x.astype("uint8"), y, class_names=CLASSES)
    calls = []

    class Recorder:  # an ImageDataset that records how it is prepared
        class_names = dataset.class_names

        def prepare(self, **kwargs):
            calls.append(kwargs)
            return dataset.prepare(**kwargs)

    tf_data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    for name, data in (("imagedataset", Recorder()), ("tfdata", tf_data)):
        result = export_tflite(model, tmp_path / f"{name}.tflite", quantization="int8",
                               representative_data=data, num_calibration_samples=16)
        assert result.input_dtype == "float32"
    assert calls and all(c["training"] is False and not c.get("augment") for c in calls)


def test_metadata_read_back_and_labels_file(model, tmp_path):
    result = export_tflite(model, tmp_path / "m.tflite", quantization="dynamic")
    assert result.has_metadata
    meta = read_metadata(result.path.read_bytes())
    assert meta["labels"] == CLASSES
    assert meta["norm_mean"] == [0.0] and meta["norm_std"] == [1.0]
    assert meta["color_space"] == "RGB"
    assert meta["associated_files"] == ["labels.txt"]
    assert result.labels_path == tmp_path / "m.labels.txt"
    assert result.labels_path.read_text().splitlines() == CLASSES


def test_metadata_false_and_explicit_class_names(model, tmp_path):
    # The one class-name rule (docs/concepts.md): `class_names=` names the same classes as
    # the head (before, export alone let it rename them); a model without names takes them.
    result = export_tflite(model, tmp_path / "m.tflite", metadata=False,
                           class_names=list(reversed(CLASSES)))
    assert not result.has_metadata
    assert read_metadata(result.path.read_bytes()) is None
    assert result.labels_path.read_text().splitlines() == CLASSES
    with pytest.raises(ValueError, match=r"trained on classes .* Received: class_names="):
        export_tflite(model, tmp_path / "n.tflite", metadata=False, class_names=["a", "b", "c"])
    plain = keras.Model(model.inputs, model.outputs, name="plain")
    plain = keras.Sequential([keras.Input(model.input_shape[1:]), plain])  # no layer "head"
    result = export_tflite(plain, tmp_path / "p.tflite", metadata=False,
                           class_names=["a", "b", "c"])
    assert result.labels_path.read_text().splitlines() == ["a", "b", "c"]


@pytest.mark.parametrize("quantization", ["float32", "int8_io"])
def test_mediapipe_image_classifier_returns_class_names(model, calibration, validation, tmp_path,
                                                        quantization):
    mp = pytest.importorskip("mediapipe")
    from mediapipe.tasks.python.core import base_options
    from mediapipe.tasks.python.vision import image_classifier

    result = export_tflite(model, tmp_path / "m.tflite", quantization=quantization,
                           representative_data=calibration, num_calibration_samples=32)
    options = image_classifier.ImageClassifierOptions(
        base_options=base_options.BaseOptions(model_asset_path=str(result.path)), max_results=3)
    x, _ = validation
    images = np.clip(np.round(x[:8]), 0, 255).astype("uint8")
    expected = model.predict(images.astype("float32"), verbose=0)
    agree = 0
    with image_classifier.ImageClassifier.create_from_options(options) as classifier:
        for image, probs in zip(images, expected, strict=True):
            found = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
            categories = found.classifications[0].categories
            assert sorted(c.category_name for c in categories) == sorted(CLASSES)
            agree += categories[0].category_name == CLASSES[int(probs.argmax())]
            if quantization == "float32":
                assert abs(categories[0].score - probs.max()) < 1e-4
    assert agree >= (8 if quantization == "float32" else 7)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_model_exports_float32_graph(tmp_path, validation, policy):
    keras.utils.set_random_seed(0)
    with dtype_policy_scope(policy):
        mixed = build_classifier(_tiny_backbone(), 3, class_names=CLASSES)
    compile_classifier(mixed)
    x, y = validation
    mixed.fit(x, y, epochs=1, verbose=0)
    assert mixed.get_layer("backbone").compute_dtype != "float32"
    result = export_tflite(mixed, tmp_path / "m.tflite")
    interpreter = Interpreter(model_path=str(result.path))
    types = {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    assert types <= {"float32", "int32"}, types
    clean = exportable_model(mixed)
    assert clean.get_layer("backbone").compute_dtype == "float32"
    assert mixed.get_layer("backbone").compute_dtype != "float32"  # the caller's model is intact
    report = verify_tflite(result.path, clean, x)
    assert report.top1_agreement == 1.0 and report.max_abs_diff < 1e-4
    # and the float32 graph agrees with the mixed-precision model up to its own rounding
    assert verify_tflite(result.path, mixed, x).top1_agreement >= 0.9


def test_augmentation_never_reaches_the_file(tmp_path, validation):
    model = build_classifier(_tiny_backbone(), 3, class_names=CLASSES, augment="light", seed=0)
    result = export_tflite(model, tmp_path / "m.tflite")
    names = [t["name"] for t in Interpreter(model_path=str(result.path)).get_tensor_details()]
    assert not [n for n in names if "augmentation" in n or "random" in n.lower()]
    x, _ = validation
    assert verify_tflite(result.path, model, x).max_abs_diff < 1e-4


class _Determinant(keras.layers.Layer):
    """Uses an op TFLite has no built-in kernel for."""

    def call(self, x):
        square = tf.reshape(x[:, :2, :2, 0], (-1, 2, 2))
        return x + tf.reshape(tf.linalg.det(square), (-1, 1, 1, 1)) * 0.0


def _select_ops_model():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = _Determinant()(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def test_tf_op_error_names_the_op_and_leaves_existing_file(model, tmp_path):
    path = tmp_path / "m.tflite"
    export_tflite(model, path)
    before = path.read_bytes()
    files_before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"MatrixDeterminant.*allow_select_tf_ops=True"):
        export_tflite(_select_ops_model(), path, metadata=False, class_names=CLASSES,
                      overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before  # no temp file left


def test_allow_select_tf_ops_converts(tmp_path):
    result = export_tflite(_select_ops_model(), tmp_path / "m.tflite", metadata=False,
                           class_names=CLASSES, allow_select_tf_ops=True)
    assert result.size_bytes > 0


def test_failure_after_conversion_leaves_existing_file(model, tmp_path, monkeypatch):
    path = tmp_path / "m.tflite"
    export_tflite(model, path)
    before = path.read_bytes()
    import tltf.export._conversion

    def broken(*args, **kwargs):
        return b"not a flatbuffer"

    monkeypatch.setattr(tltf.export._conversion, "_convert", broken)
    with pytest.raises((RuntimeError, ValueError)):  # LiteRT refuses to load the file
        export_tflite(model, path, metadata=False, overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.labels.txt", "m.tflite"]


def test_export_best_keeps_smallest_within_budget(model, calibration, validation, tmp_path):
    result = export_best(model, tmp_path / "best.tflite", validation,
                         quantizations=["float32", "dynamic", "int8"],
                         representative_data=calibration, num_calibration_samples=32,
                         max_accuracy_drop=0.05)
    sizes = {r.name: r.file_size_bytes for r in result.comparison}
    within = [r.name for r in result.comparison if r.accuracy_drop <= 0.05]
    assert "float32" in within
    assert result.quantization == min(within, key=sizes.get)  # ties go to the first listed
    assert result.path.stat().st_size == sizes[result.quantization]
    payload = json.loads(result.comparison_paths[0].read_text())
    assert payload["chosen"] == result.quantization
    assert {v["name"] for v in payload["variants"]} == {"float32", "dynamic", "int8"}
    assert "(kept)" in result.comparison_paths[1].read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.comparison.json", "best.comparison.md", "best.labels.txt", "best.tflite"]


def test_verify_true_refuses_a_variant_over_budget(model, validation, tmp_path, monkeypatch):
    import tltf.export.selection

    path = tmp_path / "m.tflite"
    path.write_bytes(b"previous good file")
    real = tltf.export.selection.verify_tflite

    def pessimistic(*args, **kwargs):
        report = real(*args, **kwargs)
        report.tflite_accuracy = report.keras_accuracy - 0.2
        report.accuracy_drop = 0.2
        return report

    monkeypatch.setattr(tltf.export.selection, "verify_tflite", pessimistic)
    with pytest.raises(ValueError, match="No variant stays within max_accuracy_drop"):
        export_tflite(model, path, verify=True, validation_data=validation,
                      overwrite=True)
    assert path.read_bytes() == b"previous good file"
    assert json.loads(path.with_suffix(".comparison.json").read_text())["chosen"] is None


def test_export_saved_model_serving_signature(model, validation, tmp_path):
    x, _ = validation
    for dtype in ("float32", "uint8"):
        out = export_saved_model(model, tmp_path / "serving", input_dtype=dtype, overwrite=True)
        serve = tf.saved_model.load(str(out)).signatures["serving_default"]
        images = np.clip(np.round(x[:4]), 0, 255).astype(dtype)
        got = serve(images=tf.constant(images))["probabilities"].numpy()
        np.testing.assert_allclose(got, model.predict(images.astype("float32"), verbose=0),
                                   atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "serving").stat().st_mode & 0o777 == 0o777 & ~umask


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"quantization": "int4"}, "`quantization` must be one of"),
        ({"quantization": "int8"}, "pass `representative_data=`"),
        ({"input_dtype": "float64"}, "`input_dtype` must be one of"),
        ({"input_dtype": "int8"}, "int8 input tensor only exists"),
        ({"quantization": "int8_io", "input_dtype": "float32",
          "representative_data": np.zeros((1, SIZE, SIZE, 3))}, "integer input and output"),
        ({"num_calibration_samples": 0}, "`num_calibration_samples` must be a positive"),
        ({"metadata": "yes"}, "`metadata` must be True, False or 'auto'"),
        ({"class_names": ["a", "b"]}, "3 outputs but 2 class names"),
        ({"verify": True}, "pass `validation_data=`"),
        ({"quantization": "int8", "representative_data": np.zeros((0, SIZE, SIZE, 3))},
         "`representative_data` yielded no images"),
    ],
)
def test_export_errors(model, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export_tflite(model, tmp_path / "m.tflite", **kwargs)
    assert not (tmp_path / "m.tflite").exists()


def test_path_and_size_errors(model, tmp_path):
    with pytest.raises(ValueError, match=r"`path` must end in '.tflite'"):
        export_tflite(model, tmp_path / "m.bin")
    inputs = keras.Input((None, None, 3))
    flexible = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(inputs)))
    with pytest.raises(ValueError, match="needs a fixed input size"):
        export_tflite(flexible, tmp_path / "m.tflite", metadata=False, class_names=CLASSES)
    with pytest.raises(ValueError, match="`input_dtype` must be 'float32' or 'uint8'"):
        export_saved_model(model, tmp_path / "s", input_dtype="int8")
    with pytest.raises(TypeError, match="must be a keras.Model"):
        exportable_model("model.keras")


def test_export_best_errors(model, validation, tmp_path):
    with pytest.raises(ValueError, match="max_accuracy_drop` is a fraction"):
        export_best(model, tmp_path / "m.tflite", validation, max_accuracy_drop=5)
    with pytest.raises(ValueError, match="`quantizations` is empty"):
        export_best(model, tmp_path / "m.tflite", validation, quantizations=[])
    x, _ = validation
    with pytest.raises(ValueError, match="has no labels"):
        export_best(model, tmp_path / "m.tflite", x, quantizations=["float32"])


def test_verify_report_contents_and_errors(model, validation, tmp_path):
    x, y = validation
    path = export_tflite(model, tmp_path / "m.tflite").path
    report = verify_tflite(path, model, (x, y), name="float32", num_threads=1)
    assert set(report.per_class_accuracy_change) <= set(CLASSES)
    assert report.keras_accuracy == pytest.approx(
        np.mean(model.predict(x, verbose=0).argmax(-1) == y))
    assert report.accuracy_drop == pytest.approx(0.0, abs=1e-9)
    assert "float32" in str(report) and "| float32 |" in report.to_markdown()
    assert json.loads(json.dumps(report.to_dict()))["num_samples"] == len(x)
    assert verify_tflite(path, model, (x, y), max_samples=5).num_samples == 5
    with pytest.raises(FileNotFoundError, match="No .tflite file"):
        verify_tflite(tmp_path / "missing.tflite", model, x)
    with pytest.raises(ValueError, match="load the data at the model's image size"):
        verify_tflite(path, model, np.zeros((2, 16, 16, 3), "float32"))
    with pytest.raises(ValueError, match="yielded no images"):
        verify_tflite(path, model, np.zeros((0, SIZE, SIZE, 3), "float32"))
    with pytest.raises(TypeError, match="`data` must be a tltf.ImageDataset"):
        verify_tflite(path, model, 42)
    with pytest.raises(ValueError, match="`max_samples` must be a positive"):
        verify_tflite(path, model, x, max_samples=0)


def test_metadata_without_mediapipe(model, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mediapipe.tasks.metadata", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install tltf\[mediapipe\]"):
        export_tflite(model, tmp_path / "m.tflite", metadata=True)
    assert not (tmp_path / "m.tflite").exists()
    with pytest.warns(UserWarning, match="without TFLite metadata"):
        result = export_tflite(model, tmp_path / "m.tflite")
    assert not result.has_metadata
    assert result.labels_path.read_text().splitlines() == CLASSES


def test_export_refuses_to_overwrite_a_file_or_another_models_labels(model, tmp_path):
    user_labels = tmp_path / "labels.txt"
    user_labels.write_text("mine\n")
    first = export_tflite(model, tmp_path / "a.tflite", metadata=False)
    # A model without head names takes `class_names=` (a tltf head's names cannot be renamed
    # by it any more: one class-name rule, docs/concepts.md).
    plain = keras.Sequential([keras.Input(model.input_shape[1:]),
                              keras.Model(model.inputs, model.outputs)])
    other = export_tflite(plain, tmp_path / "b.tflite", metadata=False, class_names=["x", "y", "z"])
    assert first.labels_path == tmp_path / "a.labels.txt"
    assert first.labels_path.read_text().split() == CLASSES  # b's export left a's labels alone
    assert other.labels_path.read_text().split() == ["x", "y", "z"]
    assert user_labels.read_text() == "mine\n"  # a file tltf did not write is never touched
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(FileExistsError, match=r"a\.tflite already exists.*overwrite=True"):
        export_tflite(model, tmp_path / "a.tflite", metadata=False)
    stranger = tmp_path / "c.labels.txt"
    stranger.write_text("someone else's\n")
    with pytest.raises(FileExistsError, match=r"c\.labels\.txt already exists"):
        export_tflite(model, tmp_path / "c.tflite", metadata=False)
    assert not (tmp_path / "c.tflite").exists() and stranger.read_text() == "someone else's\n"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "c.labels.txt"} == before
    again = export_tflite(plain, tmp_path / "a.tflite", metadata=False, overwrite=True,
                          class_names=["p", "q", "r"])
    assert again.labels_path.read_text().split() == ["p", "q", "r"]


def test_export_best_with_nothing_to_try_says_why(model, validation, tmp_path):
    with pytest.raises(ValueError, match=r"Every mode asked for.*int8.*representative_data"):
        export_best(model, tmp_path / "m.tflite", validation, quantizations=["int8"])
    with pytest.raises(ValueError, match=r"`quantizations` is empty: name at least one of"):
        export_best(model, tmp_path / "m.tflite", validation, quantizations=[])
    assert list(tmp_path.iterdir()) == []


def test_export_saved_model_never_replaces_what_it_did_not_write(model, tmp_path):
    mine = tmp_path / "work"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    with pytest.raises(FileExistsError, match=r"not a SavedModel, so it is never replaced"):
        export_saved_model(model, mine, overwrite=True)
    assert os.listdir(mine) == ["thesis.tex"]
    out = export_saved_model(model, tmp_path / "serving")
    with pytest.raises(FileExistsError, match=r"serving already exists \(a SavedModel\).*overwrite=True"):
        export_saved_model(model, out)
    assert export_saved_model(model, out, overwrite=True) == out
