"""evaluate / calibrate / predict / report: values checked against hand-computed ones."""

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from tltf.evaluation.calibration import TemperatureScaling, calibrate
from tltf.evaluation.metrics import evaluate, expected_calibration_error
from tltf.evaluation.prediction import predict
from tltf.models.heads import ClassificationHead

# Six examples, three classes; the "images" are log-probabilities (1x1x3 pixels) and the
# model below turns them back into these probabilities, so every metric is known by hand.
PROBS = np.array([
    [0.70, 0.20, 0.10],  # true a, pred a (0.7)
    [0.10, 0.60, 0.30],  # true a, pred b (0.6), a not in top-2
    [0.10, 0.80, 0.10],  # true b, pred b (0.8)
    [0.50, 0.40, 0.10],  # true b, pred a (0.5)
    [0.10, 0.10, 0.80],  # true c, pred c (0.8)
    [0.04, 0.90, 0.06],  # true c, pred b (0.9)
], "float32")
LABELS = np.array([0, 0, 1, 1, 2, 2])
NAMES = ["a", "b", "c"]


def _passthrough(head_names=None, output="probabilities", multi_label=False):
    """A real tltf head whose Dense is the identity: softmax(log p) = p."""
    inputs = keras.Input((1, 1, 3))
    x = keras.layers.Flatten()(inputs)
    head = ClassificationHead(3, dropout=0.0, output=output, multi_label=multi_label,
                              class_names=head_names, name="head")
    model = keras.Model(inputs, head(x))
    head.predictions.set_weights([np.eye(3, dtype="float32"), np.zeros(3, "float32")])
    return model


def _images(probs):
    return np.log(probs).reshape(-1, 1, 1, 3)


def _data():
    return _images(PROBS), LABELS


def test_values_match_hand_computation():
    report = evaluate(_passthrough(), _data(), class_names=NAMES, top_k=2)
    assert report.class_names == NAMES
    assert report.num_samples == 6
    assert report.accuracy == pytest.approx(3 / 6)
    assert report.top_k_accuracy == {1: pytest.approx(0.5), 2: pytest.approx(5 / 6)}
    np.testing.assert_array_equal(report.confusion_matrix, [[1, 1, 0], [1, 1, 0], [0, 1, 1]])
    expected = {"a": (1 / 2, 1 / 2, 1 / 2), "b": (1 / 3, 1 / 2, 0.4), "c": (1.0, 1 / 2, 2 / 3)}
    for name, (p, r, f) in expected.items():
        got = report.per_class[name]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p, r, f))
        assert got["support"] == 2
    macro = {"precision": 11 / 18, "recall": 0.5, "f1": (0.5 + 0.4 + 2 / 3) / 3}
    assert report.macro_avg == pytest.approx(macro)
    assert report.weighted_avg == pytest.approx(macro)  # equal supports
    # ECE: |1-.7| + |0-.6| + 2*|1-.8| (same bin) + |0-.5| + |0-.9|, over 6 examples.
    assert report.ece == pytest.approx(2.7 / 6, abs=1e-6)
    assert [(m.index, m.true_label, m.predicted_label) for m in report.mistakes] == [
        (5, "c", "b"), (1, "a", "b"), (3, "b", "a")]
    assert report.mistakes[0].confidence == pytest.approx(0.9)


def test_logits_head_gives_same_metrics():
    inputs = keras.Input((1, 1, 3))
    x = keras.layers.Flatten()(inputs)
    head = ClassificationHead(3, dropout=0.0, output="logits", name="head")
    model = keras.Model(inputs, head(x))
    head.predictions.set_weights([np.eye(3, dtype="float32"), np.zeros(3, "float32")])
    report = evaluate(model, _data(), class_names=NAMES)
    assert report.accuracy == pytest.approx(0.5)
    assert report.ece == pytest.approx(0.45, abs=1e-5)


def test_class_order_of_data_is_mapped_to_model_order():
    # The model's columns are (b, a, c); the data labels follow (a, b, c). One rule for all
    # of tltf (docs/concepts.md, "Class names"): the labels are re-ordered to the head's order.
    model = _passthrough(head_names=["b", "a", "c"])
    swapped = _images(PROBS[:, [1, 0, 2]])
    report = evaluate(model, (swapped, LABELS), class_names=NAMES)
    assert report.class_names == ["b", "a", "c"]
    assert report.accuracy == pytest.approx(0.5)
    # The data-order matrix [[1, 1, 0], [1, 1, 0], [0, 1, 1]], rows and columns as (b, a, c).
    np.testing.assert_array_equal(report.confusion_matrix, [[1, 1, 0], [1, 1, 0], [1, 0, 1]])


