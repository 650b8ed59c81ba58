"""Five classes of real flower photos, end to end through `tltf train`: softmax, label order,
per-class report, the exported labels and metadata, and a `.tflite` that agrees with Keras."""

import json

import numpy as np
import pytest
from PIL import Image

from tltf.cli import main

CLASSES = ["daisy", "dandelion", "rose", "sunflower", "tulip"]
SIZE = 96


@pytest.fixture(scope="module")
def flowers_dir(shared_dir):
    path = shared_dir / "datasets" / "flowers"
    if not (path / "train").is_dir():
        pytest.skip(f"needs {path} (five classes of flower photos); absent here")
    return path


@pytest.fixture(scope="module")
def flowers_run(flowers_dir, tmp_path_factory, imagenet_weights):
    out = tmp_path_factory.mktemp("flowers") / "run"
    code = main(["train", "--data", str(flowers_dir), "--image-size", str(SIZE), "--out", str(out),
                 "--head-epochs", "3", "--finetune-epochs", "1", "--seed", "0",
                 "--tflite", "float32"])
    assert code == 0
    return out


@pytest.mark.shared
@pytest.mark.slow
def test_five_flower_classes_train_report_and_export_in_folder_order(flowers_run, flowers_dir):
    import tltf
    from tltf.export.metadata import metadata_available, read_metadata
    from tltf.models.parts import head_of

    run = json.loads((flowers_run / "run.json").read_text())
    assert run["state"] == "finished"
    assert run["identity"]["class_names"] == CLASSES  # sorted folder names, the label order everywhere
    report = json.loads((flowers_run / "report" / "report.json").read_text())
    assert report["class_names"] == CLASSES
    assert report["num_samples"] == 250  # the validation/ split folder, 50 per class
    assert {name: row["support"] for name, row in report["per_class"].items()} == \
        dict.fromkeys(CLASSES, 50)
    assert report["accuracy"] > 0.6, report["accuracy"]  # chance is 0.2; 96 px, 4 epochs
    assert np.asarray(report["confusion_matrix"]).shape == (5, 5)

    model = tltf.load_model(flowers_run / "model.keras")
    head = head_of(model)
    assert head.class_names == CLASSES and head.activation == "softmax"
    assert (flowers_run / "model.labels.txt").read_text().split() == CLASSES
    if metadata_available():
        labels = read_metadata((flowers_run / "model.tflite").read_bytes())["labels"]
        assert labels == CLASSES

    # Each class's own photo comes back with its name, and the phone file agrees with Keras.
    files = [sorted((flowers_dir / "validation" / name).glob("*.jpg"))[0] for name in CLASSES]
    predictions = tltf.predict(model, [str(f) for f in files], top_k=5)
    assert all(sorted(p.labels) == CLASSES for p in predictions)
    probabilities = model.predict(np.stack([np.asarray(Image.open(f).convert("RGB").resize(
        (SIZE, SIZE), Image.BICUBIC)) for f in files]).astype("float32"), verbose=0)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)  # softmax over 5 classes
    validation = tltf.load_image_folder(flowers_dir / "validation", image_size=SIZE,
                                        class_names=CLASSES, verbose=0)
    check = tltf.verify_tflite(flowers_run / "model.tflite", model, validation)
    assert check.top1_agreement == 1.0
    assert check.keras_accuracy == pytest.approx(report["accuracy"], abs=1e-6)