def test_tf_dataset_with_one_hot_labels():
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(
        (_images(PROBS), np.eye(3, dtype="float32")[LABELS])).batch(4)
    report = evaluate(_passthrough(), ds, class_names=NAMES)
    assert report.accuracy == pytest.approx(0.5)
    assert report.mistakes[0].file is None


def test_image_dataset_gives_files_and_names(tmp_path):
    data = pytest.importorskip("tltf.data.folder")
    for c, name in enumerate(("a", "b")):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(np.full((12, 12, 3), 60 + 100 * c + i, "uint8")).save(
                tmp_path / name / f"{i}.png")
    ds = data.load_image_folder(tmp_path, image_size=8)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    report = evaluate(model, ds)
    assert report.class_names == ["a", "b"]
    assert report.num_samples == 6
    for m in report.mistakes:
        assert Path(m.file).parent.name == m.true_label


def test_expected_calibration_error_known_value():
    assert expected_calibration_error([0, 1], [[0.9, 0.1], [0.8, 0.2]]) == pytest.approx(0.45)
    assert expected_calibration_error([0, 0], [[1.0, 0.0], [1.0, 0.0]]) == 0.0


def test_calibration_softens_overconfident_model_and_is_carried(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    # 60% right but always 99% sure: a textbook over-confident model.
    pred = np.where(rng.random(200) < 0.6, labels, (labels + 1) % 3)
    probs = np.full((200, 3), 0.005, "float32")
    probs[np.arange(200), pred] = 0.99
    data = (_images(probs), labels)
    model = _passthrough()
    result = calibrate(model, data)
    assert result.temperature > 1
    assert result.ece_after < result.ece_before / 3
    assert result.nll_after < result.nll_before
    report = evaluate(result.model, data)
    assert report.accuracy == pytest.approx(evaluate(model, data).accuracy)
    assert report.calibration["temperature"] == pytest.approx(result.temperature, rel=1e-5)
    assert report.calibration["ece_before"] == pytest.approx(result.ece_before, abs=1e-4)
    assert report.calibration["ece_after"] == pytest.approx(result.ece_after, abs=1e-4)
    # The temperature is saved with the model and predictions use it.
    path = tmp_path / "calibrated.keras"
    result.model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=False)
    top = predict(loaded, data[0][:1], class_names=NAMES)[0]
    assert top.score == pytest.approx(evaluate(result.model, (data[0][:1], labels[:1])).y_prob.max(),
                                      rel=1e-5)
    assert top.score < 0.99


def test_calibrate_rejects_calibrated_model():
    result = calibrate(_passthrough(), _data())
    with pytest.raises(ValueError, match="already ends in a TemperatureScaling"):
        calibrate(result.model, _data())


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature"):
        TemperatureScaling(0.0)


def test_predict_arrays_top_k_and_names():
    out = predict(_passthrough(head_names=NAMES), _images(PROBS), top_k=2)
    assert [p.labels for p in out[:2]] == [["a", "b"], ["b", "c"]]
    assert out[5].score == pytest.approx(0.9)
    assert out[0].file is None


def test_predict_files_and_folder(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)  # mean pixel value per channel
    model = keras.Model(inputs, keras.layers.Softmax()(x))
    (tmp_path / "imgs").mkdir()
    red = np.zeros((20, 30, 3), "uint8")
    red[..., 0] = 5
    Image.fromarray(red).save(tmp_path / "imgs" / "red.jpg")
    blue = np.zeros((10, 10, 3), "uint8")
    blue[..., 2] = 5
    Image.fromarray(blue).save(tmp_path / "imgs" / "blue.png")
    out = predict(model, tmp_path / "imgs", class_names=["r", "g", "b"])
    assert [(Path(p.file).name, p.label) for p in out] == [("blue.png", "b"), ("red.jpg", "r")]
    single = predict(model, [str(tmp_path / "imgs" / "red.jpg")], class_names="rgb")
    assert single[0].label == "r"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"top_k": 0}, ValueError, "top_k"),
        ({"class_names": ["x", "y", "z"], "data": "images"}, ValueError, "disagrees|classes"),
        ({"data": [1, 2, 3]}, TypeError, "data"),
    ],
)
def test_evaluate_argument_errors(kwargs, error, match):
    kwargs = dict(kwargs)
    data = kwargs.pop("data", None)
    data = _data() if data in (None, "images") else data
    model = _passthrough(head_names=NAMES)
    with pytest.raises(error, match=match):
        evaluate(model, data, **kwargs)


def test_evaluate_errors_on_bad_labels_empty_data_and_multilabel():
    with pytest.raises(ValueError, match="Labels must be in"):
        evaluate(_passthrough(), (_images(PROBS), LABELS + 1))
    with pytest.raises(ValueError, match="empty"):
        evaluate(_passthrough(), (np.zeros((0, 1, 1, 3), "float32"), np.zeros(0, int)))
    with pytest.raises(ValueError, match="multi-label"):
        evaluate(_passthrough(multi_label=True), _data())
    with pytest.raises(ValueError, match="class names"):
        evaluate(_passthrough(), _data(), class_names=["a", "b"])


def test_predict_errors(tmp_path):
    model = _passthrough()
    with pytest.raises(ValueError, match="top_k"):
        predict(model, _images(PROBS), top_k=4)
    with pytest.raises(FileNotFoundError, match="not found"):
        predict(model, tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="shape"):
        predict(model, np.zeros((2, 3)))


def test_expected_calibration_error_shape_error():
    with pytest.raises(ValueError, match="y_prob"):
        expected_calibration_error([0, 1, 1], [[0.5, 0.5]])


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def test_save_writes_json_pngs_and_self_contained_html(tmp_path):
    history = {"loss": [1.0, 0.7, 0.5, 0.4], "val_loss": [1.1, 0.8, 0.6, 0.55],
               "accuracy": [0.5, 0.6, 0.7, 0.8], "val_accuracy": [0.4, 0.5, 0.65, 0.7],
               "phase": ["head", "head", "finetune", "finetune"]}
    report = evaluate(_passthrough(), _data(), class_names=NAMES, history=history)
    page = report.save(tmp_path / "out")
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"report.json", "report.html", "confusion_matrix.png", "training_curves.png",
            "mistakes.png"} <= names
    for png in (tmp_path / "out").glob("*.png"):
        with Image.open(png) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["accuracy"] == pytest.approx(0.5)
    assert saved["confusion_matrix"] == [[1, 1, 0], [1, 1, 0], [0, 1, 1]]
    assert saved["history"]["phase"][-1] == "finetune"
    text = page.read_text()
    parser = _Refs()
    parser.feed(text)
    assert len(parser.refs) == 3
    for ref in parser.refs:  # embedded, or a relative file that exists; never the network
        assert ref.startswith("data:image/png;base64,") or (page.parent / ref).is_file()
    assert not re.search(r"(src|href)=\"(https?:)?//", text)


def test_history_from_keras_fit_and_records(tmp_path):
    model = _passthrough()
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    fit = model.fit(*_data(), epochs=2, verbose=0)
    report = evaluate(model, _data(), history=fit)
    assert len(report.history["loss"]) == 2
    records = [{"loss": 1.0, "phase": "head"}, {"loss": 0.5, "phase": "finetune"}]
    report = evaluate(model, _data(), history=records)
    assert report.history == {"loss": [1.0, 0.5], "phase": ["head", "finetune"]}
    report.save(tmp_path)
    assert (tmp_path / "training_curves.png").is_file()
    with pytest.raises(TypeError, match="history"):
        evaluate(model, _data(), history=3)


@pytest.mark.slow
def test_calibrated_model_exports_with_its_temperature(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from tltf import build_classifier, export_tflite

    model = build_classifier("mobilenet_v2_035", 2, image_size=32, weights=None,
                             class_names=["a", "b"])
    rng = np.random.default_rng(0)
    dense = model.get_layer("head").predictions
    dense.set_weights([rng.normal(0, 1, dense.kernel.shape).astype("float32"),
                       np.array([1.5, -1.0], "float32")])
    images = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    result = calibrate(model, (images, np.arange(16) % 2))
    # Force a temperature far from 1 so the check below cannot pass by accident.
    result.model.get_layer("temperature").temperature.assign(5.0)
    export_tflite(result.model, tmp_path / "m.tflite")
    interpreter = Interpreter(model_path=str(tmp_path / "m.tflite"))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(inp["index"], images[:1].astype(inp["dtype"]))
    interpreter.invoke()
    got = interpreter.get_tensor(out["index"])
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(result.model(images[:1])),
                               atol=1e-5)
    assert not np.allclose(got, keras.ops.convert_to_numpy(model(images[:1])), atol=1e-4)
